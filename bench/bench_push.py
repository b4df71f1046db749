"""Benchmark: config change -> every real Envoy sidecar ACKed it (push latency), with N = 10 and 50 Envoys.

    .venv/bin/python bench/bench_push.py                            # N=10,50; production debounce; 20 rounds
    .venv/bin/python bench/bench_push.py --proxies 50 --debounce prod,0.005 --rounds 40

An in-process ControlPlane (ephemeral ports, temp state dir) serves a Bookinfo-like mesh (Services,
DestinationRules with subsets, registered workloads) to N real Envoy sidecars (concurrency 1, each on its own
127.x address and registered as a workload). Each round applies a VirtualService change (reviews weights)
and waits for every proxy to ACK; per proxy the latency is its last ACK time minus the apply time. The
first ``--warmup`` rounds (default 1) after start-up are reported apart, not counted. The apply
(``--apply``) is what ``mizzen apply`` does by default (``http``: the YAML POSTed to /apis/apply by a client
process with the CLI's HTTP client, parsed and validated by the API, ``store.apply_async``: the journal
record written on the journal thread), or ``async`` (``store.apply_async`` of parsed objects, in process)
or ``sync`` (``store.apply``: the journal record fsynced on the event loop, what this bench did before).
The split comes from push stats: debounce wait (apply -> push start), generate (the push itself), then
send + Envoy apply + ACK (push end -> last ACK). RSS: this process (control plane + bench) and all
Envoys. Every Envoy is stopped at the end, on Ctrl-C too (and they die with this process anyway:
PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import pstats
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_ms, pct, pss_mb, rss_mb, vs_yaml

if "--grpc-defaults" not in sys.argv:   # (gRPC's own settings: for A/B, also with older code)
    from mizzen.controlplane import grpcenv
    grpcenv.configure()   # the control plane process's gRPC settings, before anything below loads grpc

from mizzen import eventloop, gctune
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.auth.token import TOKEN_ENV
from mizzen.config.model import Config
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy, ProxyType
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT, ResourceSet

NS = "bookinfo"
PROD = ControlPlaneOptions()
# (app, version, service account): Bookinfo's deployments, cycled to give N sidecars
APPS = [("productpage", "v1"), ("details", "v1"), ("ratings", "v1"), ("reviews", "v1"), ("reviews", "v2"),
        ("reviews", "v3")]
SUBSETS = {"productpage": ["v1"], "details": ["v1", "v2"], "ratings": ["v1", "v2"],
           "reviews": ["v1", "v2", "v3"]}
_SUBNET = 1 + os.getpid() % 200


GC_TUNED = True   # --gc: the control-plane process's GC settings (mizzen.gctune)
TRACE = False     # --trace: one line per round (stages, CPU, gc passes, the Envoys' CPU, what was sent)
APPLY = "http"    # --apply: http (what `mizzen apply` runs), async (store.apply_async), sync (store.apply)
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
ENVOY_NICE = 0     # --envoy-nice: a diagnostic (what the Envoys taking the CPUs from the control plane costs)
LEAD: float | None = None   # --lead: the debouncer's leading edge (None: ControlPlaneOptions' default)
nan = float("nan")   # a push stat the code under test does not report (A/B against older code)


class GcLog:
    """Every collection of this process: (generation, wall start, wall end), via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, float, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.time()
        else:
            self.passes.append((info["generation"], self._start, time.time()))

    def within(self, t0: float, t1: float) -> list[tuple[int, float]]:
        """(generation, seconds) of the passes that began in [t0, t1]."""
        return [(g, b - a) for g, a, b in self.passes if t0 <= a <= t1]


def cpu_split(pid: int | None = None) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of a process (this one by default), from the scheduler's
    nanosecond counters (``/proc/<pid>/task/<tid>/schedstat``; /proc's stat counts 10 ms ticks); (0, 0) if
    it is gone."""
    pid = os.getpid() if pid is None else pid
    main = rest = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if int(tid) == pid:
            main += ns / 1e9
        else:
            rest += ns / 1e9
    return main, rest


def loop_waited() -> float:
    """Seconds this process's main thread (the event loop) has spent runnable but waiting for a CPU (the
    scheduler's run delay, ``schedstat``'s second field)."""
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def renice(pid: int | None, nice: int) -> None:
    """Every thread of the process (Linux's nice is per thread) at ``nice``."""
    if pid is None:
        return
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds of a process, all threads (see :func:`cpu_split`)."""
    return sum(cpu_split(pid))


def envoys_cpu(agents: list[Agent]) -> tuple[float, float]:
    """(main threads, other threads) CPU seconds of all the Envoys."""
    splits = [cpu_split(a.pid) for a in agents if a.pid is not None]
    return sum(m for m, _ in splits), sum(o for _, o in splits)


def bookinfo_yaml() -> str:
    docs = []
    for app, subsets in SUBSETS.items():
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {app}, labels: {{app: {app}}}}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 9080}}]
""")
        subs = "".join(f"\n  - name: {v}\n    labels: {{version: {v}}}" for v in subsets)
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {app}}}
spec:
  host: {app}
  subsets:{subs}
""")
    return "---\n".join(docs)


def address(i: int) -> str:
    return f"127.73.{_SUBNET + i // 250}.{i % 250 + 2}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Result:
    proxies: int
    debounce: str
    apply: str = ""
    latencies: list[float] = field(default_factory=list)   # per proxy per round, seconds
    rounds_all: list[float] = field(default_factory=list)  # apply -> last proxy ACKed, per round
    debounce_wait: list[float] = field(default_factory=list)
    live: list[float] = field(default_factory=list)       # apply -> the change is live (store listeners)
    generate: list[float] = field(default_factory=list)
    send_ack: list[float] = field(default_factory=list)
    startup_s: float = 0.0
    cp_rss: float = 0.0
    envoy_rss: float = 0.0
    envoy_pss: float = 0.0
    timeouts: int = 0
    unchanged: int = 0        # proxy-rounds without a new ACK (config unchanged for that proxy)
    warmup: list[float] = field(default_factory=list)      # the warm-up rounds' apply -> last proxy ACKed


def load(cp: ControlPlane, text: str) -> list[Config]:
    result = cp.api.loader(text, "bench.yaml", NS)
    if result.errors:
        raise SystemExit(f"bench config invalid: {result.errors}")
    return list(result.configs)


# --apply http: a client process applying as `mizzen apply -f vs.yaml -n bookinfo` does (its HTTP client, one
# request per apply), one JSON line per apply on stdin; it answers with the wall time just before its request
CLIENT = """
import json, sys, time
from mizzen.client import ControlPlaneClient, Document
client = ControlPlaneClient(sys.argv[1])   # the token from $MIZZEN_TOKEN, as the CLI reads it
for line in sys.stdin:
    change = json.loads(line)
    t = time.time()
    client.apply([Document("vs.yaml", change["text"])], change["namespace"])
    print(json.dumps({"t": t}), flush=True)
"""


class ApplyClient:
    """The ``--apply http`` client process (stopped by :meth:`close`)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cp: ControlPlane) -> ApplyClient:
        env = {**os.environ, TOKEN_ENV: cp.token or ""}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, cp.http_url, env=env,
                                                    stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def apply(self, text: str) -> float:
        """Apply; returns the wall time the client sent its request at."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"text": text, "namespace": NS}).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the apply client exited ({await self.proc.wait()})")
        t: float = json.loads(line)["t"]
        return t

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(3):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class TimedGenerator:
    """``core.generate.generate`` (the control plane's default generator, passed in at the seam), counting its
    CPU: the rest of the push's in-generator CPU is the cache packing and storing the result."""

    def __init__(self) -> None:
        self.cpu_s = 0.0

    def __call__(self, proxy: Proxy, push: PushContext, types: Collection[str] | None) -> ResourceSet:
        c0 = time.thread_time()
        try:
            return generate(proxy, push, types)
        finally:
            self.cpu_s += time.thread_time() - c0


def memo_built(before: Mapping[Hashable, Any], after: Mapping[Hashable, Any]) -> str:
    """What a push built into its PushContext's memo (entries new or replaced since ``before``), by tag:
    the misses; everything else it asked for was carried over (hits)."""
    tags = Counter(k[0] if isinstance(k, tuple) and k else "?" for k, v in after.items()
                   if before.get(k, _NONE) is not v)
    return " ".join(f"{t}:{n}" for t, n in sorted(tags.items())) or "-"


_NONE = object()


def sent_by_type(cp: ControlPlane) -> dict[str, float]:
    """Responses written so far per xDS type (``pilot_xds_pushes``)."""
    return {t: cp.metrics.registry.get_sample_value("pilot_xds_pushes_total", {"type": SHORT[t].lower()})
            or 0.0 for t in TYPES}


def describe_snapshot(cp: ControlPlane, node: str) -> str:
    """One proxy's config as sent: resources and bytes per type, the route configs' virtual hosts."""
    from envoy.config.route.v3 import route_pb2

    snap = cp.cache.get(node)
    if snap is None:
        return "no snapshot"
    parts = []
    for t in TYPES:
        res = snap.of(t).resources
        parts.append(f"{SHORT[t]} {len(res)} ({sum(len(p.any.value) for p in res.values()) / 1024:.1f} KiB)")
    vhosts = domains = routes = 0
    for p in snap.of(ROUTE).resources.values():
        rc = route_pb2.RouteConfiguration.FromString(p.any.value)
        vhosts += len(rc.virtual_hosts)
        domains += sum(len(v.domains) for v in rc.virtual_hosts)
        routes += sum(len(v.routes) for v in rc.virtual_hosts)
    return f"{', '.join(parts)}; route configs: {vhosts} virtual hosts, {domains} domains, {routes} routes"


async def run_one(n: int, debounce: str, rounds: int, agents: list[Agent],
                  prof: cProfile.Profile | None = None, gap: float = 0.05, warmup: int = 1) -> Result:
    quiet = PROD.debounce_quiet_s if debounce == "prod" else float(debounce)
    max_delay = PROD.debounce_max_s if debounce == "prod" else max(quiet, 10 * quiet, 0.05)
    lead = PROD.debounce_lead_s if LEAD is None else LEAD
    lead_ms = "none" if lead is None else f"{lead * 1000:g} ms"
    res = Result(n, f"{debounce} (quiet {quiet * 1000:g} ms, max {max_delay * 1000:g} ms, leading edge "
                    f"{lead_ms})", APPLY)
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-push-") as tmp:
        timed = TimedGenerator()
        cp = ControlPlane(ControlPlaneOptions(state_dir=Path(tmp) / "state", xds_port=0, http_port=0,
                                              debounce_quiet_s=quiet, debounce_max_s=max_delay,
                                              debounce_lead_s=lead), generator=timed if TRACE else None)
        await cp.start()
        if GC_TUNED:
            gctune.configure()   # what `python -m mizzen.controlplane` does once started
            cp.ads.on_round = gctune.PushWindow()   # ... and no young pass in the middle of a push round
        client: ApplyClient | None = None
        try:
            cp.apply(load(cp, bookinfo_yaml()))
            cp.apply(load(cp, vs_yaml("reviews", NS, (50, 50))))
            t0 = time.monotonic()
            specs = []
            for i in range(n):
                app, version = APPS[i % len(APPS)]
                ip = address(i)
                pod = f"{app}-{version}-{i}"
                labels = {"app": app, "version": version}
                cp.register_workload(Workload(name=pod, namespace=NS, address=ip, labels=labels))
                specs.append(ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name=pod,
                                       admin_port=free_port(ip), xds_port=cp.xds_port, labels=labels))
            for k in range(0, n, 10):   # start in batches: 2 cores
                batch = [Agent(s, AgentOptions(log_level="warning", concurrency=1)) for s in specs[k:k + 10]]
                agents.extend(batch)
                await asyncio.gather(*(a.start(ready_timeout=60) for a in batch))
            await cp.wait_synced(timeout=60)
            if ENVOY_NICE:
                for a in agents:
                    renice(a.pid, ENVOY_NICE)
            res.startup_s = time.monotonic() - t0
            nodes = [a.node_id for a in agents]
            if prof is not None:
                prof.enable()
            gclog = GcLog()
            gc.callbacks.append(gclog)
            went_live: list[float] = []
            unlisten = cp.store.add_listener(lambda _results: went_live.append(time.time()))
            if APPLY == "http":
                client = await ApplyClient.start(cp)
            if TRACE:
                print(f"  one proxy's config: {describe_snapshot(cp, nodes[0])}")
                print("  in-gen (CPU: gen+cache): the push's time in Pusher._generate, its CPU, split into "
                      "core.generate and the cache's packing;\n  memo built: the PushContext memo's misses"
                      " by tag")
                print("  round  live  debounce  push(wall)  in-gen (CPU: gen+cache)  loop-CPU  send+ACK  "
                      "all-ACKed  "
                      "gc in push (gen:ms)  gc in round  cp-CPU (loop+other)  loop waited  "
                      "envoys-CPU (main+other)  ms  sent CDS/EDS/LDS/RDS  memo built")
            # per round: control plane loop, other threads, Envoys main, other threads, the loop's run delay
            cpus: list[tuple[float, ...]] = []
            for r in range(1 - warmup, rounds + 1):   # rounds <= 0: the warm-up, reported apart
                w = 5 + (r * 37) % 90           # a different split every round
                text = vs_yaml("reviews", NS, (w, 100 - w), ("v1", "v3" if r % 2 else "v2"))
                change = load(cp, text)
                await asyncio.sleep(gap)   # >= quiet time: each apply is an isolated change (leading edge)
                pushes = cp.pusher.stats.pushes
                envoy_cpu0 = envoys_cpu(agents) if TRACE else (0.0, 0.0)
                sent0 = sent_by_type(cp) if TRACE else {}
                memo0, gen0 = (dict(cp.pusher.current().memo) if TRACE else {}), timed.cpu_s
                cp_cpu0, waited0 = cpu_split(), loop_waited()
                went_live.clear()
                t_apply = time.time()
                if APPLY == "sync":
                    cp.store.apply(change)
                elif APPLY == "async":
                    await cp.store.apply_async(change)
                else:   # what `mizzen apply -f vs.yaml -n bookinfo` sends, from another process
                    assert client is not None
                    t_apply = await client.apply(text)
                if went_live:
                    res.live.append(went_live[0] - t_apply)
                try:
                    await cp.wait_synced(nodes, timeout=10)
                except TimeoutError as e:
                    res.timeouts += 1
                    print(f"  round {r}: TIMEOUT {e}")
                    continue
                acks = [cp.status.synced_at(nd) for nd in nodes]
                # a proxy whose config did not change has nothing to ACK (its last ACK predates the apply)
                lat = [a - t_apply for a in acks if a is not None and a >= t_apply]
                if len(lat) < len(nodes):
                    res.unchanged += len(nodes) - len(lat)
                if not lat:
                    continue
                if r <= 0:
                    res.warmup.append(max(lat))
                    if TRACE:
                        print(f"  warm-up round (not counted): all ACKed {max(lat) * 1000:.1f} ms")
                    continue
                res.latencies.extend(lat)
                res.rounds_all.append(max(lat))
                st = cp.pusher.stats
                if st.pushes == pushes + 1 and st.last_push is not None:
                    start = st.last_push - st.duration_s
                    res.debounce_wait.append(start - t_apply)
                    res.generate.append(st.duration_s)
                    res.send_ack.append(max(lat) - (st.last_push - t_apply))
                    if TRACE:
                        cp_cpu = [b - a for a, b in zip(cp_cpu0, cpu_split(), strict=True)]
                        envoy_cpu = [b - a for a, b in zip(envoy_cpu0, envoys_cpu(agents), strict=True)]
                        waited = loop_waited() - waited0
                        cpus.append((*cp_cpu, *envoy_cpu, waited))
                        in_push = gclog.within(start, st.last_push)
                        in_round = gclog.within(t_apply, t_apply + max(lat))
                        sent = sent_by_type(cp)
                        live = (went_live[0] - t_apply) * 1000 if went_live else nan
                        print(f"  {r:5d}  {live:4.1f}  {(start - t_apply) * 1000:8.1f}  "
                              f"{st.duration_s * 1000:10.1f}  "
                              f"{getattr(st, 'generate_s', nan) * 1000:6.1f} "
                              f"({getattr(st, 'generate_cpu_s', nan) * 1000:4.1f}: "
                              f"{(timed.cpu_s - gen0) * 1000:4.1f}+"
                              f"{(getattr(st, 'generate_cpu_s', nan) - timed.cpu_s + gen0) * 1000:3.1f})  "
                              f"{getattr(st, 'cpu_s', nan) * 1000:8.1f}  "
                              f"{(max(lat) - (st.last_push - t_apply)) * 1000:8.1f}  {max(lat) * 1000:9.1f}  "
                              f"{' '.join(f'{g}:{d * 1000:.1f}' for g, d in in_push) or '-':>19}  "
                              f"{len(in_round):11d}  {sum(cp_cpu) * 1000:5.1f} ({cp_cpu[0] * 1000:4.1f}+"
                              f"{cp_cpu[1] * 1000:4.1f})  {waited * 1000:11.1f}  "
                              f"{sum(envoy_cpu) * 1000:10.1f} "
                              f"({envoy_cpu[0] * 1000:4.1f}+"
                              f"{envoy_cpu[1] * 1000:4.1f})  "
                              f"{'/'.join(f'{sent[t] - sent0[t]:g}' for t in TYPES):>19}  "
                              f"{memo_built(memo0, cp.pusher.current().memo)}")
            unlisten()
            gc.callbacks.remove(gclog)
            if TRACE and cpus:
                print("  CPU per round, p50 (p90): " + ", ".join(
                    f"{what} {pct([c[i] for c in cpus], 50) * 1000:.1f} "
                    f"({pct([c[i] for c in cpus], 90) * 1000:.1f}) ms"
                    for i, what in enumerate(("control plane's event loop", "its other threads",
                                              "the Envoys' main threads", "their other threads",
                                              "the loop waiting for a CPU"))))
            if TRACE:
                for g in (0, 1, 2):
                    d = sorted(b - a for gen, a, b in gclog.passes if gen == g)
                    if d:
                        print(f"  gc generation {g}: {len(d)} passes over the rounds, median "
                              f"{pct(d, 50) * 1000:.1f} ms, max {d[-1] * 1000:.1f} ms")
            if prof is not None:
                prof.disable()
            res.cp_rss = rss_mb()
            res.envoy_rss = sum(rss_mb(a.pid) for a in agents if a.pid is not None)
            res.envoy_pss = sum(pss_mb(a.pid) for a in agents if a.pid is not None)
        finally:
            if client is not None:
                await client.close()
            await stop_all(agents)
            await cp.stop()
    return res


async def stop_all(agents: list[Agent]) -> None:
    await asyncio.gather(*(a.stop(timeout=3) for a in agents), return_exceptions=True)
    left = [a.pid for a in agents if a.pid is not None]
    if left:
        print(f"WARNING: Envoy pids still running after stop: {left}", file=sys.stderr)
    agents.clear()


def report(r: Result) -> None:
    print(f"\nN={r.proxies} Envoy sidecars, debounce {r.debounce}, apply {r.apply}: {len(r.rounds_all)} "
          f"rounds ({r.timeouts} timed out, {r.unchanged} proxy-rounds without a change); "
          f"startup + initial sync {r.startup_s:.1f} s")
    if r.warmup:
        print(f"  warm-up before the rounds (the first applies after start-up, not counted): apply -> "
              f"last proxy ACKed {', '.join(f'{w * 1000:.1f}' for w in r.warmup)} ms")
    print(f"  apply -> proxy ACKed (all proxies, all rounds): {fmt_ms(r.latencies)}")
    print(f"  apply -> last proxy ACKed (per round):          {fmt_ms(r.rounds_all)}")
    if r.generate:
        if r.live:
            print(f"  apply -> live (journal record durable, listeners called): {fmt_ms(r.live)}")
        print(f"  split (p50 per round): debounce wait {pct(r.debounce_wait, 50) * 1000:.1f} ms, "
              f"generate {pct(r.generate, 50) * 1000:.1f} ms, send + Envoy apply + ACK "
              f"{pct(r.send_ack, 50) * 1000:.1f} ms  (p99: {pct(r.debounce_wait, 99) * 1000:.1f} / "
              f"{pct(r.generate, 99) * 1000:.1f} / {pct(r.send_ack, 99) * 1000:.1f} ms)")
        after = [lat - d for lat, d in zip(r.rounds_all, r.debounce_wait, strict=False)]
        print(f"  push start -> last proxy ACKed (no debounce):   {fmt_ms(after)}")
    print(f"  RSS: control plane (this process) {r.cp_rss:.0f} MB; Envoys total VmRSS {r.envoy_rss:.0f} MB "
          f"({r.envoy_rss / max(1, r.proxies):.0f} MB each, counting the shared binary in each), total PSS "
          f"{r.envoy_pss:.0f} MB ({r.envoy_pss / max(1, r.proxies):.0f} MB each)")


async def amain(args: argparse.Namespace) -> None:
    global APPLY
    agents: list[Agent] = []
    # Ctrl-C / SIGTERM cancel the run, so the finally below stops every Envoy (explicit handlers: a SIGINT
    # ignored by the parent shell, as for background jobs, would otherwise be ignored here too)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        for n in [int(x) for x in args.proxies.split(",") if x]:
            for d in [x.strip() for x in args.debounce.split(",") if x.strip()]:
                for how in [x.strip() for x in args.apply.split(",") if x.strip()]:
                    APPLY = how
                    prof = cProfile.Profile() if args.profile else None
                    report(await run_one(n, d, args.rounds, agents, prof, args.gap, args.warmup))
                if prof is not None:
                    pstats.Stats(prof, stream=sys.stdout).sort_stats(args.profile_sort).print_stats(
                        args.profile_lines)
    finally:
        await stop_all(agents)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", default="10,50", help="comma-separated Envoy counts (default %(default)s)")
    ap.add_argument("--grpc-defaults", action="store_true",
                    help="gRPC's default runtime settings, not the control plane's "
                         "(mizzen.controlplane.grpcenv)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1,
                    help="rounds before the counted ones (default %(default)s), reported apart: the first "
                         "apply after start-up also pays one-time costs (connections, first writes)")
    ap.add_argument("--gap", type=float, default=0.05,
                    help="seconds between a round's ACKs and the next apply (default %(default)s: back to "
                         "back, debounced; 0.2: isolated applies, which the debouncer pushes after 5 ms)")
    ap.add_argument("--debounce", default="prod",
                    help="comma-separated debounce quiet periods in seconds, 'prod' = production defaults "
                         f"({PROD.debounce_quiet_s:g} s quiet, {PROD.debounce_max_s:g} s max); "
                         "e.g. prod,0.005")
    ap.add_argument("--apply", default=APPLY, help="comma-separated: http (POST /apis/apply, what `mizzen "
                    "apply` runs), async (store.apply_async in process), sync (store.apply: journal fsync on "
                    "the event loop) (default %(default)s)")
    ap.add_argument("--lead", type=float, default=None,
                    help=f"seconds of the debouncer's leading edge (default: the control plane's, "
                         f"{PROD.debounce_lead_s})")
    ap.add_argument("--envoy-nice", type=int, default=0,
                    help="a diagnostic: run the Envoys at this nice value (e.g. 5), as if the control plane "
                         "had its own CPU share (istiod's CPU request); default 0: as the control plane")
    ap.add_argument("--profile", action="store_true", help="cProfile the control plane during the rounds")
    ap.add_argument("--profile-sort", default="tottime", help="cProfile's sort key (default %(default)s)")
    ap.add_argument("--profile-lines", default=20, type=int, help="profile lines (default %(default)s)")
    ap.add_argument("--trace", action="store_true",
                    help="one line per round: stages, the push's CPU, gc passes, the control plane's and "
                         "the Envoys' CPU")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                    help="the event loop: uvloop (what `python -m mizzen.controlplane` runs: "
                         "mizzen.eventloop) or asyncio's own")
    ap.add_argument("--gc", choices=["tuned", "default"], default="tuned",
                    help="tuned: the control-plane process's GC settings (mizzen.gctune); default: CPython's")
    args = ap.parse_args()
    if bad := [x for x in args.apply.split(",") if x.strip() not in ("http", "async", "sync")]:
        ap.error(f"--apply: unknown {', '.join(bad)} (want http, async or sync)")
    global GC_TUNED
    GC_TUNED = args.gc == "tuned"
    global TRACE, LEAD, ENVOY_NICE
    TRACE = args.trace
    ENVOY_NICE = args.envoy_nice
    LEAD = args.lead
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ[eventloop.ENV] = args.loop
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        eventloop.run(amain(args))


if __name__ == "__main__":
    main()
