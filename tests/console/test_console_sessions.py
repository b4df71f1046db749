"""Console login tickets and sessions: single use, short-lived, bound to the address they were minted for;
sessions expire and end; the tables stay bounded."""

from __future__ import annotations

from mizzen.console.sessions import MAX_LIVE, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ticket_is_single_use_and_gives_a_session() -> None:
    s = Sessions()
    t = s.mint_ticket("127.0.0.1:15014")
    session = s.redeem(t, "127.0.0.1:15014")
    assert session and s.valid(session)
    assert s.redeem(t, "127.0.0.1:15014") is None          # used
    assert not s.valid(t)                                   # a ticket is not a session


def test_ticket_bound_to_its_host_and_burnt_by_a_wrong_one() -> None:
    s = Sessions()
    t = s.mint_ticket("127.0.0.1:15014")
    assert s.redeem(t, "evil.example:15014") is None
    assert s.redeem(t, "127.0.0.1:15014") is None          # gone after the first presentation


def test_ticket_and_session_expire() -> None:
    clock = Clock()
    s = Sessions(clock=clock, ticket_ttl_s=30, session_ttl_s=60)
    t = s.mint_ticket("h:1")
    clock.now += 31
    assert s.redeem(t, "h:1") is None
    session = s.redeem(s.mint_ticket("h:1"), "h:1")
    assert session is not None and s.valid(session)
    clock.now += 61
    assert not s.valid(session)


def test_end_and_garbage() -> None:
    s = Sessions()
    session = s.redeem(s.mint_ticket("h:1"), "h:1")
    assert session is not None
    s.end(session)
    assert not s.valid(session)
    assert not s.valid("") and not s.valid("x" * 5000)
    assert s.redeem("nope", "h:1") is None


def test_tables_are_bounded() -> None:
    s = Sessions()
    first = s.mint_ticket("h:1")
    for _ in range(MAX_LIVE + 5):
        s.mint_ticket("h:1")
    assert s.redeem(first, "h:1") is None                  # the oldest was dropped
