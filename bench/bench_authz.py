"""Throughput through two sidecars (client sidecar -> server sidecar -> app) with no AuthorizationPolicy and
with a DENY policy of 10 and 100 rules (issue 11), median of interleaved rounds.

No rule matches the measured request, so the RBAC filter evaluates every rule on every request (its worst
case); a request that one rule matches is checked to be denied (403) before each round, so the round runs on
the new listeners. The app is a static Envoy answering 200 (a Python app would be the bottleneck); the load
is ``wrk`` (Debian package ``wrk``) through the client sidecar's outbound HTTP proxy listener with keep-alive
connections. Real Envoys and the real control plane from tests/harness.py (127.10.x.y); everything started
is stopped at the end.

    .venv/bin/python bench/bench_authz.py              # --rules 0,10,100 --rounds 5 --seconds 5 -c 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx

from harness import HTTP_PROXY_PORT, Mesh, alloc_ip, free_port
from mizzen.agent.binary import envoy_binary
from mizzen.registry.model import Workload

NS = "foo"
SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
"""


def deny_policy(rules: int) -> str:
    body = "\n".join(f'  - to: [{{operation: {{paths: ["/deny{i}/*"], methods: [GET]}}}}]\n'
                     f'    when: [{{key: "request.headers[x-user]", values: ["u{i}"]}}]'
                     for i in range(rules))
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: bench, namespace: {NS}}}\nspec:\n  action: DENY\n  rules:\n{body}\n")


def app_config(ip: str, port: int, admin_port: int) -> dict[str, object]:
    """A static Envoy answering 200 to everything: the fastest app there is to stand behind a sidecar."""
    route = {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "app", "route_config": route,
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"admin": {"address": {"socket_address": {"address": ip, "port_value": admin_port}}},
            "static_resources": {"listeners": [{
                "address": {"socket_address": {"address": ip, "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}]}}


def wrk(url: str, host: str, seconds: int, connections: int) -> tuple[float, str]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)   # the latency distribution's line
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} requests were not answered 200:\n{out}")
    return rps, p99.group(1) if p99 else "?"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", default="0,10,100")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("-c", "--connections", type=int, default=8)
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    counts = [int(x) for x in a.rules.split(",")]
    rps: dict[int, list[float]] = {n: [] for n in counts}
    p99s: dict[int, list[str]] = {n: [] for n in counts}
    app_ip, app_port = alloc_ip(), 9080
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as tmp:
        cfg = Path(tmp) / "app.json"
        cfg.write_text(json.dumps(app_config(app_ip, app_port, free_port(app_ip))))
        app = subprocess.Popen([str(envoy_binary()), "-c", str(cfg), "--disable-hot-restart", "-l", "error",
                                "--concurrency", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with Mesh() as mesh:
                await mesh.apply_yaml(SERVICE)
                pod_ip = alloc_ip()
                await mesh.sidecar(NS, "server-1", {"app": "server"}, ip=pod_ip, app_host=app_ip)
                mesh.cp.register_workload(Workload(name="server-1", namespace=NS, address=pod_ip,
                                                   labels={"app": "server"}))
                client = await mesh.sidecar(NS, "client-1", {"app": "client"})
                await mesh.wait_synced(timeout=30)
                proxy_url = f"http://{client.spec.ip}:{HTTP_PROXY_PORT}"

                async def status(path: str, user: str) -> int:
                    async with httpx.AsyncClient(proxy=proxy_url, trust_env=False, timeout=5) as c:
                        r = await c.get(f"http://server.{NS}:9080{path}", headers={"x-user": user})
                        return r.status_code

                for rnd in range(a.rounds):
                    for n in counts:
                        if n:
                            await mesh.apply_yaml(deny_policy(n))
                        else:
                            await mesh.delete_yaml(deny_policy(1))
                        await mesh.wait_synced(timeout=30)
                        want = 403 if n else 200
                        for _ in range(100):      # until the drained listeners are gone
                            if await status("/deny0/x", "u0") == want and await status("/bench", "u0") == 200:
                                break
                            await asyncio.sleep(0.2)
                        else:
                            raise SystemExit(f"policy with {n} rules never took effect")
                        await asyncio.sleep(1.5)   # drain time of the old listener
                        r, p99 = await asyncio.to_thread(wrk, f"{proxy_url}/bench", f"server.{NS}:9080",
                                                         a.seconds, a.connections)
                        rps[n].append(r)
                        p99s[n].append(p99)
                        print(f"round {rnd + 1}: {n:>3} rules: {r:8.0f} req/s, p99 {p99}", flush=True)
        finally:
            app.kill()
            app.wait(10)
    base = statistics.median(rps[counts[0]])
    print(f"\nthroughput through two sidecars, {a.connections} connections, median of {a.rounds} interleaved "
          f"rounds of {a.seconds} s:")
    for n in counts:
        med = statistics.median(rps[n])
        print(f"  {n:>3} DENY rules (none matching): {med:8.0f} req/s ({(med / base - 1) * 100:+.1f}% vs "
              f"{counts[0]} rules), p99 per round {', '.join(p99s[n])}")


if __name__ == "__main__":
    asyncio.run(main())
