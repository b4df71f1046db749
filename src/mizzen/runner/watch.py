"""One-line reports of what happens to running pods, like ``kubectl get pods -w`` and kubelet events: an app
container that exits (and its restart backoff), a pod that becomes ready or not ready, pods created or
deleted (:class:`PodWatcher`, which diffs ``LocalRunner.status()``), and an Envoy sidecar that exits or is
given up on (:func:`agent_event_line`, from the agent's :class:`~mizzen.agent.envoy.AgentEvent`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mizzen.agent.envoy import AgentEvent
from mizzen.runner.pod import PodStatus

__all__ = ["PodSource", "PodWatcher", "agent_event_line", "exit_text", "pod_of_node"]

log = logging.getLogger("mizzen.runner")

_DELAY = re.compile(r"restarting in ([0-9.]+s)")
EVENTS_PER_POD = 20
_WARNING = ("exited", "killed", "failed", "not ready", "not restarted")


def exit_text(code: int | None) -> str:
    """``exited with code 1``, or ``killed by SIGKILL`` for a negative (signal) return code."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def pod_of_node(node_id: str) -> str:
    """``ns/pod`` from a node id ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`` (else the id itself)."""
    parts = node_id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        name, ns = parts[2].rsplit(".", 1)
        return f"{ns}/{name}"
    return node_id


def agent_event_line(event: AgentEvent) -> str | None:
    """The report line for a sidecar's supervisor event (None for events not worth a line)."""
    where = f"pod {pod_of_node(event.node_id)}"
    if event.kind == "exited":
        return (f"{where}: istio-proxy (Envoy) {exit_text(event.returncode)}, restarting "
                f"(restart {event.restarts + 1})")
    if event.kind == "gave_up":
        why = f": {event.detail.splitlines()[-1]}" if event.detail else ""
        return f"{where}: istio-proxy (Envoy) is not restarted any more after {event.restarts} restarts{why}"
    return None


class PodSource(Protocol):
    """What the watcher reads: ``LocalRunner`` is one."""

    def status(self) -> Sequence[PodStatus]: ...


@dataclass
class _Seen:
    ready: bool
    phase: str
    restarts: dict[str, int] = field(default_factory=dict)      # container -> restart count
    states: dict[str, str] = field(default_factory=dict)        # container -> state


class PodWatcher:
    """Polls the runner's pod status and reports every change as one line through ``emit``.

    ``poll()`` returns the lines for what changed since the last poll; ``run()`` polls every ``period``
    seconds. Crashes and failures are always reported; pods created, deleted, ready and not ready only while
    ``lifecycle`` is true (the demo turns it on once its startup table is printed). ``prime()`` takes the
    current state silently. Every change (reported or not) is also kept as a recent event of its pod,
    kubectl-describe style (:meth:`events`, at most :data:`EVENTS_PER_POD` per pod).
    """

    def __init__(self, runner: PodSource, emit: Callable[[str], None], period: float = 0.2,
                 lifecycle: bool = True) -> None:
        self.runner = runner
        self.emit = emit
        self.period = period
        self.lifecycle = lifecycle
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._events: dict[tuple[str, str], deque[dict[str, Any]]] = {}

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Recent events of one pod, oldest first: ``{"time", "type" (Normal|Warning), "message"}``."""
        return list(self._events.get((namespace, name), ()))

    def _record(self, key: tuple[str, str], line: str) -> None:
        message = line.split(": ", 1)[1] if ": " in line else line
        kind = "Warning" if any(w in message for w in _WARNING) else "Normal"
        self._events.setdefault(key, deque(maxlen=EVENTS_PER_POD)).append(
            {"time": time.time(), "type": kind, "message": message})

    @staticmethod
    def _state(s: PodStatus) -> _Seen:
        return _Seen(ready=s.ready, phase=s.phase,
                     restarts={c.name: c.restarts for c in s.containers},
                     states={c.name: c.state for c in s.containers})

    def prime(self) -> None:
        self._seen = {(s.namespace, s.name): self._state(s) for s in self.runner.status()}

    def poll(self) -> list[str]:
        lines: list[str] = []
        current = {(s.namespace, s.name): s for s in self.runner.status()}
        for key, s in current.items():
            where = f"pod {s.namespace}/{s.name}"
            seen = self._seen.get(key)
            if seen is None:
                self._record(key, f"{where}: created ({s.pod_ip})")
                if self.lifecycle:
                    lines.append(f"{where}: created ({s.pod_ip})")
                seen = self._seen[key] = _Seen(ready=False, phase="Pending")
            before = len(lines)
            failed = False
            for c in s.containers:
                was = seen.states.get(c.name, "Waiting")
                crashing = c.state == "CrashLoopBackOff"
                # one line per crash: seen in backoff, or (restarted between two polls) by its count
                missed = c.restarts > seen.restarts.get(c.name, 0) and was != "CrashLoopBackOff"
                if (crashing and was != "CrashLoopBackOff") or missed:
                    delay = _DELAY.search(c.message) if crashing else None
                    restart = c.restarts + (1 if crashing else 0)
                    then = f", restarting in {delay.group(1)}" if delay else ", restarted"
                    lines.append(f"{where}: container {c.name} {exit_text(c.last_exit)}{then} "
                                 f"(restart {restart})")
                if c.state == "Failed" and was != "Failed":
                    failed = True
                    lines.append(f"{where}: container {c.name} failed: {c.message}")
                seen.restarts[c.name] = c.restarts
                seen.states[c.name] = c.state
            if s.phase == "Failed" and seen.phase != "Failed" and not failed:
                reason = f"{s.reason}: " if s.reason else ""
                lines.append(f"{where}: failed: {reason}{s.message}")
            for line in lines[before:]:
                self._record(key, line)
            if s.ready != seen.ready:
                line = (f"{where}: ready ({s.ready_count})" if s.ready else
                        f"{where}: not ready ({s.ready_count} {s.phase}"
                        f"{', sidecar ' + s.sidecar if s.sidecar not in ('running', 'none') else ''})")
                self._record(key, line)
                if self.lifecycle:
                    lines.append(line)
            seen.ready, seen.phase = s.ready, s.phase
        for key in [k for k in self._seen if k not in current]:
            del self._seen[key]
            self._events.pop(key, None)
            if self.lifecycle:
                lines.append(f"pod {key[0]}/{key[1]}: deleted")
        return lines

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                lines = self.poll()
            except Exception:          # a report must never take the demo down
                log.exception("pod watcher failed")
                continue
            for line in lines:
                self.emit(line)
