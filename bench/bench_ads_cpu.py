"""Benchmark: the ADS server's own Python per message, without gRPC or sockets (issue 9).

    .venv/bin/python bench/bench_ads_cpu.py                      # 5,000 streams, 20 rounds of --change all
    .venv/bin/python bench/bench_ads_cpu.py --streams 5000 --rounds 20 --protocol delta

``bench_xds_streams.py``'s mesh and change (``all``: new endpoints for every cluster and a new route config,
so an EDS and an RDS response per stream per round), driven through the same objects the server's streams
use on the event loop's thread: the :class:`SnapshotCache` (with one watcher per node, as each stream has),
one :class:`AdsStream` per stream with the server's shared nonces and diffs, the server's ``encode`` (the
shared serialized bodies), the :class:`SyncStatus` events and ``is_synced`` as the status waiters and the
control plane's convergence metric run it at each ACK. What is left out is gRPC's (the write, the read,
the completions and their task wake-ups) and the event loop's. Prints the least thread CPU per round of
each phase and per message (us), so a change to our per-message Python is measured without the noise of
a 5,000-stream run.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_xds_streams import Mesh, node_id

from mizzen.xds import AdsServer, SnapshotCache
from mizzen.xds.ads import AdsStream, DeltaResponse, Response, SotwResponse
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.xds.status import ProxyStatus


class Client:
    """One simulated Envoy's requests: what it subscribes to, and its ACK of a response."""

    def __init__(self, i: int, clusters: list[str], delta: bool) -> None:
        self.node = node_id(i)
        self.delta = delta
        self.subs: dict[str, list[str]] = {CLUSTER: [], ENDPOINT: clusters, LISTENER: [], ROUTE: ["9080"]}

    def initial(self) -> list[Any]:
        out: list[Any] = []
        for t, names in self.subs.items():
            if self.delta:
                req: Any = discovery_pb2.DeltaDiscoveryRequest(type_url=t, resource_names_subscribe=names)
            else:
                req = discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names)
            if t == CLUSTER:
                req.node.id = self.node
            out.append(req)
        return out

    def ack(self, resp: Response) -> Any:
        if isinstance(resp, DeltaResponse):
            return discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
        assert isinstance(resp, SotwResponse)
        return discovery_pb2.DiscoveryRequest(type_url=resp.type_url, version_info=resp.tsnap.version,
                                              response_nonce=resp.nonce,
                                              resource_names=self.subs.get(resp.type_url, []))


class Marks:
    """Phase boundaries: the thread CPU time at each; with ``--instructions`` (this process under callgrind)
    also this thread's instructions between marks, by phase (a count: other load on the machine does not
    change it)."""

    def __init__(self) -> None:
        out = os.environ.get("MIZZEN_CALLGRIND_OUT")
        self.out = Path(out) if out else None
        self.phases: list[str | None] = []   # the phase of each dump, in order
        self._todo: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._done = threading.Event()
        if self.out is not None:
            threading.Thread(target=self._control, daemon=True).start()

    def mark(self, phase: str | None) -> float:
        """End the segment since the last mark, counted for ``phase`` (None: not counted)."""
        if self.out is not None:
            # callgrind_control runs in another thread (this one's instructions are counted); callgrind takes
            # the dump while a thread runs code, so this one wakes up now and then (a few instructions)
            self._done.clear()
            self._todo.put(None)
            while not self._done.wait(0.05):
                pass
            self.phases.append(phase)
        return time.thread_time()

    def _control(self) -> None:
        cmd = ["callgrind_control", "-d", str(os.getpid())]
        while True:
            self._todo.get()
            subprocess.run(cmd, capture_output=True, check=True)
            self._done.set()

    def counts(self) -> Counter[str]:
        """Instructions by phase (read from the dumps once the rounds are over)."""
        assert self.out is not None
        out: Counter[str] = Counter()
        for dump in self.out.parent.glob(self.out.name + ".*"):
            m = re.fullmatch(r"\.(\d+)-0*1", dump.name[len(self.out.name):])   # the main thread's
            total = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.M)
            if m and total:
                phase = self.phases[int(m.group(1)) - 1]
                if phase is not None:
                    out[phase] += int(total.group(1))
        return out


def run(args: argparse.Namespace) -> None:
    delta = args.protocol == "delta"
    mesh = Mesh(args.clusters)
    listeners = [mesh.listener(i) for i in range(args.streams)]
    cache = SnapshotCache()
    server = AdsServer(cache)
    status = server.status
    clients = [Client(i, mesh.names, delta) for i in range(args.streams)]
    streams: list[AdsStream] = []
    woken = [0]

    def changed() -> None:
        woken[0] += 1

    for i, c in enumerate(clients):
        cache.set_snapshot(c.node, mesh.resource_set(listeners[i]))
        ps = ProxyStatus(c.node, i + 1, delta=delta)
        status.connect(ps)
        ads = AdsStream(ps, delta=delta, diffs=server.diffs, events=status, nonces=server.nonces)
        cache.watch(c.node, changed)
        ads.snapshot = cache.get(c.node)
        handle = ads.delta_request if delta else ads.sotw_request
        todo = c.initial()
        while todo:
            for resp in handle(todo.pop(0)):
                server.encode(resp)
                todo.append(c.ack(resp))
        assert status.is_synced(c.node), status.describe([c.node])
        streams.append(ads)
    print(f"{args.streams} streams ({'delta' if delta else 'SotW'}), {args.clusters} clusters each: "
          f"connected and synced", flush=True)

    phases: dict[str, list[float]] = {k: [] for k in ("cache", "stream", "encode", "ack", "synced")}
    msgs = acks = 0
    prof = cProfile.Profile() if args.profile else None
    marks = Marks()
    mark = marks.mark
    gc.collect()
    gc.disable()   # the server's push window: no young pass inside a round
    try:
        for rnd in range(1, args.rounds + 1):
            mesh.change(args.change, rnd)
            sets = [mesh.resource_set(listener) for listener in listeners]
            t0 = mark(None)
            for c, rs in zip(clients, sets, strict=True):
                cache.set_snapshot(c.node, rs)
            t1 = mark("cache")
            if prof is not None:   # the server's own phases only (its times are inflated by the profiler)
                prof.enable()
            out = [ads.set_snapshot(cache.get(ads.node_id)) for ads in streams]
            t2 = mark("stream")
            encode = server.encode
            for responses in out:
                for resp in responses:
                    encode(resp)
            t3 = mark("encode")
            requests = [[c.ack(r) for r in responses] for c, responses in zip(clients, out, strict=True)]
            msgs = sum(map(len, out))
            acks = sum(map(len, requests))
            handles = [ads.delta_request if delta else ads.sotw_request for ads in streams]
            t4 = mark(None)   # the clients' ACKs
            for handle, reqs in zip(handles, requests, strict=True):
                for req in reqs:
                    if handle(req):
                        raise SystemExit("an ACK caused a response")
            t5 = mark("ack")
            is_synced = status.is_synced
            for ads, reqs in zip(streams, requests, strict=True):   # the waiters' check at each ACK
                for _ in reqs:
                    is_synced(ads.node_id)
            t6 = mark("synced")
            if prof is not None:
                prof.disable()
            for ads in streams:
                if not is_synced(ads.node_id):
                    raise SystemExit(f"not synced: {status.describe([ads.node_id])}")
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5), strict=True):
                phases[k].append(v)
            del out, requests, sets
    finally:
        gc.enable()
    n = args.streams
    # the least of the rounds: other processes on a shared machine only ever add to a phase's CPU time
    # (cache misses, frequency), so the minimum is the most repeatable estimate; the median is shown too
    med = {k: min(v) for k, v in phases.items()}
    total = sum(med.values())
    median_total = statistics.median(map(sum, zip(*phases.values(), strict=True)))
    print(f"per round ({args.rounds} rounds, the least thread CPU of the rounds; {msgs / n:.2f} responses "
          f"and {acks / n:.2f} ACKs per stream): total {total * 1000:.1f} ms (median of the rounds' totals "
          f"{median_total * 1000:.1f} ms)")
    per = {"cache": n, "stream": msgs, "encode": msgs, "ack": acks, "synced": acks}
    what = {"cache": "cache.set_snapshot, per node", "stream": "AdsStream.set_snapshot, per response",
            "encode": "AdsServer.encode, per response", "ack": "AdsStream request (ACK), per ACK",
            "synced": "SyncStatus.is_synced, per ACK"}
    for k, v in med.items():
        print(f"  {what[k]:<40} {v * 1000:7.1f} ms  {v / max(1, per[k]) * 1e6:6.2f} us")
    print(f"  {'per stream per round':<40} {total * 1000:7.1f} ms  {total / n * 1e6:6.2f} us")
    if marks.out is not None:
        print(f"instructions (this thread, under valgrind; {args.rounds} rounds):")
        counts = marks.counts()
        for k, v in counts.items():
            print(f"  {what[k]:<40} {v / args.rounds / max(1, per[k]) / 1000:7.2f}k")
        print(f"  {'per stream per round':<40} {sum(counts.values()) / args.rounds / n / 1000:7.2f}k")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--protocol", choices=["sotw", "delta"], default="sotw")
    ap.add_argument("--change", default="all", choices=["all", "one-cluster", "one-endpoint"])
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile the server's phases (stream, encode, ACK, synced; not the cache) and "
                         "print the N functions with the most own time (the profiler inflates their times)")
    ap.add_argument("--instructions", action="store_true",
                    help="count each phase's instructions under valgrind's callgrind (a count, not a time: "
                         "for A/B on a busy machine; ~20x slower)")
    args = ap.parse_args()
    if args.instructions and not os.environ.get("MIZZEN_CALLGRIND_OUT"):
        if shutil.which("valgrind") is None:
            sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                   sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
            env = {**os.environ, "MIZZEN_CALLGRIND_OUT": str(out)}
            sys.exit(subprocess.run(cmd, env=env, stderr=subprocess.DEVNULL).returncode)
    run(args)


if __name__ == "__main__":
    main()
