"""Console login: one-time tickets swapped for server-side session cookies (the design in
docs/ARCHITECTURE.md "Security model").

``mizzen dashboard`` mints a ticket with an authenticated ``POST /apis/login-tickets`` and opens
``/console/login?ticket=...``; the ticket is random, single use, valid 30 s and bound to the address it was
minted for (a ticket leaked to another origin is worthless). Redeeming it creates a session: a random id in an
``HttpOnly; SameSite=Strict`` cookie, kept only here, expiring after ``session_ttl_s``. The API token never
reaches the browser. Ids are compared by dictionary lookup of their SHA-256 digest, so neither timing nor a
memory dump of this table gives a usable id.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COOKIE", "Sessions"]

COOKIE = "mizzen-console"
TICKET_TTL_S = 30.0
SESSION_TTL_S = 8 * 3600.0
MAX_LIVE = 1000          # tickets or sessions kept at once (oldest dropped): bounded memory


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Sessions:
    """Tickets and sessions of one control plane (in memory: a restart logs everyone out)."""

    ticket_ttl_s: float = TICKET_TTL_S
    session_ttl_s: float = SESSION_TTL_S
    clock: Callable[[], float] = time.monotonic
    _tickets: dict[str, tuple[float, str]] = field(default_factory=dict)   # digest -> (expiry, host)
    _sessions: dict[str, float] = field(default_factory=dict)              # digest -> expiry

    def mint_ticket(self, host: str) -> str:
        """A new one-time ticket, redeemable only through ``host`` (the Host it was minted for)."""
        self._expire()
        ticket = secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = (self.clock() + self.ticket_ttl_s, host.lower())
        self._bound(self._tickets)
        return ticket

    def redeem(self, ticket: str, host: str) -> str | None:
        """The new session id for a valid ticket presented through ``host``; None otherwise. A ticket is
        gone after its first presentation, valid or not."""
        entry = self._tickets.pop(_digest(ticket), None)
        if entry is None:
            return None
        expiry, bound_host = entry
        if self.clock() > expiry or host.lower() != bound_host:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = self.clock() + self.session_ttl_s
        self._bound(self._sessions)
        return session

    def valid(self, session: str) -> bool:
        if not session:
            return False
        expiry = self._sessions.get(_digest(session))
        if expiry is None:
            return False
        if self.clock() > expiry:
            self._sessions.pop(_digest(session), None)
            return False
        return True

    def end(self, session: str) -> None:
        self._sessions.pop(_digest(session), None)

    def _expire(self) -> None:
        now = self.clock()
        for d in [d for d, (exp, _) in self._tickets.items() if exp < now]:
            del self._tickets[d]

    @staticmethod
    def _bound(table: dict[str, Any]) -> None:
        while len(table) > MAX_LIVE:
            del table[next(iter(table))]
