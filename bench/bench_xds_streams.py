"""Benchmark: N simulated ADS streams (a Go client process) against one AdsServer, SotW or delta.

    .venv/bin/python bench/bench_xds_streams.py                                  # 1000 streams, SotW
    .venv/bin/python bench/bench_xds_streams.py --streams 5000 --rounds 20 --protocol sotw,delta
    .venv/bin/python bench/bench_xds_streams.py --streams 5000 --clusters 3500 --protocol delta \
        --change one-cluster,one-endpoint --rounds 20

Each client stream subscribes like Envoy (CDS and LDS wildcard, EDS and RDS by name) and ACKs every
response. The client is written in Go (``bench/xdsclient``, go-control-plane's protos and grpc-go) so that it
costs less CPU than the server on a small box; this script builds it into a cache dir
(``$XDG_CACHE_HOME/mizzen-bench``) when its source changed. ``--client python`` uses a grpc.aio client
instead (SotW only).

The server process measures: connect + initial sync of all nodes; then per push round, the cache update of
every node (timed apart) and the time until every node has ACKed all types, the server's CPU seconds in the
round, and the responses and resources sent per stream. The update (``--update``) is what the control plane's
push does for such a change: ``types`` (the default), ``SnapshotCache.set_types`` of the changed types for
each node (the Pusher's ``_generate`` with the types a change reads); ``snapshot``, ``set_snapshot`` of all
four types per node (a full push; what this bench did before 2026-12-07 05:10). ``--change``: ``all`` (new
endpoints for every cluster and a new route config), ``one-cluster`` (one cluster's settings),
``one-endpoint`` (one cluster's endpoints). xDS runs over plaintext gRPC on loopback (no TLS). Prints
numbers only; bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import functools
import gc
import hashlib
import logging
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "--grpc-defaults" not in sys.argv:
    from mizzen.controlplane import grpcenv
    grpcenv.configure()   # gRPC's settings of the control plane process (read once, when grpc loads)

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from mizzen import gctune
from mizzen.xds import AdsServer, SnapshotCache, serve
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

HOST = "127.71.9.1"
STREAMS_PER_CHANNEL = 100
GO_CLIENT_SRC = Path(__file__).resolve().parent / "xdsclient"


# what each --change changes (the types the control plane's push regenerates for it)
CHANGED_TYPES = {"all": (ENDPOINT, ROUTE), "one-cluster": (CLUSTER,), "one-endpoint": (ENDPOINT,)}
UPDATE = {"types": "set_types", "snapshot": "set_snapshot"}


def node_id(i: int) -> str:
    return f"sidecar~10.{i // 250}.{i % 250}.1~bench-{i}.default~default.svc.cluster.local"


def rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- resources ---

def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


class Mesh:
    """Shared clusters/endpoints/routes (same objects for every node, as a control plane would reuse them);
    one listener per node (its own address)."""

    def __init__(self, clusters: int) -> None:
        self.names = [f"outbound|9080||svc{i}.default.svc.cluster.local" for i in range(clusters)]
        self.clusters = [cluster_pb2.Cluster(
            name=n, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=1),
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads())) for n in self.names]
        self.endpoints = self.make_endpoints(generation=0)
        self.route = self.make_route(generation=0)
        self._shared: dict[str, dict[str, Message]] | None = None

    def change(self, kind: str, generation: int) -> None:
        """Apply one round's change: ``all``, ``one-cluster`` or ``one-endpoint`` (cluster ``generation``
        modulo the count)."""
        k = generation % len(self.names)
        if kind == "all":
            self.endpoints = self.make_endpoints(generation)
            self.route = self.make_route(generation)
        elif kind == "one-cluster":
            c = cluster_pb2.Cluster()
            c.CopyFrom(self.clusters[k])
            c.connect_timeout.seconds = 1 + generation % 30
            c.connect_timeout.nanos = generation % 1000 * 1000
            self.clusters = [*self.clusters[:k], c, *self.clusters[k + 1:]]
        elif kind == "one-endpoint":
            e = endpoint_pb2.ClusterLoadAssignment()
            e.CopyFrom(self.endpoints[k])
            e.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 10000 + generation
            self.endpoints = [*self.endpoints[:k], e, *self.endpoints[k + 1:]]
        else:
            raise ValueError(kind)
        self._shared = None

    def make_endpoints(self, generation: int) -> list[endpoint_pb2.ClusterLoadAssignment]:
        return [endpoint_pb2.ClusterLoadAssignment(cluster_name=n, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=_addr(f"10.{generation % 200}.{i}.{j}", 9080))) for j in range(3)])])
            for i, n in enumerate(self.names)]

    def make_route(self, generation: int) -> route_pb2.RouteConfiguration:
        vhosts = [route_components_pb2.VirtualHost(
            name=f"{n.split('|')[3]}:9080", domains=[n.split("|")[3], f"svc{i}:9080"],
            routes=[route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(
                    cluster=n, timeout=duration_pb2.Duration(seconds=generation % 30 + 1)))])
            for i, n in enumerate(self.names)]
        return route_pb2.RouteConfiguration(name="9080", virtual_hosts=vhosts)

    def listener(self, i: int) -> listener_pb2.Listener:
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix="outbound_0.0.0.0_9080",
            rds=hcm_pb2.Rds(config_source=_ads(), route_config_name="9080"))
        typed = any_pb2.Any()
        typed.Pack(hcm)
        return listener_pb2.Listener(
            name="0.0.0.0_9080", address=_addr(f"10.{i // 250}.{i % 250}.1", 9080),
            filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=typed)])])

    def resource_set(self, listener: Message) -> ResourceSet:
        """The node's resources; the shared types are the same dicts for every node of a round."""
        if self._shared is None:
            self._shared = {
                CLUSTER: {c.name: c for c in self.clusters},
                ENDPOINT: {e.cluster_name: e for e in self.endpoints},
                ROUTE: {"9080": self.route},
            }
        return ResourceSet({**self._shared, LISTENER: {"0.0.0.0_9080": listener}})


# --- client process ---

async def run_clients(target: str, first: int, count: int, clusters: int) -> None:
    eds_names = [f"outbound|9080||svc{i}.default.svc.cluster.local" for i in range(clusters)]
    subs: dict[str, list[str]] = {CLUSTER: [], ENDPOINT: eds_names, LISTENER: [], ROUTE: ["9080"]}
    nchan = max(1, (count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    opts = [("grpc.max_receive_message_length", 256 << 20)]
    channels = [grpc.aio.insecure_channel(target, options=[*opts, ("mizzen.bench.channel", k)])
                for k in range(nchan)]

    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        q: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        for t, names in subs.items():
            req = discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names)
            if t == CLUSTER:
                req.node.id = node_id(i)
            q.put_nowait(req)

        async def requests() -> Any:
            while True:
                yield await q.get()

        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[(i - first) % nchan])
        for attempt in range(20):   # reconnect like Envoy would, bounded
            call = stub.StreamAggregatedResources(requests())
            try:
                async for resp in call:
                    q.put_nowait(discovery_pb2.DiscoveryRequest(
                        type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce,
                        resource_names=subs.get(resp.type_url, [])))
                return
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {e.details()}"
                errors[why] = errors.get(why, 0) + 1
                if sum(errors.values()) <= 5:
                    print(f"client stream {i} attempt {attempt}: {why}", file=sys.stderr)
                while not q.empty():
                    q.get_nowait()
                for t, names in subs.items():
                    req = discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names)
                    if t == CLUSTER:
                        req.node.id = node_id(i)
                    q.put_nowait(req)
                await asyncio.sleep(0.2)

    tasks = []
    for i in range(first, first + count):
        tasks.append(asyncio.create_task(one(i)))
        if len(tasks) % 200 == 0:
            await asyncio.sleep(0.05)     # do not open thousands of streams in one burst
    await asyncio.gather(*tasks, return_exceptions=True)


def client_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(Exception):   # die with the server process (PR_SET_PDEATHSIG = 1)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    asyncio.run(run_clients(args.target, args.first, args.streams, args.clusters))


# --- server process ---

def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def go_client() -> Path:
    """Build bench/xdsclient into the cache dir, named by a hash of its source (a checkout of another
    commit, whose client differs, builds its own binary beside it instead of replacing this one); its path."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mizzen-bench"
    sources = sorted([*GO_CLIENT_SRC.glob("*.go"), GO_CLIENT_SRC / "go.mod", GO_CLIENT_SRC / "go.sum"])
    digest = hashlib.sha256()
    for p in sources:
        digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    binary = cache / f"xdsclient-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building the Go ADS client into {binary} ...", flush=True)
    partial = binary.with_name(binary.name + ".partial")
    subprocess.run([go, "build", "-o", str(partial), "."], cwd=GO_CLIENT_SRC, check=True, timeout=900)
    partial.rename(binary)   # a build cut short leaves no binary that looks finished
    return binary


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed: grpc's pollers, executors) of a process."""
    out: dict[str, float] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = "main" if int(tid) == pid else f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tck
    return out


class GcTimer:
    """Collections per generation and their CPU time (gc.callbacks), to attribute a round's CPU."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.thread_time()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.seconds[g] += time.thread_time() - self._t0

    def __str__(self) -> str:
        return ", ".join(f"gen{g} {self.count[g]}x {self.seconds[g] * 1000:.0f} ms" for g in range(3))


class CallbackCount:
    """The event loop's callbacks by kind, counted by wrapping asyncio's ``Handle._run`` (asyncio's own loop
    only: uvloop runs its handles in C): task steps (a task resumed: its first step or a wake-up by a
    future), grpc.aio's completion-queue reader (one per wake-up byte from its poller thread), the rest."""

    def __init__(self) -> None:
        self.counts = {"task steps": 0, "grpc reader": 0, "other": 0}
        run = self._run = asyncio.events.Handle._run
        counts = self.counts

        def counted(handle: asyncio.events.Handle) -> None:
            cb = handle._callback   # type: ignore[attr-defined]
            kind = type(cb).__name__
            if kind.startswith("Task") or isinstance(getattr(cb, "__self__", None), asyncio.Task):
                counts["task steps"] += 1
            elif getattr(getattr(cb, "func", cb), "__name__", "") == "_handle_events":   # (a partial)
                counts["grpc reader"] += 1
            else:
                counts["other"] += 1
            run(handle)

        asyncio.events.Handle._run = counted   # type: ignore[method-assign]

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def start_clients(args: argparse.Namespace, target: str, delta: bool) -> list[subprocess.Popen[bytes]]:
    per_proc = (args.streams + args.client_procs - 1) // args.client_procs
    procs = []
    client = go_client() if args.client == "go" else None
    for k in range(args.client_procs):
        first, count = k * per_proc, min(per_proc, args.streams - k * per_proc)
        if count <= 0:
            break
        if client is not None:
            cmd = [str(client), "-target", target, "-first", str(first), "-streams", str(count),
                   "-clusters", str(args.clusters), "-window", str(args.window)]
            cmd += ["-delta"] if delta else []
        else:
            if delta:
                raise SystemExit("--client python speaks state-of-the-world only; use --client go for delta")
            cmd = [sys.executable, __file__, "--client-process", "--target", target, "--first", str(first),
                   "--streams", str(count), "--clusters", str(args.clusters)]
        env = None
        if client is not None and args.client_gomaxprocs > 0:
            env = {**os.environ, "GOMAXPROCS": str(args.client_gomaxprocs)}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env))
    return procs


def stop_clients(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    """SIGTERM the clients; the Go client's totals lines."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    lines = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate(timeout=5)
        lines += [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    return lines


async def run_protocol(args: argparse.Namespace, delta: bool, deadline: float) -> None:
    mesh = Mesh(args.clusters)
    listeners = [mesh.listener(i) for i in range(args.streams)]
    cache = SnapshotCache()

    async def on_connect(node: str, _md: dict[str, Any]) -> None:
        i = int(node.split("~")[2].split(".")[0].removeprefix("bench-"))
        cache.set_snapshot(node, mesh.resource_set(listeners[i]))

    status = None
    if args.metrics:   # the control plane's sync status: pilot_* metrics fed by every stream event
        from mizzen.controlplane.metrics import Metrics, ObservedStatus
        status = ObservedStatus(cache, Metrics())
    ads = AdsServer(cache, on_connect=on_connect, status=status)
    gs = await serve(ads, args.host, 0)
    window = None
    if args.gc in ("tuned", "round"):
        gctune.configure()   # what `python -m mizzen.controlplane` does once started
    if args.gc == "round":   # ... and the raised young threshold during push rounds
        ads.on_round = window = gctune.PushWindow()
    rss0 = rss_mb()
    nodes = [node_id(i) for i in range(args.streams)]
    procs = start_clients(args, f"{args.host}:{ads.port}", delta)
    proto = "delta" if delta else "SotW"
    print(f"== {proto}: streams={args.streams} clusters/node={args.clusters} client={args.client} "
          f"x{len(procs)} (GOMAXPROCS {args.client_gomaxprocs or 'default'}) "
          f"server pid={os.getpid()} loop={type(asyncio.get_running_loop()).__module__} "
          f"gc={gc.get_threshold()} GRPC_EXPERIMENTS={os.environ.get('GRPC_EXPERIMENTS', '')!r} "
          f"xDS TLS: off (plaintext gRPC on loopback)", flush=True)
    me = os.getpid()
    counter = CallbackCount() if args.count_callbacks else None
    try:
        t0 = time.monotonic()
        cpu0 = cpu_s(me)
        await ads.status.wait_synced(nodes, timeout=max(1.0, deadline - time.monotonic()))
        print(f"connect + initial sync of all nodes: {time.monotonic() - t0:.2f} s "
              f"(server CPU {cpu_s(me) - cpu0:.1f} s)", flush=True)
        rss1 = rss_mb()
        if args.gc != "default" and gctune.refreeze_if_grown():   # the control plane's periodic check
            print(f"gc: refroze after the connects ({gc.get_freeze_count()} objects frozen)", flush=True)
        prof = cProfile.Profile() if args.profile else None
        if args.instructions:
            await callgrind_control("-z")   # count the push rounds only
        for kind in args.change.split(","):
            rounds, sends, cpus, send_cpus, loops = [], [], [], [], []
            if prof is not None:
                prof.enable()
            client_cpu0 = sum(cpu_s(p.pid) for p in procs if p.poll() is None)
            threads0 = thread_cpu_s(me)
            callbacks0 = counter.snapshot() if counter is not None else {}
            sent0 = ads.responses_sent
            gct = GcTimer()
            gc.callbacks.append(gct)
            thresholds = gc.get_threshold()
            if args.gc_young:
                gc.set_threshold(args.gc_young, *thresholds[1:])
            for rnd in range(1, args.rounds + 1):
                await asyncio.sleep(args.gap)
                mesh.change(kind, rnd)
                sent, res = ads.responses_sent, ads.resources_sent
                cpu0 = cpu_s(me)
                loop0 = time.thread_time()   # this task runs on the event loop's thread
                t_wall = time.time()
                t0 = time.monotonic()
                if args.update == "types":   # the changed types' content, the same for every node
                    shared = mesh.resource_set(listeners[0]).by_type
                    changed = ResourceSet({t: shared[t] for t in CHANGED_TYPES[kind]})
                    for n in nodes:
                        cache.set_types([n], changed)
                else:
                    for i, n in enumerate(nodes):
                        cache.set_snapshot(n, mesh.resource_set(listeners[i]))
                t_set = time.monotonic() - t0
                cpu_set = cpu_s(me) - cpu0
                await ads.status.wait_synced(nodes, timeout=max(1.0, deadline - time.monotonic()))
                t_all = time.monotonic() - t0
                cpu = cpu_s(me) - cpu0
                loops.append(time.thread_time() - loop0)
                lat = [(ads.status.synced_at(n) or t_wall) - t_wall for n in nodes]
                rounds.append(t_all)
                sends.append(t_all - t_set)
                cpus.append(cpu)
                send_cpus.append(cpu - cpu_set)
                print(f"  {kind} round {rnd}: {UPDATE[args.update]} x{len(nodes)} {t_set * 1000:.0f} ms; "
                      f"all ACKed "
                      f"after {t_all * 1000:.0f} ms (send+ACK {(t_all - t_set) * 1000:.0f} ms); per node "
                      f"p50 {pct(lat, 50) * 1000:.0f} p99 {pct(lat, 99) * 1000:.0f} ms; server CPU "
                      f"{cpu:.2f} s ({cpu - cpu_set:.2f} s after the update; loop thread "
                      f"{loops[-1]:.3f} s); per stream: "
                      f"{(ads.responses_sent - sent) / len(nodes):.2f} responses, "
                      f"{(ads.resources_sent - res) / len(nodes):.2f} resources", flush=True)
            if prof is not None:
                prof.disable()
            client_cpu = sum(cpu_s(p.pid) for p in procs if p.poll() is None) - client_cpu0
            threads = {k: (v - threads0.get(k, 0.0)) / len(rounds) for k, v in thread_cpu_s(me).items()}
            gc.callbacks.remove(gct)
            if counter is not None:
                msgs = max(1, ads.responses_sent - sent0)
                print("event-loop callbacks per response (and its ACK): " + ", ".join(
                    f"{k} {(v - callbacks0[k]) / msgs:.2f}" for k, v in counter.snapshot().items()),
                      flush=True)
            gc.set_threshold(*thresholds)
            print(f"{proto} {kind}: {len(rounds)} rounds, all ACKed p50 {pct(rounds, 50) * 1000:.0f} ms "
                  f"p99 {pct(rounds, 99) * 1000:.0f} ms (send+ACK only: p50 {pct(sends, 50) * 1000:.0f} "
                  f"p99 {pct(sends, 99) * 1000:.0f} ms); server CPU per round p50 {pct(cpus, 50):.2f} s "
                  f"max {max(cpus):.2f} s, of which send+ACK p50 {pct(send_cpus, 50):.2f} s "
                  f"max {max(send_cpus):.2f} s; loop thread per round min {min(loops):.3f} p50 "
                  f"{pct(loops, 50):.3f} s; client CPU {client_cpu / len(rounds):.2f} s/round; "
                  f"server CPU per round by thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(
                      threads.items(), key=lambda kv: -kv[1]) if v >= 0.005) + f"; gc in all rounds: {gct}",
                  flush=True)
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        if args.instructions:
            await report_instructions(args, len(nodes))
        rss2 = rss_mb()
        print(f"server RSS: idle {rss0:.0f} MB, connected {rss1:.0f} MB, after pushes {rss2:.0f} MB "
              f"(~{(rss2 - rss0) * 1024 / max(1, args.streams):.0f} KB/stream)")
        print(f"cache memo: {cache.memo_stats()}; delta diffs hits/misses "
              f"{ads.diffs.hits}/{ads.diffs.misses}"
              + (f"; gc push window raised {window.raised}x" if window is not None else ""))
    except TimeoutError as e:
        print(f"TIMEOUT: {e}")
    finally:
        for line in stop_clients(procs):
            print(f"client totals (initial sync included): {line}")
        await ads.shutdown(gs, 1.0)


async def callgrind_control(flag: str) -> None:
    """Ask valgrind (this process runs under it with --instructions) to zero (-z) or dump (-d) its counts;
    the event loop keeps ticking meanwhile (valgrind takes the command while the process runs code)."""
    done = asyncio.get_running_loop().run_in_executor(None, functools.partial(
        subprocess.run, ["callgrind_control", flag, str(os.getpid())], capture_output=True, check=True))
    while not done.done():
        await asyncio.sleep(0.01)
    await done


async def report_instructions(args: argparse.Namespace, streams: int) -> None:
    """Instructions of the push rounds per stream and round, the event loop's thread apart (a count,
    unlike CPU time insensitive to other load on the machine)."""
    out = Path(os.environ["MIZZEN_CALLGRIND_OUT"])
    seen = set(out.parent.glob(out.name + "*"))
    await callgrind_control("-d")
    per_thread: list[int] = []
    main_ir = 0
    for dump in sorted(set(out.parent.glob(out.name + "*")) - seen):
        if args.keep is not None:   # for callgrind_annotate: where the instructions go
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, args.keep / dump.name)
        m = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.M)
        t = re.search(r"^thread: (\d+)", dump.read_text(errors="replace"), re.M)
        if m:
            per_thread.append(int(m.group(1)))
            if t and t.group(1) == "1":
                main_ir = int(m.group(1))
    n = streams * args.rounds
    print(f"instructions per stream per round ({args.rounds} rounds, under valgrind): all threads "
          f"{sum(per_thread) / n / 1000:.1f}k, the event loop's thread {main_ir / n / 1000:.1f}k", flush=True)


def instructions_main(argv: list[str]) -> None:
    """Re-run this benchmark's server under valgrind's callgrind (threads counted apart)."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "MIZZEN_CALLGRIND_OUT": str(out)}
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
               sys.executable, str(Path(__file__).resolve()), *argv, "--under-valgrind"]
        sys.exit(subprocess.run(cmd, env=env, stderr=subprocess.DEVNULL).returncode)


async def server_main(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    for proto in args.protocol.split(","):
        await run_protocol(args, proto == "delta", deadline)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=20, help="clusters (and EDS assignments) per node")
    ap.add_argument("--rounds", type=int, default=3, help="push rounds per change kind after initial sync")
    ap.add_argument("--protocol", default="sotw", help="sotw, delta or both: sotw,delta")
    ap.add_argument("--change", default="all", help="all, one-cluster, one-endpoint (comma-separated)")
    ap.add_argument("--update", choices=list(UPDATE), default="types",
                    help="how a round updates the cache: types (set_types of the changed types per node, as "
                         "the control plane's push does) or snapshot (set_snapshot of all types per node)")
    ap.add_argument("--client", choices=["go", "python"], default="go")
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--client-gomaxprocs", type=int, default=1,
                    help="GOMAXPROCS of the Go client (0: Go's default, every core). One: on a 2-core box "
                         "the client's spinning scheduler threads otherwise take CPU from the server "
                         "(client CPU per round -20 to -30 %%, bench/README.md)")
    ap.add_argument("--window", type=int, default=256 << 20,
                    help="the Go client's initial HTTP/2 windows (Envoy's default 256 MiB); 0: grpc-go's "
                         "dynamic window, whose BDP pings (which Envoy never sends) the server answers")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--timeout", type=float, default=300.0, help="overall bound in seconds")
    ap.add_argument("--profile", action="store_true", help="cProfile the server during the push rounds")
    ap.add_argument("--gc", choices=["round", "tuned", "default"], default="round",
                    help="round: the control plane's GC settings (mizzen.gctune, with its PushWindow); "
                         "tuned: the same without the window; default: CPython's")
    ap.add_argument("--gap", type=float, default=0.3,
                    help="seconds between rounds (not measured), as pushes are apart in a control plane")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="the server's event loop: asyncio's own or uvloop's (libuv)")
    ap.add_argument("--gc-young", type=int, default=0,
                    help="gen-0 threshold during the push rounds only (0: leave the --gc setting)")
    ap.add_argument("--metrics", action="store_true",
                    help="the control plane's sync status (pilot_* metrics per response, ACK and NACK)")
    ap.add_argument("--count-callbacks", action="store_true",
                    help="count the event loop's callbacks per response by kind (asyncio's loop only)")
    ap.add_argument("--grpc-defaults", action="store_true",
                    help="gRPC's default runtime settings, not the control plane's "
                         "(mizzen.controlplane.grpcenv)")
    ap.add_argument("--instructions", action="store_true",
                    help="count the server's instructions in the push rounds under valgrind (a count, not a "
                         "time: comparable between runs on a busy machine; use ~500 streams, it is slow)")
    ap.add_argument("--keep", type=Path, help="with --instructions: keep the rounds' callgrind dumps here")
    ap.add_argument("--under-valgrind", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client-process", dest="client_mode", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client_mode:
        client_main(args)
        return
    if args.instructions and not args.under_valgrind:
        instructions_main(sys.argv[1:])
    logging.basicConfig(level=logging.WARNING)
    if args.count_callbacks and args.loop != "asyncio":
        raise SystemExit("--count-callbacks needs --loop asyncio (uvloop runs its callbacks in C)")
    if args.loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(server_main(args))
    else:
        asyncio.run(server_main(args))


if __name__ == "__main__":
    main()
