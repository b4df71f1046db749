"""The push loop: connected proxies, scoped generation per push request with error isolation, statistics.

:class:`Pusher` builds one :class:`PushContext` per :class:`PushRequest` (carrying over the memo entries the
change cannot have touched) and regenerates, per connected proxy, only the xDS types whose generators read
the changed kinds, only for proxies whose scope includes the changed objects; endpoint changes update just
the affected load assignments of the proxies that see the service (incremental EDS). A generation failure
for one proxy is logged and recorded (``/debug/push_status``) and that proxy keeps its last good snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mizzen.config.model import ConfigKey, ConfigSnapshot
from mizzen.controlplane.metrics import Metrics
from mizzen.core.generate import GENERATORS, carry_memo, generate, types_reading
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.core.push_request import PushRequest
from mizzen.core.scope import config_affects_proxy, scope_key, sees_service
from mizzen.registry.model import RegistrySnapshot, Resolution
from mizzen.xds.cache import SnapshotCache
from mizzen.xds.resources import CLUSTER, ENDPOINT, SHORT, ResourceSet

log = logging.getLogger(__name__)

__all__ = [
    "GenerationError",
    "Generator",
    "PushStats",
    "Pusher",
    "iso",
]

# (proxy, push, type URLs or None for all) -> resources; core.generate.generate by default
Generator = Callable[[Proxy, PushContext, Collection[str] | None], ResourceSet]

YIELD_EVERY = 20   # proxies generated between yields to the event loop (at most)
# ... or fewer: a yield once this long was spent generating, so the responses of the proxies done so far are
# written (and their Envoys apply them, on other cores) while the rest are generated
YIELD_AFTER_S = 0.002
SLICE_S = 0.005    # longest stretch of scope checks between two yields to the event loop
MAKE_WAY_MAX_S = 0.5   # longest a slice of background work waits for a running push (see make_way)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class GenerationError:
    node_id: str
    message: str
    version: str
    time: float
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"proxy": self.node_id, "message": self.message, "version": self.version,
                "time": iso(self.time), "traceback": self.traceback}


@dataclass
class PushStats:
    pushes: int = 0
    version: str = ""
    last_push: float | None = None
    duration_s: float = 0.0
    proxies_pushed: int = 0
    proxies_failed: int = 0
    reasons: list[str] = field(default_factory=list)
    pending: bool = False
    full: bool = True
    types: list[str] = field(default_factory=list)       # the xDS types the last push regenerated
    proxies_changed: int = 0                              # proxies whose config (some version) changed
    generate_s: float = 0.0    # of duration_s: time inside the generators (the rest: scope checks, yields)
    generate_cpu_s: float = 0.0   # the event loop thread's CPU inside the generators (generate_s minus waits)
    cpu_s: float = 0.0         # the event loop thread's CPU during the push (its yields included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pushes": self.pushes,
            "version": self.version,
            "last_push": iso(self.last_push),
            "duration_ms": round(self.duration_s * 1000, 3),
            "proxies_pushed": self.proxies_pushed,
            "proxies_failed": self.proxies_failed,
            "reasons": list(self.reasons),
            "pending": self.pending,
            "full": self.full,
            "types": list(self.types),
            "proxies_changed": self.proxies_changed,
            "generate_ms": round(self.generate_s * 1000, 3),
            "generate_cpu_ms": round(self.generate_cpu_s * 1000, 3),
            "cpu_ms": round(self.cpu_s * 1000, 3),
        }


class Pusher:
    """Connected proxies and their generation. Call from the event loop's thread only."""

    def __init__(
        self,
        sink: SnapshotCache,
        configs: Callable[[], ConfigSnapshot],
        registry: Callable[[], RegistrySnapshot],
        mesh: MeshConfig,
        generator: Generator | None = None,
        *,
        throttle: int = 100,
        metrics: Metrics | None = None,
        on_changed: Callable[[list[str], float, dict[str, float]], None] | None = None,
    ) -> None:
        self._sink = sink
        self._configs = configs
        self._registry = registry
        self.mesh = mesh
        self._generator = generator
        self.throttle = max(1, throttle)
        self.metrics = metrics
        self._on_changed = on_changed
        self.proxies: dict[str, Proxy] = {}
        self.errors: dict[str, GenerationError] = {}
        self.stats = PushStats()
        self._push: PushContext | None = None
        self._lock = asyncio.Lock()
        self._pushed = asyncio.Event()
        self._generate_s = 0.0
        self._generate_cpu_s = 0.0

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = generate
        return self._generator

    def current(self) -> PushContext:
        """The latest PushContext (built on first use)."""
        if self._push is None:
            self._push = self._build(None, None)
        return self._push

    def _build(self, memo: dict[Any, Any] | None, prev: PushContext | None) -> PushContext:
        t0 = time.monotonic()
        push = PushContext.build(self._configs(), self._registry(), self.mesh, memo, prev)
        if self.metrics is not None:
            self.metrics.pushcontext_init.observe(time.monotonic() - t0)
            self.metrics.services.set(len(push.registry.services))
        return push

    def _generate(self, proxy: Proxy, push: PushContext, types: Collection[str] | None = None) -> bool:
        """Generate ``types`` (None: all) for the proxy into the cache; False (and recorded) on failure."""
        t0, c0 = time.monotonic(), time.thread_time()
        try:
            resources = self.generator(proxy, push, types)
            if types is None:
                self._sink.set_snapshot(proxy.id, resources)
            else:
                self._sink.set_types([proxy.id], resources)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if self.metrics is not None:
                self.metrics.internal_errors.inc()
            prev = self.errors.get(proxy.id)
            if prev is None or prev.message != msg or prev.version != push.version:
                log.error("generating config for %s at %s failed (keeping its last snapshot): %s",
                          proxy.id, push.version, msg, exc_info=True)
            self.errors[proxy.id] = GenerationError(proxy.id, msg, push.version, time.time(),
                                                    traceback.format_exc(limit=8))
            return False
        finally:
            self._generate_s += time.monotonic() - t0
            self._generate_cpu_s += time.thread_time() - c0
        self.errors.pop(proxy.id, None)
        return True

    # --- connections ----------------------------------------------------------------------------------------
    def connect(self, node_id: str, metadata: dict[str, Any]) -> Proxy:
        """A proxy connected: model it and generate its resources at once from the current PushContext.

        Raises ValueError for a node id or metadata that does not describe a proxy (the stream is refused).
        """
        try:
            proxy = Proxy.from_node(node_id, metadata)
        except (ValueError, TypeError) as e:
            log.error("proxy %s rejected: %s", node_id, e)
            raise ValueError(f"bad node: {e}") from None
        self.proxies[node_id] = proxy
        self._generate(proxy, self.current())
        return proxy

    def disconnect(self, node_id: str) -> None:
        self.proxies.pop(node_id, None)
        self.errors.pop(node_id, None)

    # --- pushes ---------------------------------------------------------------------------------------------
    async def push(self, request: PushRequest | Iterable[str] | None = None) -> PushContext:
        """Carry out one (merged) push request: a new PushContext, then for each connected proxy only the
        generators the request's changes can affect (scoped like Istio's ConfigAffectsProxy), and for
        endpoint changes an EDS update of the affected load assignments only, to the proxies that see them.
        A plain list of reasons (or None) means a full push of everything."""
        if request is None or not isinstance(request, PushRequest):
            request = PushRequest.everything(list(request or ["manual"]))
        async with self._lock:
            return await self._push_locked(request)

    async def _push_locked(self, request: PushRequest) -> PushContext:
        start, cpu0 = time.monotonic(), time.thread_time()
        self._generate_s = self._generate_cpu_s = 0.0
        if self.metrics is not None and request.start:
            self.metrics.debounce_time.observe(max(0.0, start - request.start))
        prev = self._push
        everything = prev is None or request.all_configs
        kinds = request.kinds()
        types = set(GENERATORS) if everything else (types_reading(kinds) if request.full else set())
        hosts = request.services
        if everything or prev is None:
            push = self._build(None, prev)
        else:
            push = self._build(carry_memo(prev.memo, types, kinds, hosts, self.proxies), prev)
        self._push = push
        inline = {h for h in hosts if (svc := push.service(h)) is not None
                  and svc.resolution is not Resolution.STATIC}
        ok = failed = 0
        regenerated: set[str] = set()
        changed: list[str] = []
        serials = {n: sn.serial for n in self.proxies if (sn := self._sink.get(n)) is not None}
        generated: dict[str, float] = {}   # node -> when its generation began (pilot_xds_push_time)
        affected: dict[Hashable, bool] = {}   # scope keys (before, after) -> the change affects them
        step = min(YIELD_EVERY, self.throttle)   # PILOT_PUSH_THROTTLE bounds a batch too
        since, last_yield = 0, time.monotonic()
        for proxy in list(self.proxies.values()):
            if since >= step or (since and time.monotonic() - last_yield >= YIELD_AFTER_S):
                await asyncio.sleep(0)
                since, last_yield = 0, time.monotonic()
            if proxy.id not in self.proxies:
                continue  # disconnected meanwhile
            # a proxy whose last generation failed missed changes: it gets everything again
            if everything or proxy.id in self.errors or _own_workload_changed(proxy, request):
                wanted: set[str] | None = None
            else:
                wanted = set()
                if types and prev is not None and await self._affected(proxy, prev, push, request.configs,
                                                                       affected):
                    wanted |= types
                if inline and any(_sees(proxy, push, h) for h in inline):
                    wanted |= {CLUSTER, ENDPOINT}
                if not wanted:
                    continue
            generated[proxy.id] = time.monotonic()
            since += 1
            if self._generate(proxy, push, None if wanted is None else sorted(wanted)):
                ok += 1
                if wanted is None or ENDPOINT in wanted:
                    regenerated.add(proxy.id)
            else:
                failed += 1
        static = hosts - inline
        if static:
            ok += await self._push_endpoints(push, static, regenerated, generated)
        for n, serial in serials.items():
            snap = self._sink.get(n)
            if snap is not None and snap.serial != serial:
                changed.append(n)
        if self._on_changed is not None and changed:
            self._on_changed(changed, request.start or start, generated)
        s = self.stats
        s.pushes += 1
        s.version = push.version
        s.last_push = time.time()
        s.duration_s = time.monotonic() - start
        s.generate_s = self._generate_s
        s.generate_cpu_s = self._generate_cpu_s
        s.cpu_s = time.thread_time() - cpu0
        s.proxies_pushed = ok
        s.proxies_failed = failed
        s.reasons = sorted(request.reasons)[:20]
        s.full = request.full
        s.types = sorted(SHORT.get(t, t) for t in (types if request.full else set()) | (
            {ENDPOINT} if hosts else set()))
        s.proxies_changed = len(changed)
        log.info("push %d (%s, %s): %d proxies in %.1f ms (%d changed), %d failed", s.pushes,
                 push.version, "full" if request.full else "eds", ok, s.duration_s * 1000, len(changed),
                 failed)
        ev, self._pushed = self._pushed, asyncio.Event()
        ev.set()
        return push

    async def _affected(self, proxy: Proxy, prev: PushContext, push: PushContext, keys: Iterable[ConfigKey],
                        memo: dict[Hashable, bool]) -> bool:
        """Whether any of the changed objects ``keys`` can affect the proxy: asked once per scope key (the
        proxies of one namespace and Sidecar share the answer), in slices of at most ``SLICE_S`` of CPU
        between yields to the event loop (an apply of 1,000 objects is 1,000 questions)."""
        scope = (scope_key(proxy, prev), scope_key(proxy, push))
        hit = memo.get(scope)
        if hit is not None:
            return hit
        hit = False
        t0 = time.monotonic()
        for i, key in enumerate(keys):
            if config_affects_proxy(proxy, prev, push, key):
                hit = True
                break
            if i % 20 == 19 and time.monotonic() - t0 > SLICE_S:
                await asyncio.sleep(0)
                t0 = time.monotonic()
        memo[scope] = hit
        return hit

    async def _push_endpoints(self, push: PushContext, hosts: frozenset[str] | set[str],
                              skip: set[str], generated: dict[str, float]) -> int:
        """Incremental EDS: for every proxy (not in ``skip``) whose load assignments include clusters of
        ``hosts``, rebuild just those and swap them into its EDS snapshot. Proxies that share their EDS
        content and their endpoint inputs are handled as one group: built once, packed once."""
        eds = GENERATORS[ENDPOINT]
        names_by_content: dict[int, list[str]] = {}
        groups: dict[tuple[int, Any], list[Proxy]] = {}
        suffixes = tuple(f"|{h}" for h in hosts)
        for proxy in self.proxies.values():
            if proxy.id in skip:
                continue
            snap = self._sink.get(proxy.id)
            if snap is None:
                continue
            tsnap = snap.of(ENDPOINT)
            names = names_by_content.get(id(tsnap))
            if names is None:
                names = names_by_content[id(tsnap)] = [n for n in tsnap.resources if n.endswith(suffixes)]
            if names:   # the proxy sees (has endpoints for) one of the services
                groups.setdefault((id(tsnap), eds.proxy_key(proxy, push)), []).append(proxy)
        done = 0
        for batch, ((content, _key), members) in enumerate(groups.items()):
            if batch and batch % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            rep = members[0]
            began = time.monotonic()
            for p in members:
                generated[p.id] = began
            try:
                current = self._sink.resources(rep.id, ENDPOINT)
                current.update(eds.generate(rep, push, names_by_content[content]))
                for i in range(0, len(members), self.throttle):
                    if i:
                        await asyncio.sleep(0)   # PILOT_PUSH_THROTTLE: a bounded batch woken per loop turn
                    self._sink.set_types([p.id for p in members[i:i + self.throttle]],
                                         ResourceSet({ENDPOINT: current}))
                done += len(members)
            except Exception:
                log.exception("incremental EDS for %d proxies like %s failed; regenerating them",
                              len(members), rep.id)
                for p in members:
                    done += self._generate(p, push, [CLUSTER, ENDPOINT])
        return done

    @property
    def pushing(self) -> bool:
        """Whether a push is running (generating into the cache)."""
        return self._lock.locked()

    async def make_way(self) -> None:
        """Between two slices of background work on the event loop (a large apply's rebuild and staging):
        yield, and while a push is running wait for it to end (at most ``MAKE_WAY_MAX_S``), so a push is
        not stretched by taking turns with that work: an unrelated change reaches the proxies as fast during
        a large apply as alone. The work then goes on; at worst it waits one push per slice."""
        await asyncio.sleep(0)
        if self._lock.locked():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAKE_WAY_MAX_S):
                    await self._pushed.wait()

    def pushed_event(self) -> asyncio.Event:
        """Set after the next completed push."""
        return self._pushed


def _own_workload_changed(proxy: Proxy, request: PushRequest) -> bool:
    return any(w.namespace == proxy.namespace and (w.name == proxy.workload_name or (
        w.address and w.address == proxy.ip)) for w in request.workloads)


def _sees(proxy: Proxy, push: PushContext, hostname: str) -> bool:
    svc = push.service(hostname)
    return svc is not None and sees_service(proxy, push, svc)
