"""Throughput through two sidecars with telemetry on vs off (issue 12): a closed-loop HTTP/1.1 load
(``bench/httpload``, Go, keep-alive) -> the client sidecar's outbound listener -> the server sidecar's inbound
listener -> a Go backend, both Envoys ``--concurrency 1``. "Off" is a mesh-wide Telemetry that disables every
metric (no exchange filters, no stats loggers: what the telemetry plugin adds is gone); "on" is the default.
Rounds interleave on/off (the order alternates), each after the push is ACKed and old connections drained;
the median of each and their ratio are printed. Every "on" round checks that istio_requests_total counted
every request at both proxies; every "off" round that nothing was counted.

    .venv/bin/python bench/bench_telemetry.py            # --rounds 7 --seconds 3 --connections 4
    .venv/bin/python bench/bench_telemetry.py --instructions   # instructions per request (callgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import fast_and_load

from mizzen.agent.envoy import Agent
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

SRC = Path(__file__).resolve().parent / "httpload"
NS = "bench"
SERVER_IP, APP_IP, CLIENT_IP = "127.75.0.2", "127.75.0.3", "127.75.0.4"
SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: fast, namespace: {NS}}}
spec:
  selector: {{app: fast}}
  ports: [{{name: http, port: 9080}}]
"""
LEAN = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - {match: {metric: REQUEST_SIZE}, disabled: true}
    - {match: {metric: RESPONSE_SIZE}, disabled: true}
"""
OFF = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]
"""


def httpload() -> Path:
    """Build bench/httpload into the cache dir when its source is newer than the binary; its path."""
    cache = Path.home() / ".cache" / "mizzen-bench"
    binary = cache / "httpload"
    newest = max(p.stat().st_mtime for p in (SRC / "main.go", SRC / "go.mod"))
    if not binary.exists() or binary.stat().st_mtime < newest:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([go, "build", "-o", str(binary), "."], cwd=SRC, check=True, timeout=600)
    return binary


async def requests_total(ip: str) -> float:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        text = (await c.get(f"http://{ip}:15090/stats/prometheus")).text
    return sum(float(m.group(1)) for m in re.finditer(r"^istio_requests_total\{.*\} (\S+)$", text, re.M))


async def heap_mb(ip: str) -> float:
    """The Envoy's heap (``server.memory_allocated``) in MB, printed per round: does anything grow?"""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        text = (await c.get(f"http://{ip}:15090/stats/prometheus")).text
    m = re.search(r"^envoy_server_memory_allocated\{?.*?\}? (\S+)$", text, re.M)
    return float(m.group(1)) / 2**20 if m else 0.0


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process, from /proc."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def apply(cp: ControlPlane, text: str, delete: bool = False) -> None:
    result = cp.api.loader(text, "bench.yaml", None)
    assert not result.errors, result.errors
    if delete:
        cp.store.delete([c.key for c in result.configs])
    else:
        cp.store.apply(result.configs)
    await cp.wait_synced(timeout=20)
    await asyncio.sleep(2.5)       # connections of the old listener config drain (--drain-time-s 1)


async def run(args: argparse.Namespace) -> None:
    binary = httpload()
    backend = subprocess.Popen([str(binary), "serve", f"{APP_IP}:9080"])
    work = Path(tempfile.mkdtemp(prefix="mizzen-bench-tel-"))
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, http_port=0, debounce_quiet_s=0.05,
                                          debounce_max_s=0.5, restore_workloads=False))
    agents: list[Agent] = []
    try:
        await cp.start()
        server, client = await fast_and_load(cp, agents, ns=NS, server_ip=SERVER_IP, app_ip=APP_IP,
                                             client_ip=CLIENT_IP)
        await apply(cp, SERVICE)
        if args.probe:
            for name, argv in (("backend", [f"http://{APP_IP}:9080/"]),
                               ("server sidecar inbound", [f"http://{SERVER_IP}:9080/"]),
                               ("both sidecars", ["-proxy", f"http://{CLIENT_IP}:15080", "http://fast:9080/"])):
                out = subprocess.run([str(binary), "load", "-c", str(args.connections), "-d", "2s", *argv],
                                     capture_output=True, text=True, timeout=60, check=True)
                print(f"probe {name}: {out.stdout.strip()}", flush=True)
        modes = ("on", "off", "lean") if args.lean else ("on", "off")
        results: dict[str, list[float]] = {m: [] for m in modes}
        cpu_per_req: dict[str, list[float]] = {m: [] for m in modes}
        current = "on"
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                want_on = mode != "off"
                if mode != current:
                    if mode == "on":
                        await apply(cp, OFF, delete=True)
                    else:
                        await apply(cp, LEAN if mode == "lean" else OFF)
                    current = mode
                before = (await requests_total(CLIENT_IP), await requests_total(SERVER_IP))
                cpu0 = cpu_s(client.pid) + cpu_s(server.pid)
                out = subprocess.run([str(binary), "load", "-proxy", f"http://{CLIENT_IP}:15080", "-c",
                                      str(args.connections), "-d", f"{args.seconds}s", "http://fast:9080/"],
                                     capture_output=True, text=True, timeout=args.seconds + 30, check=True)
                ok, bad, secs = out.stdout.split()
                us = (cpu_s(client.pid) + cpu_s(server.pid) - cpu0) * 1e6 / max(1, int(ok) + int(bad))
                rps = int(ok) / float(secs)
                results[mode].append(rps)
                cpu_per_req[mode].append(us)
                await asyncio.sleep(0.5)
                counted = (await requests_total(CLIENT_IP) - before[0],
                           await requests_total(SERVER_IP) - before[1])
                expect = (int(ok) + int(bad), int(ok) + int(bad)) if want_on else (0, 0)
                check = "counted" if counted == expect else f"COUNT MISMATCH {counted} != {expect}"
                heap = f"{await heap_mb(CLIENT_IP):.1f} / {await heap_mb(SERVER_IP):.1f}"
                print(f"round {r + 1} {mode:3}: {rps:8.0f} req/s ({ok} ok, {bad} errors), both Envoys "
                      f"{us:5.0f} us CPU/request, {check}, heap client/server {heap} MB", flush=True)
        on, off = statistics.median(results["on"]), statistics.median(results["off"])
        print(f"median telemetry on {on:.0f} req/s, off {off:.0f} req/s: ratio on/off {on / off:.3f} "
              f"({args.rounds} interleaved rounds of {args.seconds} s, {args.connections} connections, "
              f"--concurrency 1 Envoys)")
        con, coff = statistics.median(cpu_per_req["on"]), statistics.median(cpu_per_req["off"])
        print(f"median CPU of both Envoys per request: on {con:.0f} us, off {coff:.0f} us: "
              f"off/on {coff / con:.3f} (the throughput ratio a CPU-bound pair would reach); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if args.lean:
            lean, clean = statistics.median(results["lean"]), statistics.median(cpu_per_req["lean"])
            print(f"without the size histograms (lean): {lean:.0f} req/s, ratio lean/off {lean / off:.3f}; "
                  f"CPU {clean:.0f} us/request, off/lean {coff / clean:.3f}")
    finally:
        for a in agents:
            await a.stop()
        await cp.stop()
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def static_probe(binary: Path, seconds: float, connections: int) -> None:
    """CPU per request of one static Envoy answering directly, with what the telemetry plugin adds to a
    server's inbound chain switched on piece by piece."""
    import json

    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    from google.protobuf import json_format

    from mizzen.agent.binary import envoy_binary
    from mizzen.core.filters import pack
    from mizzen.core.workload_labels import peer_labels
    from mizzen.telemetry import exchange
    from mizzen.telemetry.metrics import Metric, Reporter, ServiceLabels, http_loggers, with_stats_scope

    me = peer_labels("fast-v1", NS, {"app": "fast", "version": "v1"})
    variants: dict[str, tuple[bool, list[Metric]]] = {
        "none": (False, []), "exchange": (True, []), "+counter": (True, [Metric.REQUEST_COUNT]),
        "+duration": (True, [Metric.REQUEST_COUNT, Metric.REQUEST_DURATION]),
        "all four": (True, [Metric.REQUEST_COUNT, Metric.REQUEST_DURATION, Metric.REQUEST_SIZE,
                            Metric.RESPONSE_SIZE]),
    }
    ip, port = "127.76.0.1", 19950
    for name, (exch, metrics) in [*variants.items(), *variants.items()]:      # twice: the spread shows noise
        hcm = hcm_pb2.HttpConnectionManager(stat_prefix="probe",
                                            codec_type=hcm_pb2.HttpConnectionManager.AUTO)
        if exch:
            hcm.http_filters.append(exchange.receive_filter())
        hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
        route = hcm.route_config.virtual_hosts.add(name="all", domains=["*"]).routes.add()
        route.match.prefix = "/"
        route.direct_response.status = 200
        route.direct_response.body.inline_string = "ok"
        if metrics:
            hcm.access_log.extend(http_loggers(Reporter.DESTINATION, me, ServiceLabels(), metrics))
        bs = bootstrap_pb2.Bootstrap()
        lis = bs.static_resources.listeners.add(name="probe")
        lis.address.socket_address.address, lis.address.socket_address.port_value = ip, port
        lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager",
                                            typed_config=pack(hcm))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "envoy.json"
            cfg.write_text(json.dumps(with_stats_scope(json.loads(json_format.MessageToJson(bs)))))
            envoy = subprocess.Popen([str(envoy_binary()), "-c", str(cfg), "--concurrency", "1",
                                      "-l", "error", "--disable-hot-restart"])
            try:
                time.sleep(1.5)
                c0 = cpu_s(envoy.pid)
                out = subprocess.run([str(binary), "load", "-c", str(connections), "-d", f"{seconds}s",
                                      f"http://{ip}:{port}/"], capture_output=True, text=True, check=True,
                                     timeout=seconds + 30).stdout.split()
                n = int(out[0])
                us = 1e6 * (cpu_s(envoy.pid) - c0) / n
                rps = n / float(out[2])
                print(f"static {name:10} {rps:7.0f} req/s, {us:5.1f} us CPU/request", flush=True)
            finally:
                envoy.terminate()
                envoy.wait(10)


def instructions_probe(binary: Path, seconds: float, connections: int, keep: Path | None = None) -> None:
    """Instructions per request (valgrind's callgrind: a count, unlike CPU time insensitive to other load)
    through a client and a server hop in one static Envoy, as between two sidecars (plaintext, direct
    response at the server): without telemetry, with the peer exchange only, with everything the plugin
    adds (exchange and the four HTTP metrics' stats loggers). The Envoy runs under valgrind (~50x slower):
    request counts are small, the ranking is what counts. ``keep``: a directory that receives each
    variant's callgrind dump (``callgrind.<variant>``, for ``callgrind_annotate``: where the cost goes)."""
    import glob
    import json
    import socket

    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    from google.protobuf import json_format

    from mizzen.agent.binary import envoy_binary
    from mizzen.core.filters import pack
    from mizzen.core.workload_labels import (
        PEER_KEY,
        PEER_METADATA,
        SERVICE_KEY,
        encode_peer,
        encode_service,
        peer_labels,
    )
    from mizzen.telemetry import exchange
    from mizzen.telemetry.metrics import HTTP_METRICS, Reporter, ServiceLabels, http_loggers, with_stats_scope

    if not shutil.which("valgrind"):
        sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    client = peer_labels("load-v1", NS, {"app": "load", "version": "v1"})
    server = peer_labels("fast-v1", NS, {"app": "fast", "version": "v1"})
    svc = ServiceLabels(f"fast.{NS}.svc.cluster.local", "fast", NS)
    ip, base = "127.76.0.1", 19970

    def hcm(prefix: str, flts: list[Any], logs: list[Any], cluster: str = "", early: Any = None) -> Any:
        h = hcm_pb2.HttpConnectionManager(stat_prefix=prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO)
        if early is not None:
            h.early_header_mutation_extensions.append(early)
        h.http_filters.extend(flts)
        h.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
        route = h.route_config.virtual_hosts.add(name="all", domains=["*"]).routes.add()
        route.match.prefix = "/"
        if cluster:
            route.route.cluster = cluster
        else:
            route.direct_response.status = 200
            route.direct_response.body.inline_string = "ok"
        h.access_log.extend(logs)
        return h

    variants = ("none", "exchange", "telemetry")
    bs = bootstrap_pb2.Bootstrap()
    # as the agent's bootstrap registers it (mizzen.agent.bootstrap)
    bs.inline_headers.add(inline_header_name=exchange.HEADER,
                          inline_header_type=bootstrap_pb2.CustomInlineHeader.REQUEST_HEADER)
    for i, name in enumerate(variants):
        exch, metrics = name != "none", name == "telemetry"
        early = exchange.early_send(client) if exch else None              # what the plugin adds
        back = [exchange.receive_filter()] if exch else []
        flog = http_loggers(Reporter.SOURCE, client, None) if metrics else []
        blog = http_loggers(Reporter.DESTINATION, server, svc, HTTP_METRICS) if metrics else []
        for lname, port, h in ((f"client{i}", base + 2 * i, hcm(f"c{i}", [], flog, f"server{i}", early)),
                               (f"server{i}", base + 2 * i + 1, hcm(f"s{i}", back, blog))):
            lis = bs.static_resources.listeners.add(name=lname)
            lis.address.socket_address.address, lis.address.socket_address.port_value = ip, port
            lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager",
                                                typed_config=pack(h))
        c = bs.static_resources.clusters.add(name=f"server{i}", type=0)
        c.connect_timeout.FromSeconds(5)
        lb = c.load_assignment.endpoints.add().lb_endpoints.add()
        sa = lb.endpoint.address.socket_address
        c.load_assignment.cluster_name, sa.address, sa.port_value = f"server{i}", ip, base + 2 * i + 1
        lb.metadata.filter_metadata[PEER_METADATA].update(      # as EDS gives it
            {**server.fields(), PEER_KEY: encode_peer(server.fields())})
        c.metadata.filter_metadata[PEER_METADATA].update(       # as CDS gives it (core.clusters)
            {"service": svc.host, "service_name": svc.name, "service_namespace": svc.namespace,
             SERVICE_KEY: encode_service(svc.host, svc.name, svc.namespace)})
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp) / "envoy.json", Path(tmp) / "callgrind.out"
        cfg.write_text(json.dumps(with_stats_scope(json.loads(json_format.MessageToJson(bs)))))
        envoy = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  str(envoy_binary()), "-c", str(cfg), "--concurrency", "1", "-l", "error",
                                  "--disable-hot-restart", "--base-id", "7741"], stderr=subprocess.DEVNULL)

        def window(url: str | None, name: str = "") -> tuple[int, int]:
            """Instructions Envoy ran during ``seconds`` (of load on ``url``, or idle) and the requests."""
            subprocess.run(["callgrind_control", "-z", str(envoy.pid)], capture_output=True, check=True)
            n = 0
            if url:
                o = subprocess.run([str(binary), "load", "-c", str(connections), "-d", f"{seconds}s", url],
                                   capture_output=True, text=True, check=True, timeout=seconds + 60)
                n = sum(int(x) for x in o.stdout.split()[:2])
            else:
                time.sleep(seconds)
            seen = set(glob.glob(f"{out}*"))
            subprocess.run(["callgrind_control", "-d", str(envoy.pid)], capture_output=True, check=True)
            dump = sorted(set(glob.glob(f"{out}*")) - seen)[-1]
            if keep is not None and name:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(dump, keep / f"callgrind.{name}")
            m = re.search(r"^(?:summary|totals): (\d+)", Path(dump).read_text(errors="replace"), re.M)
            return (int(m.group(1)) if m else 0), n

        try:
            deadline = time.monotonic() + 900         # valgrind starts Envoy slowly, more so under load
            while True:
                try:
                    socket.create_connection((ip, base + 2 * len(variants) - 1), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or envoy.poll() is not None:
                        sys.exit("Envoy under valgrind did not start listening")
                    time.sleep(0.5)
            for i in range(len(variants)):      # warm up: first connections, stats created
                subprocess.run([str(binary), "load", "-c", "2", "-d", "1s", f"http://{ip}:{base + 2 * i}/"],
                               capture_output=True, check=True, timeout=60)
            idle, _ = window(None)
            for i, name in enumerate(variants):
                ir, n = window(f"http://{ip}:{base + 2 * i}/", name)
                print(f"instructions {name:10} {(ir - idle) / max(1, n) / 1000:7.1f}k per request through "
                      f"both hops ({n} requests under valgrind)", flush=True)
        finally:
            envoy.kill()
            envoy.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--probe", action="store_true", help="first measure the backend and one sidecar alone")
    p.add_argument("--lean", action="store_true",
                   help="also rounds with istio_request_bytes/istio_response_bytes disabled (Telemetry API)")
    p.add_argument("--static", action="store_true",
                   help="only the cost breakdown on one static Envoy (no control plane, no sidecars)")
    p.add_argument("--instructions", action="store_true",
                   help="only instructions per request through two hops under valgrind (a count, not a time)")
    p.add_argument("--keep", type=Path, help="with --instructions: keep each variant's callgrind dump here")
    args = p.parse_args()
    start = time.monotonic()
    if args.instructions:
        instructions_probe(httpload(), max(args.seconds, 8.0), args.connections, args.keep)
    elif args.static:
        static_probe(httpload(), args.seconds, args.connections)
    else:
        asyncio.run(run(args))
    print(f"({time.monotonic() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
