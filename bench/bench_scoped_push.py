"""Benchmark: the push loop on a large mesh (1,000 services / 2,000 proxies by default), in one process.

    .venv/bin/python bench/bench_scoped_push.py                    # 1000 services, 2000 proxies
    .venv/bin/python bench/bench_scoped_push.py --proxies 500      # quicker
    .venv/bin/python bench/bench_scoped_push.py --profile join     # cProfile one workload join (or: full)

The real ``Pusher`` and ``SnapshotCache`` (no ADS streams: what is measured ends with every affected
proxy's new snapshot built, packed and its streams woken). Reports, in CPU seconds of this process:

- connect: each proxy generated once from the current PushContext (the initial sync);
- full push: one push of everything to every proxy (a new PushContext, nothing carried over);
- workload join / leave: from ``register_workload`` to every affected proxy's new EDS snapshot (registry
  update + push), median and max over ``--joins`` joins, and how many proxies changed;
- RSS after ``--repushes`` unrelated re-pushes (a config change in a namespace no proxy can see), then after
  ``--full-repushes`` full pushes of everything (new messages for the same content).

It also runs against the code before the push redesign (which has no PushRequest): there a workload join
is a registry rebuild plus a full push, and the unrelated change is a full push too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MeshShape, mesh_workloads, mesh_yaml, rss_mb

from mizzen.agent.bootstrap import ProxySpec, node_metadata
from mizzen.config.loader import load_text
from mizzen.config.model import Config, ConfigSnapshot
from mizzen.controlplane.push import Pusher
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry
from mizzen.xds import SnapshotCache
from mizzen.xds.server import ResponseBodies

try:   # the push redesign
    from mizzen.core.push_request import ConfigKey, PushRequest, WorkloadKey
    from mizzen.xds.resources import ENDPOINT
    SCOPED = True
except ImportError:   # the code before it: every push is a full push
    from mizzen.xds.resources import ENDPOINT  # type: ignore[import-not-found, no-redef]
    SCOPED = False


def cpu() -> float:
    return time.process_time()


async def run(args: argparse.Namespace) -> None:
    shape = MeshShape(services=args.services, namespaces=args.namespaces, workloads=args.workloads)
    loaded = load_text(mesh_yaml(shape), "mesh.yaml")
    if loaded.errors:
        sys.exit(f"mesh YAML invalid: {loaded.errors[:3]}")
    configs = ConfigSnapshot.of(loaded.configs)
    pods = mesh_workloads(shape)
    registry = Registry()
    registry.set_configs(configs)
    for ns, pod, addr, labels in pods:
        registry.register_workload(Workload(name=pod, namespace=ns, address=addr, labels=labels))
    registry.snapshot()
    state = {"configs": configs}
    cache = SnapshotCache()
    pusher = Pusher(cache, lambda: state["configs"], registry.snapshot, MeshConfig())
    print(f"code: {'push redesign (scoped pushes)' if SCOPED else 'before the push redesign'}; mesh: "
          f"{args.services} services in {args.namespaces} namespaces, {len(pods)} workloads; "
          f"{args.proxies} sidecar proxies; times are CPU seconds of this process")

    gc.collect()
    rss0 = rss_mb()
    c0 = cpu()
    for k in range(args.proxies):
        ns, pod, addr, labels = pods[k % len(pods)]
        spec = ProxySpec(type=ProxyType.SIDECAR, ip=addr, namespace=ns, name=pod, admin_port=15000,
                         labels=labels)
        pusher.connect(spec.node_id, node_metadata(spec))
    gc.collect()
    print(f"connect {args.proxies} proxies: {cpu() - c0:.1f} s CPU; RSS {rss0:.0f} -> {rss_mb():.0f} MB")

    async def full() -> None:
        await pusher.push(PushRequest.everything(["bench"]) if SCOPED else ["bench"])

    if args.profile == "full":
        prof = cProfile.Profile()
        prof.enable()
    c0 = cpu()
    await full()
    t_full = cpu() - c0
    if args.profile == "full":
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
    gc.collect()
    print(f"full push to {len(pusher.proxies)} proxies: {t_full:.1f} s CPU; RSS {rss_mb():.0f} MB")

    # --- a workload joins (and later leaves) one service; a different service each time ---
    joins, leaves, changed, serialize = [], [], [], []
    for j in range(args.joins):
        ns, pod, addr, labels = pods[(j * 7919) % len(pods)]
        w = Workload(name=f"joiner-{j}", namespace=ns, address=f"10.250.{j // 250}.{j % 250 + 1}",
                     labels=labels)
        if args.profile == "join" and j == 0:
            prof = cProfile.Profile()
            prof.enable()
        c0 = cpu()
        if SCOPED:
            services = registry.register_workload(w)
            await pusher.push(PushRequest.endpoint_change(services, [WorkloadKey(ns, w.name, w.address)]))
        else:
            registry.register_workload(w)
            await pusher.push(["join"])
        joins.append(cpu() - c0)
        # the SotW EDS responses the woken streams will send: serialized once per distinct content
        c0 = cpu()
        bodies = ResponseBodies()
        seen: set[int] = set()
        for node in pusher.proxies:
            snap = cache.get(node)
            if snap is not None and id(snap.of(ENDPOINT)) not in seen:
                seen.add(id(snap.of(ENDPOINT)))
                bodies.get(snap.of(ENDPOINT), None)
        serialize.append(cpu() - c0)
        if args.profile == "join" and j == 0:
            prof.disable()
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
        changed.append(getattr(pusher.stats, "proxies_changed", pusher.stats.proxies_pushed))
        c0 = cpu()
        if SCOPED:
            services = registry.remove_workload(ns, w.name) or frozenset()
            await pusher.push(PushRequest.endpoint_change(services, [WorkloadKey(ns, w.name, w.address)]))
        else:
            registry.remove_workload(ns, w.name)
            await pusher.push(["leave"])
        leaves.append(cpu() - c0)
    print(f"workload join ({args.joins}x): median {statistics.median(joins) * 1000:.1f} ms, "
          f"max {max(joins) * 1000:.1f} ms CPU; proxies whose config changed: median "
          f"{statistics.median(changed):.0f} of {len(pusher.proxies)}")
    print(f"  + serializing the new EDS responses once per distinct content (SotW, all assignments): median "
          f"{statistics.median(serialize) * 1000:.1f} ms CPU")
    print(f"workload leave ({args.joins}x): median {statistics.median(leaves) * 1000:.1f} ms, "
          f"max {max(leaves) * 1000:.1f} ms CPU")

    # --- unrelated re-pushes ---
    unrelated: list[Config] = []
    rss_after: list[float] = []
    times: list[float] = []
    for i in range(args.repushes):
        vs = Config("VirtualService", "networking.istio.io/v1", f"unrelated-{i}", "nobody-here",
                    {"hosts": [f"unrelated-{i}.example.com"], "exportTo": ["."],
                     "http": [{"route": [{"destination": {"host": f"unrelated-{i}.example.com"}}]}]})
        unrelated.append(vs)
        state["configs"] = ConfigSnapshot.of([*configs, *unrelated])
        c0 = cpu()
        if SCOPED:
            await pusher.push(PushRequest.config_change([ConfigKey(vs.kind, vs.namespace, vs.name)]))
        else:
            await pusher.push(["unrelated"])
        times.append(cpu() - c0)
        gc.collect()
        rss_after.append(rss_mb())
    print(f"{args.repushes} unrelated config changes (a VS in a namespace with no proxies): median "
          f"{statistics.median(times) * 1000:.0f} ms CPU each; RSS after each: "
          + ", ".join(f"{r:.0f}" for r in rss_after) + " MB")
    rss_after, times = [], []
    for _ in range(args.full_repushes):
        c0 = cpu()
        await full()
        times.append(cpu() - c0)
        gc.collect()
        rss_after.append(rss_mb())
    print(f"{args.full_repushes} full pushes of everything (new messages, same content): median "
          f"{statistics.median(times):.1f} s CPU each; RSS after each: "
          + ", ".join(f"{r:.0f}" for r in rss_after) + " MB")
    stats: Any = cache.memo_stats()
    print(f"cache: {stats}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--workloads", type=int, default=3, help="instances per service")
    ap.add_argument("--proxies", type=int, default=2000)
    ap.add_argument("--joins", type=int, default=10)
    ap.add_argument("--repushes", type=int, default=10, help="unrelated config changes")
    ap.add_argument("--full-repushes", type=int, default=3, help="full pushes of everything after them")
    ap.add_argument("--profile", choices=("join", "full"), help="cProfile one join or the full push")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
