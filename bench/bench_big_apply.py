"""Benchmark: a maximum-size apply (1,000 objects, ~3 MiB, over the HTTP API) while N real Envoys keep
receiving unrelated pushes: how long those pushes take to be ACKed before and during the big apply.

    .venv/bin/python bench/bench_big_apply.py                  # N=50, worker process on (the default)
    .venv/bin/python bench/bench_big_apply.py --inline         # what it was before: parsed on the event loop

An in-process ControlPlane (production debounce, ephemeral ports, temp state dir) serves bench_push.py's
Bookinfo-like mesh to N real Envoy sidecars. A loop applies a `reviews` VirtualService change every
``--interval`` seconds (store.apply) and measures apply -> every proxy ACKed. First ``--baseline`` rounds
alone, then the big apply is POSTed to /apis/apply (its objects live in namespace ``bulk`` with
``exportTo: ["."]``, so the sidecars' config does not change) and every round that overlaps the request is
counted as "during". ``--dry-run`` only parses and validates. Every Envoy is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import pstats
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import fmt_ms, pct, rss_mb, vs_yaml
from bench_push import APPS, NS, address, bookinfo_yaml, free_port, load, stop_all

from mizzen import gctune
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.controlplane import parse_worker
from mizzen.controlplane.parse_worker import MAX_BODY, MAX_OBJECTS
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload

GC_TUNED = True   # --gc: the control-plane process's GC settings (mizzen.gctune)


class StallSampler:
    """Where the event loop is while it stalls: a thread samples the loop thread's stack every ``every``
    seconds while the loop's heartbeat is older than ``over`` seconds (while :attr:`phase` is set), counted
    by the innermost frames (a stall in ``select``: the loop waits for the GIL or a CPU, it runs no code)."""

    def __init__(self, over: float = 0.02, every: float = 0.005, depth: int = 8) -> None:
        self.over, self.every, self.depth = over, every, depth
        self.beat = time.perf_counter()
        self.phase = ""   # sampling while set: the samples are counted per phase
        self.samples: dict[str, Counter[str]] = {}
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)

    async def heartbeat(self) -> None:
        while True:
            self.beat = time.perf_counter()
            await asyncio.sleep(0.002)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            phase = self.phase
            if not phase or time.perf_counter() - self.beat < self.over:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-self.depth:]
            self.samples.setdefault(phase, Counter())[" <- ".join(
                f"{Path(f.filename).stem}:{f.lineno}:{f.name}" for f in reversed(stack))] += 1

    def report(self, top: int = 15) -> None:
        for phase, samples in self.samples.items():
            total = sum(samples.values()) * self.every * 1000
            print(f"  loop stalls over {self.over * 1000:.0f} ms, {phase}: {total:.0f} ms sampled; top:")
            for where, n in samples.most_common(top):
                print(f"    {n * self.every * 1000:6.0f} ms  {where}")


def big_apply(dry_run: bool = False, objects: int = MAX_OBJECTS, budget: int = MAX_BODY - 64 * 1024) -> bytes:
    """A request body with ``objects`` VirtualServices, as close to ``budget`` bytes as they get."""
    per = budget // objects

    def vs(i: int, routes: int) -> str:
        host = f"bulk-{i}.bulk.svc.cluster.local"
        rules = "".join(
            f"  - match: [{{uri: {{prefix: /p{r}/{'a' * 24}}}, "
            f"headers: {{x-key-{r}: {{exact: value-{r}}}}}}}]\n"
            f"    route: [{{destination: {{host: {host}, subset: v{r % 3}}}, weight: 100}}]\n"
            f"    timeout: {r + 1}s\n"
            for r in range(routes))
        return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bulk-{i}}}\n"
                f"spec:\n  hosts: [{host}]\n  exportTo: [\".\"]\n  http:\n{rules}")

    routes = 1
    while len(vs(0, routes + 1)) <= per:
        routes += 1
    text = "---\n".join(vs(i, routes) for i in range(objects))
    return json.dumps({"documents": [{"file": "bulk.yaml", "text": text}], "namespace": "bulk",
                       "dry_run": dry_run}).encode()


async def run(args: argparse.Namespace, agents: list[Agent]) -> None:
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-big-") as tmp:
        cp = ControlPlane(ControlPlaneOptions(state_dir=Path(tmp) / "state", xds_port=0, http_port=0))
        await cp.start()
        if GC_TUNED:
            gctune.configure()   # what `python -m mizzen.controlplane` does once started
        if args.inline:
            cp.api.parser.inline_max_bytes = 1 << 62     # the bench's what-if: no worker process
        if args.worker_nice is not None:
            parse_worker.WORKER_NICE = args.worker_nice   # read when the worker process starts
        try:
            cp.apply(load(cp, bookinfo_yaml()))
            cp.apply(load(cp, vs_yaml("reviews", NS, (50, 50))))
            for i in range(args.proxies):
                app, version = APPS[i % len(APPS)]
                ip, pod, labels = address(i), f"{app}-{version}-{i}", {"app": app, "version": version}
                cp.register_workload(Workload(name=pod, namespace=NS, address=ip, labels=labels))
                agents.append(Agent(ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name=pod,
                                              admin_port=free_port(ip), xds_port=cp.xds_port, labels=labels),
                                    AgentOptions(log_level="warning", concurrency=1)))
            for k in range(0, len(agents), 10):
                await asyncio.gather(*(a.start(ready_timeout=60) for a in agents[k:k + 10]))
            await cp.wait_synced(timeout=60)
            nodes = [a.node_id for a in agents]
            body = big_apply(args.dry_run)
            where = "on the event loop" if args.inline else "in the worker process"
            print(f"{args.proxies} Envoys synced; big apply: {len(body) / 2**20:.2f} MiB, "
                  f"{MAX_OBJECTS} objects, parsed {where}{', dry run' if args.dry_run else ''}; "
                  f"RSS {rss_mb():.0f} MB")

            big_running = False
            t_start = time.monotonic()
            baseline: list[float] = []
            during: list[float] = []
            # per round: apply -> live (the journal record), -> push start (debounce), the push (generation
            # into the cache), push end -> last ACK; and the CPU the loop thread used meanwhile
            phases_alone: list[tuple[float, float, float, float, float]] = []
            phases_during: list[tuple[float, float, float, float, float]] = []

            async def rounds(n: int | None) -> None:
                r = 0
                while n is None or r < n:
                    r += 1
                    w = 5 + (r * 37) % 90
                    change = load(cp, vs_yaml("reviews", NS, (w, 100 - w), ("v1", "v3" if r % 2 else "v2")))
                    started_during = big_running
                    t, cpu = time.time(), time.thread_time()   # the loop thread's CPU: load-independent
                    await cp.store.apply_async(change)   # as an API client's apply: queued behind the big one
                    live = time.time() - t
                    async with asyncio.timeout(30):   # (3.11's wait_for can swallow the ticker's cancel)
                        await cp.flush()              # debounced, generated, in the cache
                    pushed, generation = time.time() - t, cp.pusher.stats.duration_s
                    await cp.wait_synced(nodes, timeout=30)
                    acks = [cp.status.synced_at(nd) for nd in nodes]
                    lat = max(a for a in acks if a is not None) - t
                    cpu = time.thread_time() - cpu
                    overlapped = started_during or big_running
                    (during if overlapped else baseline).append(lat)
                    (phases_during if overlapped else phases_alone).append(
                        (live, pushed - generation - live, generation, lat - pushed, cpu))
                    if args.verbose:
                        print(f"  round {r} at {time.monotonic() - t_start:.2f} s: {lat * 1000:.0f} ms "
                              f"(live {live * 1000:.0f}, debounce {(pushed - generation - live) * 1000:.0f}, "
                              f"push {generation * 1000:.0f}, last ACK {(lat - pushed) * 1000:.0f} ms; "
                              f"loop CPU {cpu * 1000:.0f} ms)"
                              f"{' (during)' if overlapped else ''}")
                    await asyncio.sleep(args.interval)

            stalls: list[float] = []
            sampler = StallSampler() if args.stalls else None
            beat = None
            if sampler is not None:
                sampler.start()
                beat = asyncio.create_task(sampler.heartbeat())

            async def loop_lag() -> None:
                """The event loop's stalls: how late a 1 ms sleep wakes up, while the big apply runs."""
                while True:
                    t1 = time.perf_counter()
                    await asyncio.sleep(0.001)
                    if big_running:
                        stalls.append(time.perf_counter() - t1 - 0.001)

            if sampler is not None:
                sampler.phase = "alone"
            await rounds(args.baseline)
            ticker = asyncio.create_task(rounds(None))
            lag = asyncio.create_task(loop_lag())
            async with httpx.AsyncClient(base_url=cp.http_url, timeout=300, trust_env=False) as api:
                big_running = True
                if sampler is not None:
                    sampler.phase = "during the big apply (and 1 s after)"
                t0 = time.monotonic()
                headers = {"content-type": "application/json", "authorization": f"Bearer {cp.token}"}
                prof = cProfile.Profile() if args.profile else None
                if prof is not None:
                    prof.enable()
                r = await api.post("/apis/apply", content=body, headers=headers)
                took = time.monotonic() - t0
                if args.verbose:
                    print(f"  big apply answered at {time.monotonic() - t_start:.2f} s (sent at "
                          f"{t0 - t_start:.2f} s)")
                if prof is not None:
                    await asyncio.sleep(1.0)   # the push that follows
                    prof.disable()
                big_running = False
                if sampler is not None:
                    await asyncio.sleep(1.0)   # the push that follows
                    sampler.phase = ""
                if r.status_code != 200:
                    print(f"big apply answered {r.status_code}: {r.text[:300]}")
            await asyncio.sleep(1.0)
            for t in (ticker, lag):
                while not t.done():   # cancel again if a cancel raced with an inner wait finishing
                    t.cancel()
                    await asyncio.wait({t}, timeout=0.1)
            print(f"  big apply: HTTP {r.status_code} after {took:.2f} s; RSS now {rss_mb():.0f} MB")
            for what, values in (("alone: ", baseline), ("during:", during)):
                print(f"  unrelated push -> all {args.proxies} ACKed, {what} {fmt_ms(values)} "
                      f"({len(values)} rounds)")
            for what, phases in (("alone: ", phases_alone), ("during:", phases_during)):
                if phases:
                    cols = list(zip(*phases, strict=True))
                    print(f"    {what} " + "; ".join(
                        f"{name} p50 {pct(col, 50) * 1000:.0f} / p99 {pct(col, 99) * 1000:.0f} ms"
                        for name, col in zip(("live", "debounce", "push", "last ACK", "loop CPU"), cols,
                                             strict=True)))
            if stalls:
                stalls.sort()
                print(f"  event loop stalls during the big apply: max {stalls[-1] * 1000:.0f} ms, "
                      f"p99 {pct(stalls, 99) * 1000:.0f} ms, {sum(s > 0.05 for s in stalls)} over 50 ms")
            if during:
                print(f"  p99 during the big apply: {pct(during, 99) * 1000:.0f} ms (target: under 200 ms)")
            if sampler is not None:
                if beat is not None:
                    beat.cancel()
                sampler.stop()
                sampler.report()
            if prof is not None:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        finally:
            await stop_all(agents)
            await cp.stop()


async def amain(args: argparse.Namespace) -> None:
    agents: list[Agent] = []
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await run(args, agents)
    finally:
        await stop_all(agents)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", type=int, default=50)
    ap.add_argument("--baseline", type=int, default=20, help="rounds before the big apply")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between rounds")
    ap.add_argument("--inline", action="store_true", help="parse on the event loop (no worker process)")
    ap.add_argument("--dry-run", action="store_true", help="the big apply only parses and validates")
    ap.add_argument("--verbose", action="store_true", help="print every round")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile this process from the big apply's request to 1 s after its answer")
    ap.add_argument("--worker-nice", type=int, default=None,
                    help="the parse worker's nice value (default: parse_worker.WORKER_NICE)")
    ap.add_argument("--stalls", action="store_true",
                    help="sample where the event loop stalls: alone, during the big apply (and 1 s after)")
    ap.add_argument("--gc", choices=["tuned", "default"], default="tuned",
                    help="tuned: the control-plane process's GC settings (mizzen.gctune); default: CPython's")
    args = ap.parse_args()
    global GC_TUNED
    GC_TUNED = args.gc == "tuned"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(amain(args))


if __name__ == "__main__":
    main()
