"""The push loop's bookkeeping: connected proxies, per-proxy generation with error isolation, push statistics.

:class:`Pusher` builds one :class:`PushContext` per push and generates every connected proxy's resources
from it. A generation failure for one proxy is logged and recorded (``/debug/push_status``) and that proxy
keeps its last good snapshot; the other proxies are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mizzen.config.model import ConfigSnapshot
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.registry.model import RegistrySnapshot
from mizzen.xds.resources import ResourceSet

log = logging.getLogger(__name__)

__all__ = [
    "GenerationError",
    "Generator",
    "PushStats",
    "Pusher",
    "SnapshotSink",
    "default_generator",
    "iso",
]

Generator = Callable[[Proxy, PushContext], ResourceSet]

YIELD_EVERY = 20   # proxies generated between yields to the event loop


class SnapshotSink(Protocol):
    def set_snapshot(self, node_id: str, resources: ResourceSet) -> None: ...


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_generator() -> Generator:
    from mizzen.core.generate import generate

    return generate


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
        }


class Pusher:
    """Connected proxies and their generation. Call from the event loop's thread only."""

    def __init__(
        self,
        sink: SnapshotSink,
        configs: Callable[[], ConfigSnapshot],
        registry: Callable[[], RegistrySnapshot],
        mesh: MeshConfig,
        generator: Generator | None = None,
    ) -> None:
        self._sink = sink
        self._configs = configs
        self._registry = registry
        self.mesh = mesh
        self._generator = generator
        self.proxies: dict[str, Proxy] = {}
        self.errors: dict[str, GenerationError] = {}
        self.stats = PushStats()
        self._push: PushContext | None = None
        self._lock = asyncio.Lock()
        self._pushed = asyncio.Event()

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = default_generator()
        return self._generator

    def current(self) -> PushContext:
        """The latest PushContext (built on first use)."""
        if self._push is None:
            self._push = PushContext.build(self._configs(), self._registry(), self.mesh)
        return self._push

    def _generate(self, proxy: Proxy, push: PushContext) -> bool:
        try:
            resources = self.generator(proxy, push)
            self._sink.set_snapshot(proxy.id, resources)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            prev = self.errors.get(proxy.id)
            if prev is None or prev.message != msg or prev.version != push.version:
                log.error("generating config for %s at %s failed (keeping its last snapshot): %s",
                          proxy.id, push.version, msg, exc_info=True)
            self.errors[proxy.id] = GenerationError(proxy.id, msg, push.version, time.time(),
                                                    traceback.format_exc(limit=8))
            return False
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
    async def push(self, reasons: list[str] | None = None) -> PushContext:
        """Rebuild the PushContext and regenerate every connected proxy."""
        async with self._lock:
            start = time.monotonic()
            push = PushContext.build(self._configs(), self._registry(), self.mesh)
            self._push = push
            ok = failed = 0
            for i, proxy in enumerate(list(self.proxies.values())):
                if i and i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if proxy.id not in self.proxies:
                    continue  # disconnected meanwhile
                if self._generate(proxy, push):
                    ok += 1
                else:
                    failed += 1
            s = self.stats
            s.pushes += 1
            s.version = push.version
            s.last_push = time.time()
            s.duration_s = time.monotonic() - start
            s.proxies_pushed = ok
            s.proxies_failed = failed
            s.reasons = sorted(set(reasons or []))[:20]
            log.info("push %d (%s): %d proxies in %.1f ms, %d failed", s.pushes, push.version, ok,
                     s.duration_s * 1000, failed)
            ev, self._pushed = self._pushed, asyncio.Event()
            ev.set()
            return push

    def pushed_event(self) -> asyncio.Event:
        """Set after the next completed push."""
        return self._pushed
