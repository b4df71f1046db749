"""The config-change feed a process outside the control plane follows (``GET /apis/events``): every applied
or deleted object as a numbered event, kept in a bounded in-memory log, answered as a long poll.

Like a Kubernetes list+watch: a client lists what it needs, then asks for the events after the last sequence
number it saw. The log belongs to one control-plane process (``epoch``): a client whose epoch differs (the
control plane restarted) or whose position fell out of the log is told to ``reset`` (list again). ``mizzen
demo`` uses it to start Deployments and narrate config changes while the control plane is its own process.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from mizzen.asyncwait import wait_event
from mizzen.controlplane.store import ApplyResult

__all__ = ["EventLog", "Events"]

MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Events:
    """One answer: the log's ``epoch``, the sequence number to continue ``since``, the events after the
    client's position, and whether the client must list everything again."""

    epoch: str
    seq: int
    events: tuple[dict[str, Any], ...]
    reset: bool

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq, "events": list(self.events), "reset": self.reset}


class EventLog:
    """Feed it with :meth:`record` (a ConfigStore listener); read it with :meth:`since`."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self._log: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max_events)
        self._changed = asyncio.Event()
        self.closed = False

    def record(self, results: list[ApplyResult]) -> None:
        for r in results:
            if r.changed:
                self.seq += 1
                self._log.append((self.seq, {"seq": self.seq, **r.to_dict()}))
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Answer every waiting long poll now (the control plane is stopping)."""
        self.closed = True
        self._changed.set()

    def _answer(self, epoch: str | None, since: int) -> Events:
        if epoch != self.epoch or since > self.seq or (self._log and since < self._log[0][0] - 1):
            return Events(self.epoch, self.seq, (), True)
        return Events(self.epoch, self.seq, tuple(e for n, e in self._log if n > since), False)

    async def since(self, epoch: str | None, since: int, timeout: float) -> Events:
        """The events after ``since``, waiting up to ``timeout`` seconds for the first one."""
        answer = self._answer(epoch, since)
        if answer.events or answer.reset or timeout <= 0 or self.closed:
            return answer
        await wait_event(self._changed, timeout)
        return self._answer(epoch, since)
