"""Scrape latency of the agent's metrics endpoints with a real Envoy: median and p90 of ``GET :15090/
stats/prometheus`` (Envoy's listener -> the agent's stats socket -> Envoy's admin, Istio's names) and of the
merged ``:15020``, and the CPU per scrape of this process (the agent's metrics server runs in it, with the
control plane and the scraping client) and of the Envoy, sequential scrapes over one keep-alive connection (as
Prometheus scrapes), on a server sidecar in two states: before any request (no counted duration histogram in
Envoy: what a proxy with telemetry off looks like) and after requests (the histogram there: each scrape waits
for a fresh merge of Envoy's histograms first, so ``istio_requests_total`` is exact). Also Envoy's admin
requests per scrape (``http.admin.downstream_rq_total``) and the admin connections opened per scrape.

    .venv/bin/python bench/bench_scrape.py                 # --scrapes 200 --requests 50

Runs against whatever ``mizzen`` is importable: ``PYTHONPATH=<other checkout>/src`` measures other code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time

import httpx
from _common import fast_and_load, pct
from aiohttp import web

from mizzen.agent.envoy import Agent
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

NS = "bench"
SERVER_IP, APP_IP, CLIENT_IP = "127.78.0.2", "127.78.0.3", "127.78.0.4"
SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: fast, namespace: {NS}}}
spec:
  selector: {{app: fast}}
  ports: [{{name: http, port: 9080}}]
"""


async def admin_counter(agent: Agent, name: str) -> int:
    m = re.search(rf"^{re.escape(name)}: (\d+)$",
                  await agent.admin_get(f"/stats?filter=^{re.escape(name)}$"), re.M)
    return int(m[1]) if m else -1


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process, from /proc."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(agent: Agent, port: int, scrapes: int, label: str) -> None:
    url = f"http://{agent.spec.ip}:{port}/stats/prometheus"
    rq0 = await admin_counter(agent, "http.admin.downstream_rq_total")
    cx0 = await admin_counter(agent, "http.admin.downstream_cx_total")
    times = []
    cpu0, envoy0 = time.process_time(), cpu_s(agent.pid)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        for _ in range(scrapes):
            t = time.perf_counter()
            r = await c.get(url)
            times.append(time.perf_counter() - t)
            r.raise_for_status()
    cpu, envoy = time.process_time() - cpu0, cpu_s(agent.pid) - envoy0
    rq = await admin_counter(agent, "http.admin.downstream_rq_total") - rq0 - 2    # our 2 reads
    cx = await admin_counter(agent, "http.admin.downstream_cx_total") - cx0 - 2
    print(f"{label:28} :{port}  median {pct(times, 50) * 1000:6.2f} ms  p90 {pct(times, 90) * 1000:6.2f} ms  "
          f"CPU per scrape: Python {cpu / scrapes * 1000:5.2f} ms, Envoy {envoy / scrapes * 1000:5.2f} ms  "
          f"({scrapes} scrapes; Envoy admin requests per scrape {rq / scrapes:.2f}, admin connections "
          f"opened {cx}; {len(r.content) // 1024} KiB)", flush=True)


async def run(args: argparse.Namespace) -> None:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_get("/", hello)
    backend = web.AppRunner(app, access_log=None)
    await backend.setup()
    await web.TCPSite(backend, APP_IP, 9080).start()
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, http_port=0, debounce_quiet_s=0.05,
                                          debounce_max_s=0.5, restore_workloads=False))
    agents: list[Agent] = []
    try:
        await cp.start()
        server, _ = await fast_and_load(cp, agents, ns=NS, server_ip=SERVER_IP, app_ip=APP_IP,
                                        client_ip=CLIENT_IP)
        result = cp.api.loader(SERVICE, "bench.yaml", None)
        assert not result.errors, result.errors
        cp.store.apply(result.configs)
        await cp.wait_synced(timeout=20)
        for port in (15090, 15020):
            await measure(server, port, args.scrapes, "no counted histogram")
        async with httpx.AsyncClient(proxy=f"http://{CLIENT_IP}:15080", trust_env=False, timeout=10) as http:
            for _ in range(args.requests):
                (await http.get("http://fast:9080/")).raise_for_status()
        for port in (15090, 15020):
            await measure(server, port, args.scrapes, f"after {args.requests} requests")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    finally:
        for a in agents:
            await a.stop()
        await cp.stop()
        await backend.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scrapes", type=int, default=200)
    p.add_argument("--requests", type=int, default=50)
    args = p.parse_args()
    start = time.monotonic()
    asyncio.run(run(args))
    print(f"({time.monotonic() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
