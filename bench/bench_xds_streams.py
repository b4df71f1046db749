"""Benchmark: N simulated ADS clients (separate process) against one AdsServer; push latency and server RSS.

    .venv/bin/python bench/bench_xds_streams.py                  # 1000 streams
    .venv/bin/python bench/bench_xds_streams.py --streams 5000

Each client subscribes like Envoy (CDS and LDS wildcard, EDS and RDS by name) and ACKs every response.
The server process measures: connect + initial sync of all nodes, then set_snapshot on every node and the
time until each node has ACKed all types (p50/p99 per node), plus its RSS. Prints numbers only; bounded
by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import logging
import os
import pstats
import signal
import subprocess
import sys
import time
from typing import Any

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

from mizzen.core.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet
from mizzen.xds import AdsServer, SnapshotCache, serve

HOST = "127.71.9.1"
STREAMS_PER_CHANNEL = 100


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
        return ResourceSet({
            CLUSTER: {c.name: c for c in self.clusters},
            ENDPOINT: {e.cluster_name: e for e in self.endpoints},
            LISTENER: {"0.0.0.0_9080": listener},
            ROUTE: {"9080": self.route},
        })


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


async def server_main(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    mesh = Mesh(args.clusters)
    listeners = [mesh.listener(i) for i in range(args.streams)]
    cache = SnapshotCache()

    async def on_connect(node: str, _md: dict[str, Any]) -> None:
        i = int(node.split("~")[2].split(".")[0].removeprefix("bench-"))
        cache.set_snapshot(node, mesh.resource_set(listeners[i]))

    ads = AdsServer(cache, on_connect=on_connect)
    gs = await serve(ads, args.host, 0)
    rss0 = rss_mb()
    nodes = [node_id(i) for i in range(args.streams)]
    per_proc = (args.streams + args.client_procs - 1) // args.client_procs
    procs = []
    for k in range(args.client_procs):
        first, count = k * per_proc, min(per_proc, args.streams - k * per_proc)
        if count <= 0:
            break
        procs.append(subprocess.Popen([
            sys.executable, __file__, "--client", "--target", f"{args.host}:{ads.port}",
            "--first", str(first), "--streams", str(count), "--clusters", str(args.clusters)]))
    print(f"streams={args.streams} clusters/node={args.clusters} client processes={len(procs)} "
          f"server pid={os.getpid()}")
    try:
        t0 = time.monotonic()
        await ads.status.wait_synced(nodes, timeout=max(1.0, deadline - time.monotonic()))
        t_connect = time.monotonic() - t0
        rss1 = rss_mb()
        print(f"connect + initial sync of all nodes: {t_connect:.2f} s")
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        for rnd in range(1, args.rounds + 1):
            mesh.endpoints = mesh.make_endpoints(rnd)
            mesh.route = mesh.make_route(rnd)
            sent_before = ads.responses_sent
            t_wall = time.time()
            t0 = time.monotonic()
            for i, n in enumerate(nodes):
                cache.set_snapshot(n, mesh.resource_set(listeners[i]))
            t_set = time.monotonic() - t0
            await ads.status.wait_synced(nodes, timeout=max(1.0, deadline - time.monotonic()))
            t_all = time.monotonic() - t0
            lat = [(ads.status.synced_at(n) or t_wall) - t_wall for n in nodes]
            print(f"round {rnd}: set_snapshot x{len(nodes)}: {t_set * 1000:.0f} ms; all ACKed after "
                  f"{t_all:.2f} s; per node p50 {pct(lat, 50) * 1000:.0f} ms "
                  f"p99 {pct(lat, 99) * 1000:.0f} ms max {max(lat) * 1000:.0f} ms; "
                  f"responses {ads.responses_sent - sent_before}")
        if prof is not None:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        rss2 = rss_mb()
        client_rss = sum(rss_mb(p.pid) for p in procs if p.poll() is None)
        print(f"server RSS: idle {rss0:.0f} MB, connected {rss1:.0f} MB, after pushes {rss2:.0f} MB "
              f"(~{(rss2 - rss0) * 1024 / max(1, args.streams):.0f} KB/stream); "
              f"clients RSS {client_rss:.0f} MB")
        print(f"cache memo: {cache.memo_stats()}")
    except TimeoutError as e:
        print(f"TIMEOUT: {e}")
    finally:
        await ads.shutdown(gs, 1.0)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=20, help="clusters (and EDS assignments) per node")
    ap.add_argument("--rounds", type=int, default=3, help="push rounds after the initial sync")
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--timeout", type=float, default=180.0, help="overall bound in seconds")
    ap.add_argument("--profile", action="store_true", help="cProfile the server during the push rounds")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(server_main(args))


if __name__ == "__main__":
    main()
