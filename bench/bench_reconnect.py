"""Benchmark: how long real Envoys take to be SYNCED again after a control plane comes back from an outage.

    .venv/bin/python bench/bench_reconnect.py                     # outages of 1, 3, 10 and 25 s, 3 Envoys
    .venv/bin/python bench/bench_reconnect.py --outages 2,5 --envoys 5

Runs ``python -m mizzen.controlplane`` as a real process (temp state dir with one Service) and N Envoys
(``--concurrency 1``, on 127.76.x.y) from the agent's bootstrap, twice: once as shipped (ADS
``retry_policy``: 0.1 s doubling to 0.5 s) and once with the ``retry_policy`` removed (Envoy's default:
0.5 s doubling to 30 s, jittered). For each outage the control plane is SIGKILLed, kept down that long,
started again, and the time from its ports being bound (its announce line) until every Envoy ACKed its
config is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mizzen.agent.binary import envoy_binary
from mizzen.agent.bootstrap import ProxySpec, build_bootstrap
from mizzen.auth.token import TOKEN_ENV, new_token
from mizzen.core.proxy import ProxyType

SUBNET = f"127.76.{1 + os.getpid() % 200}"
TOKEN = new_token()                     # the control plane gets it as $MIZZEN_TOKEN
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: ratings}
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def start_cp(state: Path, xds: int, http: int) -> tuple[asyncio.subprocess.Process, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mizzen.controlplane", "--state-dir", str(state), "--xds-port", str(xds),
        "--http-port", str(http), "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, TOKEN_ENV: TOKEN})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"mizzen control plane:"):
        raise RuntimeError(f"control plane did not start: {line!r}")
    return proc, time.monotonic()


async def all_synced(api: httpx.AsyncClient, url: str, n: int, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            syncz = (await api.get(f"{url}/debug/syncz")).json()
            if len(syncz) == n and all(p["synced"] for p in syncz):
                return time.monotonic()
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(0.01)
    return None


async def run_mode(mode: str, outages: list[float], envoys: int, tmp: Path) -> list[float | None]:
    xds, http = free_port(), free_port()
    url = f"http://127.0.0.1:{http}"
    state = tmp / f"state-{mode}"
    cp, _ = await start_cp(state, xds, http)
    procs: list[asyncio.subprocess.Process] = []
    out: list[float | None] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            r = await api.post(f"{url}/apis/apply", json={"documents": [{"text": SERVICE}]})
            r.raise_for_status()
            for i in range(envoys):
                ip = f"{SUBNET}.{i + 2}"
                spec = ProxySpec(ProxyType.SIDECAR, ip, "bookinfo", f"productpage-v1-{mode}-{i}",
                                 admin_port=free_port(ip), xds_port=xds, labels={"app": "productpage"})
                # Envoy's admin is a Unix socket: one per Envoy, in the temp dir
                boot = build_bootstrap(spec, str(tmp / f"admin-{mode.replace(' ', '-')}-{i}.sock"))
                if mode == "envoy default":
                    grpc = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
                    del grpc["retry_policy"]
                path = tmp / f"envoy-{mode.replace(' ', '-')}-{i}.json"
                path.write_text(json.dumps(boot))
                procs.append(await asyncio.create_subprocess_exec(
                    str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
                    "-l", "error", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
            if await all_synced(api, url, envoys, 30) is None:
                raise RuntimeError("Envoys did not sync")
            for outage in outages:
                cp.send_signal(signal.SIGKILL)
                await cp.wait()
                await asyncio.sleep(outage)
                cp, up = await start_cp(state, xds, http)
                done = await all_synced(api, url, envoys, 60)
                out.append(None if done is None else done - up)
                shown = "not within 60 s" if done is None else f"{done - up:.2f} s"
                print(f"  {mode:13} outage {outage:4.0f} s -> every Envoy SYNCED {shown} after the return",
                      flush=True)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
        if cp.returncode is None:
            cp.kill()
        await cp.wait()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outages", default="1,3,10,25",
                    help="seconds the control plane stays down, comma-separated")
    ap.add_argument("--envoys", type=int, default=3)
    args = ap.parse_args()
    outages = [float(x) for x in args.outages.split(",")]
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-reconnect-") as tmp:
        results = {mode: await run_mode(mode, outages, args.envoys, Path(tmp))
                   for mode in ("mizzen", "envoy default")}
    print(f"\nreturn -> all {args.envoys} Envoys SYNCED (s), by outage length:")
    print("  outage (s)     " + "".join(f"{o:>8.0f}" for o in outages))
    for mode, times in results.items():
        print(f"  {mode:15}" + "".join(f"{t:8.2f}" if t is not None else "       -" for t in times))


if __name__ == "__main__":
    asyncio.run(main())
