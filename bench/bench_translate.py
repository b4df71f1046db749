"""Benchmark: translating a large mesh (1,000 services by default) and the control plane's memory per proxy.

    .venv/bin/python bench/bench_translate.py                       # 1000 services, 200 proxies in the cache
    .venv/bin/python bench/bench_translate.py --proxies 2000        # the issue's 2,000 proxies (slower)
    .venv/bin/python bench/bench_translate.py --profile             # cProfile top hotspots

Pure, in one process, no network: load + validate the YAML, registry snapshot, PushContext.build, then
``mizzen.core.generate.generate`` for one sidecar and one gateway (seconds, resources and bytes per type).
Then K sidecars (distinct workloads) are generated into a SnapshotCache, like a push to K connected proxies,
and the RSS growth is reported per proxy and extrapolated (linearly, and labelled as such) to --target.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MeshShape, mesh_workloads, mesh_yaml, rss_mb
from google.protobuf import any_pb2

from mizzen.agent.bootstrap import ProxySpec, node_metadata
from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy, ProxyType
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry
from mizzen.xds import SnapshotCache
from mizzen.xds.resources import SHORT, ResourceSet

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float]:
    """Run ``fn`` ``repeat`` times; its last result and the median CPU seconds of this process (robust to
    other load on a shared machine; the work is single-threaded, so it is close to wall time when idle)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    assert result is not None
    return result, statistics.median(times)


def proxy_for(ptype: ProxyType, ip: str, namespace: str, name: str, labels: dict[str, str]) -> Proxy:
    spec = ProxySpec(type=ptype, ip=ip, namespace=namespace, name=name, admin_port=15000, labels=labels)
    return Proxy.from_node(spec.node_id, node_metadata(spec))


def describe(rs: ResourceSet) -> str:
    parts = []
    for type_url, items in rs.by_type.items():
        size = sum(m.ByteSize() for m in items.values())
        parts.append(f"{SHORT.get(type_url, type_url)} {len(items)} ({size / 1024:.0f} KB)")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--workloads", type=int, default=3, help="instances per service")
    ap.add_argument("--proxies", type=int, default=200, help="sidecars generated into the SnapshotCache")
    ap.add_argument("--target", type=int, default=2000, help="proxy count to extrapolate memory to")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (median printed)")
    ap.add_argument("--time-budget", type=float, default=150.0,
                    help="stop filling the cache after this many seconds (reports how many were done)")
    ap.add_argument("--max-rss", type=float, default=2000.0,
                    help="stop filling the cache once the process RSS passes this many MB")
    ap.add_argument("--store", choices=("cache", "dedup"), default="cache",
                    help="cache: the real SnapshotCache; dedup: a what-if content-deduplicated store (see "
                         "DedupStore) to size what sharing resources across proxies would save")
    ap.add_argument("--profile", action="store_true", help="cProfile build + generate; print the top 25")
    args = ap.parse_args()

    shape = MeshShape(services=args.services, namespaces=args.namespaces, workloads=args.workloads)
    rss_start = rss_mb()
    text = mesh_yaml(shape)
    loaded, t_load = timed(lambda: load_text(text, "mesh.yaml"))
    if loaded.errors:
        sys.exit(f"mesh YAML invalid: {loaded.errors[:3]}")
    configs = ConfigSnapshot.of(loaded.configs)
    kinds = {k: len(v) for k, v in configs.by_kind.items()}
    pods = mesh_workloads(shape)
    registry = Registry()
    registry.set_configs(configs)
    for ns, pod, addr, labels in pods:
        registry.register_workload(Workload(name=pod, namespace=ns, address=addr, labels=labels))

    def snapshot() -> object:
        registry.set_configs(ConfigSnapshot())     # drop the cached snapshot so it is rebuilt
        registry.set_configs(configs)
        return registry.snapshot()

    _, t_snap = timed(snapshot, args.repeat)
    reg = registry.snapshot()
    push, t_build = timed(lambda: PushContext.build(configs, reg), args.repeat)
    ns0, pod0, addr0, labels0 = pods[0]
    sidecar = proxy_for(ProxyType.SIDECAR, addr0, ns0, pod0, labels0)
    gateway = proxy_for(ProxyType.ROUTER, "10.255.0.1", "istio-system", "istio-ingressgateway-0",
                        {"istio": "ingressgateway", "app": "istio-ingressgateway"})
    rs_side, t_side = timed(lambda: generate(sidecar, push), args.repeat)
    rs_gw, t_gw = timed(lambda: generate(gateway, push), args.repeat)
    print(f"mesh: {args.services} services in {args.namespaces} namespaces, {len(pods)} workloads, objects "
          + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print("times are median CPU seconds of this process")
    print(f"load + validate YAML ({len(text) / 1024:.0f} KB): {t_load * 1000:.1f} ms")
    print(f"registry snapshot:        {t_snap * 1000:.1f} ms  ({len(reg.services)} services, "
          f"{sum(len(e) for e in reg.endpoints.values())} endpoints)")
    print(f"PushContext.build:        {t_build * 1000:.1f} ms")
    print(f"generate(sidecar):        {t_side * 1000:.1f} ms  {describe(rs_side)}")
    print(f"generate(gateway):        {t_gw * 1000:.1f} ms  {describe(rs_gw)}")
    total = t_snap + t_build + t_side + t_gw
    print(f"full translate (snapshot + build + 1 sidecar + 1 gateway): {total * 1000:.1f} ms")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        p2 = PushContext.build(configs, reg)
        generate(sidecar, p2)
        generate(gateway, p2)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)

    # --- memory: K proxies' snapshots in a SnapshotCache (or the what-if store) ---
    gc.collect()
    rss0 = rss_mb()
    store = SnapshotCache() if args.store == "cache" else DedupStore()
    deadline = time.monotonic() + args.time_budget
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for k in range(args.proxies):
        ns, pod, addr, labels = pods[k % len(pods)]
        p = proxy_for(ProxyType.SIDECAR, addr, ns, pod, labels)
        store.set_snapshot(p.id, generate(p, push))
        done += 1
        if time.monotonic() > deadline:
            print(f"time budget reached after {done} of {args.proxies} proxies")
            break
        if rss_mb() > args.max_rss:
            print(f"RSS budget ({args.max_rss:.0f} MB) reached after {done} of {args.proxies} proxies")
            break
    t_fill, c_fill = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    rss1 = rss_mb()
    per_proxy = (rss1 - rss0) / max(1, done)
    each_ms = c_fill / max(1, done) * 1000
    what = "SnapshotCache" if args.store == "cache" else "what-if DedupStore (NOT the real cache)"
    print(f"\n{done} sidecars generated + stored in the {what} in {t_fill:.1f} s wall, {c_fill:.1f} s CPU "
          f"({each_ms:.0f} ms CPU each: a full push to {done} proxies on one core)")
    print(f"RSS: start {rss_start:.0f} MB, mesh loaded + translated {rss0:.0f} MB, "
          f"with {done} snapshots {rss1:.0f} MB -> {per_proxy * 1024:.0f} KB per proxy "
          f"({store.memo_stats()})")
    if done < args.target:
        est = rss1 + per_proxy * (args.target - done)
        print(f"ESTIMATE (linear extrapolation from {done} measured proxies, not measured): "
              f"{args.target} proxies -> ~{est:.0f} MB control-plane RSS; a full push to them "
              f"~{c_fill / max(1, done) * args.target:.0f} s of generation on one core")
    else:
        print(f"MEASURED: {done} proxies -> {rss1:.0f} MB control-plane RSS")


class DedupStore:
    """What-if storage (``--store dedup``), not used by Mizzen: each resource serialized once per content
    and shared by every node, the generated messages dropped after packing. A reference point for the real
    SnapshotCache, which shares per-type content between nodes by message identity and keeps the shared
    source messages (its identity memo)."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, any_pb2.Any] = {}
        self._nodes: dict[str, dict[str, dict[str, any_pb2.Any]]] = {}
        self._packed = 0

    def set_snapshot(self, node_id: str, resources: ResourceSet) -> None:
        snap: dict[str, dict[str, any_pb2.Any]] = {}
        for type_url, items in resources.by_type.items():
            out = snap[type_url] = {}
            for name, msg in items.items():
                data = msg.SerializeToString(deterministic=True)
                key = hashlib.blake2b(data, digest_size=16).digest()
                packed = self._by_digest.get(key)
                if packed is None:
                    packed = self._by_digest[key] = any_pb2.Any(type_url=type_url, value=data)
                out[name] = packed
                self._packed += 1
        self._nodes[node_id] = snap

    def memo_stats(self) -> dict[str, int]:
        return {"unique resources": len(self._by_digest), "resources stored": self._packed}

if __name__ == "__main__":
    main()
