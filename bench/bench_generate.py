"""Benchmark: the CPU of one push's generation for bench_push.py's mesh, without Envoys (load-robust).

    .venv/bin/python bench/bench_generate.py                      # 50 local-mode sidecars, 40 VS changes
    .venv/bin/python bench/bench_generate.py --mode REDIRECT      # iptables-style listeners (Kubernetes)
    .venv/bin/python bench/bench_generate.py --profile            # cProfile of the pushes (CPU)

An in-process ControlPlane (ephemeral ports, temp state dir, the listener plugins registered as at start)
serves bench_push.py's Bookinfo-like mesh; N proxies with bench_push.py's node metadata connect to its push
loop directly (no streams). Each round applies a new ``reviews`` VirtualService and then pushes that change
(``Pusher.push`` of its PushRequest), measuring the process CPU time of the push: scope checks, generation of
the types the change reads (LDS, RDS), and the cache's packing. Writing to streams is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import pct, vs_yaml
from bench_push import APPS, NS, address, bookinfo_yaml, load

from mizzen.agent.bootstrap import ProxySpec, node_metadata
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType
from mizzen.core.push_request import PushRequest
from mizzen.registry.model import Workload


async def run(n: int, rounds: int, mode: str, profile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-generate-") as tmp:
        cp = ControlPlane(ControlPlaneOptions(state_dir=Path(tmp) / "state", xds_port=0, http_port=0))
        await cp.start()
        try:
            cp.apply(load(cp, bookinfo_yaml()))
            cp.apply(load(cp, vs_yaml("reviews", NS, (50, 50))))
            specs = []
            for i in range(n):
                app, version = APPS[i % len(APPS)]
                ip, pod, labels = address(i), f"{app}-{version}-{i}", {"app": app, "version": version}
                cp.register_workload(Workload(name=pod, namespace=NS, address=ip, labels=labels))
                specs.append(ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name=pod,
                                       admin_port=15000 + i, xds_port=cp.xds_port, labels=labels,
                                       interception_mode=mode))
            await cp.pusher.push(None)
            for s in specs:
                cp.pusher.connect(s.node_id, node_metadata(s))
            prof = cProfile.Profile() if profile else None
            cpu: list[float] = []
            for r in range(1, rounds + 1):
                w = 5 + (r * 37) % 90
                change = load(cp, vs_yaml("reviews", NS, (w, 100 - w), ("v1", "v3" if r % 2 else "v2")))
                cp.store.apply(change)
                await asyncio.sleep(0.15)    # the control plane's own debounced push of it runs meanwhile
                request = PushRequest.config_change([c.key for c in change], ["bench"])
                if prof is not None:
                    prof.enable()
                t0 = time.process_time()
                await cp.pusher.push(request)
                cpu.append(time.process_time() - t0)
                if prof is not None:
                    prof.disable()
            st = cp.pusher.stats
            print(f"{n} {mode} proxies, {rounds} VirtualService changes: push CPU "
                  f"p50 {pct(cpu, 50) * 1000:.1f} ms, p90 {pct(cpu, 90) * 1000:.1f} ms, "
                  f"min {min(cpu) * 1000:.1f} ms (types {', '.join(st.types)}, "
                  f"{st.proxies_pushed} proxies regenerated)")
            if prof is not None:
                pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        finally:
            await cp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--mode", choices=["NONE", "REDIRECT"], default="NONE",
                    help="the proxies' interception mode")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    asyncio.run(run(args.proxies, args.rounds, args.mode, args.profile))


if __name__ == "__main__":
    main()
