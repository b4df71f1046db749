"""Benchmark: the event loop's CPU for the part of a maximum-size apply that runs in the control plane's
process (load-robust: thread CPU time, no Envoys), and what it leaves on every later push.

    .venv/bin/python bench/bench_big_apply_cpu.py

An in-process ControlPlane (temp state dir) serves bench_push.py's Bookinfo-like mesh; 50 local-mode sidecars
connect to its push loop directly (no streams). bench_big_apply.py's 1,000-object body is parsed and
validated as the worker process does it (here, untimed), then timed on the loop thread: the rebuild of the
worker's answer (``parse_worker.unpack``), the staging and commit (``apply_async``), the push that merges the
big apply with an unrelated ``reviews`` change, and unrelated pushes before and after.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import vs_yaml
from bench_big_apply import big_apply
from bench_push import APPS, NS, address, bookinfo_yaml, load

from mizzen.agent.bootstrap import ProxySpec, node_metadata
from mizzen.controlplane.parse_worker import load_prepared, unpack
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload


async def run() -> None:
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-big-cpu-") as tmp:
        cp = ControlPlane(ControlPlaneOptions(state_dir=Path(tmp) / "state", xds_port=0, http_port=0))
        await cp.start()
        try:
            cp.apply(load(cp, bookinfo_yaml()))
            cp.apply(load(cp, vs_yaml("reviews", NS, (50, 50))))
            specs = []
            for i in range(50):
                app, version = APPS[i % len(APPS)]
                ip, pod, labels = address(i), f"{app}-{version}-{i}", {"app": app, "version": version}
                cp.register_workload(Workload(name=pod, namespace=NS, address=ip, labels=labels))
                specs.append(ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name=pod,
                                       admin_port=15000 + i, xds_port=cp.xds_port, labels=labels))
            await cp.pusher.push(None)
            for s in specs:
                cp.pusher.connect(s.node_id, node_metadata(s))
            await cp.flush()
            body = json.loads(big_apply())
            prepared = load_prepared([(d["text"], d["file"]) for d in body["documents"]], "bulk", 1000)

            async def unrelated(r: int) -> float:
                w = 5 + (r * 37) % 90
                change = load(cp, vs_yaml("reviews", NS, (w, 100 - w), ("v1", "v3" if r % 2 else "v2")))
                t = time.thread_time()
                cp.store.apply(change)
                await cp.flush()
                return (time.thread_time() - t) * 1000

            before = [await unrelated(r) for r in range(5)]
            t = time.thread_time()
            loaded = await unpack(prepared)
            rebuild = (time.thread_time() - t) * 1000
            t = time.thread_time()
            await cp.store.apply_async(loaded.configs, issues=list(loaded.warnings))
            staged = (time.thread_time() - t) * 1000
            merged = await unrelated(100)
            wall = cp.pusher.stats.duration_s * 1000
            after = [await unrelated(200 + r) for r in range(5)]
            print(f"loop CPU: rebuild {rebuild:.0f} ms, staging + commit {staged:.0f} ms, the merged push "
                  f"{merged:.0f} ms (wall {wall:.0f} ms); an unrelated change + push before: median "
                  f"{sorted(before)[2]:.1f} ms, after: median {sorted(after)[2]:.1f} ms")
        finally:
            await cp.stop()


if __name__ == "__main__":
    asyncio.run(run())
