"""ConfigStore: apply actions, all-or-nothing validation, created timestamps, persistence, corrupt state."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mizzen.config.errors import ConfigError, Issue, Severity
from mizzen.config.model import Config, ConfigKey, Source
from mizzen.controlplane.persist import StateDir
from mizzen.controlplane.store import ApplyResult, ConfigStore


def vs(name: str, ns: str = "bookinfo", weight: int = 100, line: int = 1) -> Config:
    spec: dict[str, Any] = {"hosts": [name], "http": [{"route": [{"destination": {"host": name},
                                                                    "weight": weight}]}]}
    return Config("VirtualService", "networking.istio.io/v1", name, ns, spec, source=Source("f.yaml", line))


def fake_validator(c: Config) -> list[Issue]:
    """Flags weights over 100 as errors and weight 0 as a warning (a fake at the validation seam)."""
    issues = []
    for r in c.spec.get("http", [{}])[0].get("route", []):
        if r.get("weight", 0) > 100:
            path = "spec.http[0].route[0].weight"
            issues.append(Issue("must be 0..100", path, c.kind, c.name, "f.yaml", 7))
        if r.get("weight") == 0:
            issues.append(Issue("no traffic", "spec.http[0].route[0].weight", c.kind, c.name,
                                severity=Severity.WARNING))
    return issues


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_actions_and_created_timestamps() -> None:
    clock = Clock()
    store = ConfigStore(validator=fake_validator, clock=clock)
    r = store.apply([vs("reviews"), vs("ratings")])
    assert [x.action for x in r] == ["created", "created"]
    c1 = store.get("VirtualService", "bookinfo", "reviews")
    c2 = store.get("VirtualService", "bookinfo", "ratings")
    assert c1 is not None and c2 is not None
    assert c1.created == 1000.0 and c2.created > c1.created   # file order kept even within one second

    clock.t = 2000.0
    r = store.apply([vs("reviews", weight=100), vs("ratings", weight=50)])
    assert [x.action for x in r] == ["unchanged", "configured"]
    updated = store.get("VirtualService", "bookinfo", "ratings")
    assert updated is not None and updated.created == c2.created     # kept across updates
    assert updated.spec["http"][0]["route"][0]["weight"] == 50
    assert store.apply([vs("new")])[0].action == "created"
    assert store.get("VirtualService", "bookinfo", "new").created == 2000.0  # type: ignore[union-attr]


def test_all_or_nothing_on_any_error() -> None:
    store = ConfigStore(validator=fake_validator)
    store.apply([vs("reviews", weight=10)])
    calls: list[list[ApplyResult]] = []
    store.add_listener(calls.append)
    before = store.snapshot()
    with pytest.raises(ConfigError) as e:
        store.apply([vs("reviews", weight=20), vs("ratings"), vs("bad", weight=101)])
    assert "f.yaml:7: VirtualService/bad: spec.http[0].route[0].weight: must be 0..100" in str(e.value)
    assert len(e.value.issues) == 1
    # nothing applied: not the valid update, not the valid new object
    assert store.get("VirtualService", "bookinfo", "reviews").spec["http"][0]["route"][0]["weight"] == 10  # type: ignore[union-attr]
    assert store.get("VirtualService", "bookinfo", "ratings") is None
    assert store.snapshot() is before and calls == []


def test_warnings_do_not_block() -> None:
    store = ConfigStore(validator=fake_validator)
    r = store.apply([vs("zero", weight=0)])
    assert r[0].action == "created"
    assert [w.message for w in store.last_warnings] == ["no traffic"]


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, validator=fake_validator)
    assert store.apply([vs("reviews")], dry_run=True)[0].action == "created"
    assert len(store) == 0 and not list(tmp_path.rglob("*.json"))
    store.apply([vs("reviews")])
    key = ConfigKey("VirtualService", "bookinfo", "reviews")
    assert store.delete([key], dry_run=True)[0].action == "deleted"
    assert len(store) == 1


def test_delete_and_listeners_and_snapshot_cache() -> None:
    store = ConfigStore(validator=fake_validator)
    seen: list[list[str]] = []
    unsubscribe = store.add_listener(lambda rs: seen.append([f"{r.name}:{r.action}" for r in rs]))
    store.apply([vs("a"), vs("b")])
    snap = store.snapshot()
    assert store.snapshot() is snap and len(snap) == 2
    store.apply([vs("a")])                      # unchanged: no notification, same snapshot
    assert store.snapshot() is snap
    res = store.delete([ConfigKey("VirtualService", "bookinfo", "a"),
                        ConfigKey("VirtualService", "x", "nope")])
    assert [r.action for r in res] == ["deleted", "not found"]
    assert seen == [["a:created", "b:created"], ["a:deleted"]]
    assert store.snapshot() is not snap and [c.name for c in store.snapshot()] == ["b"]
    unsubscribe()
    store.apply([vs("c")])
    assert len(seen) == 2
    assert [c.name for c in store.list("VirtualService")] == ["b", "c"]
    assert store.list(namespace="other") == []


def test_persistence_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    store = ConfigStore(tmp_path, validator=fake_validator, clock=clock)
    store.apply([vs("reviews", line=3), vs("ratings", line=12),
                 Config("Namespace", "v1", "bookinfo", "", {}, labels={"istio-injection": "enabled"})])
    clock.t = 5000.0
    store.apply([vs("reviews", weight=30)])
    store.delete([ConfigKey("VirtualService", "bookinfo", "ratings")])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["objects/Namespace/_cluster/bookinfo.json",
                     "objects/VirtualService/bookinfo/reviews.json"]       # no temp files left over

    again = ConfigStore(tmp_path, validator=fake_validator, clock=clock)
    assert again.load_problems == []
    assert [str(c.key) for c in again.list()] == ["Namespace//bookinfo", "VirtualService/bookinfo/reviews"]
    reviews = again.get("VirtualService", "bookinfo", "reviews")
    assert reviews is not None and reviews == store.get("VirtualService", "bookinfo", "reviews")
    assert reviews.created == 1000.0 and reviews.source == Source("f.yaml", 1)
    assert again.get("Namespace", "", "bookinfo").labels == {"istio-injection": "enabled"}  # type: ignore[union-attr]
    assert again.snapshot().version == store.snapshot().version
    # same content again is unchanged after a restart; a new object is created after the old ones
    assert again.apply([vs("reviews", weight=30)])[0].action == "unchanged"
    again.apply([vs("late")])
    assert again.get("VirtualService", "bookinfo", "late").created > reviews.created  # type: ignore[union-attr]


def test_corrupt_state_is_quarantined_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore(tmp_path, validator=fake_validator)
    store.apply([vs("good"), vs("broken"), vs("garbage"), vs("invalid")])
    objects = tmp_path / "objects/VirtualService/bookinfo"
    (objects / "broken.json").write_text('{"kind": "VirtualService", "metadata": ')     # truncated
    (objects / "garbage.json").write_bytes(b"\xff\x00\x17garbage")
    (objects / "misplaced.json").write_text((objects / "good.json").read_text())
    record = json.loads((objects / "invalid.json").read_text())           # reads back, fails validation
    record["spec"]["http"][0]["route"][0]["weight"] = 150
    (objects / "invalid.json").write_text(json.dumps(record))

    again = ConfigStore(tmp_path, validator=fake_validator)
    assert [c.name for c in again.list()] == ["good"]                    # nothing unvalidated is served
    problems = {Path(p.path).name: p for p in again.load_problems}
    assert set(problems) == {"broken.json", "garbage.json", "misplaced.json", "invalid.json"}
    assert problems["broken.json"].error.startswith("JSONDecodeError")
    assert problems["garbage.json"].error.startswith("UnicodeDecodeError")
    assert "does not belong" in problems["misplaced.json"].error
    assert problems["invalid.json"].error == ("VirtualService/bookinfo/invalid fails validation: "
                                              "spec.http[0].route[0].weight: must be 0..100")
    for name, p in problems.items():                                    # moved aside, kept for inspection
        assert not (objects / name).exists() and Path(p.quarantine).is_file()
        assert Path(p.quarantine).parent == tmp_path / "quarantine"
        assert f"state file {objects / name} could not be restored and is NOT served" in caplog.text
    assert json.loads(Path(problems["invalid.json"].quarantine).read_text()) == record
    # a third start is clean: the bad files are no longer in the way; applying the object again repairs it
    assert ConfigStore(tmp_path, validator=fake_validator).load_problems == []
    assert again.apply([vs("broken")])[0].action == "created"
    assert json.loads((objects / "broken.json").read_text())["metadata"]["name"] == "broken"


def test_garbage_journal_record_is_quarantined(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, validator=fake_validator)
    store.apply([vs("a")])
    (tmp_path / "journal").mkdir(exist_ok=True)
    (tmp_path / "journal/000000000007.json").write_text('{"writes": [{"kind": ')
    (tmp_path / "journal/.000000000008.json.1.tmp").write_text("uncommitted")
    again = ConfigStore(tmp_path, validator=fake_validator)
    assert [c.name for c in again.list()] == ["a"]
    (problem,) = again.load_problems
    assert problem.error.startswith("journal record unreadable: JSONDecodeError")
    assert list((tmp_path / "journal").iterdir()) == []


def test_validator_crash_refuses_the_batch() -> None:
    def boom(c: Config) -> list[Issue]:
        raise RuntimeError("validator bug")

    store = ConfigStore(validator=boom)
    with pytest.raises(ConfigError, match="internal validation error: validator bug"):
        store.apply([vs("x")])
    assert len(store) == 0


def test_unsafe_names_are_refused_by_persistence(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, validator=lambda c: [])
    with pytest.raises(ValueError):
        store.apply([vs("../escape")])
    assert len(store) == 0


# --- apply_async: the journal record written off the event loop ---

def _big_batch(n: int, ns: str = "bulk") -> list[Config]:
    return [vs(f"svc-{i}", ns=ns, weight=100) for i in range(n)]


async def test_apply_async_answers_once_durable_and_leaves_the_loop_free(tmp_path: Path) -> None:
    import asyncio

    store = ConfigStore(tmp_path, validator=fake_validator, background_writes=True)
    seen: list[int] = []
    store.add_listener(lambda results: seen.append(len(results)))
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    results = await store.apply_async(_big_batch(1000))
    during = ticks - before
    stop = True
    await task
    assert [r.action for r in results] == ["created"] * 1000 and seen == [1000]
    # the record (~200 KB, fsynced) was written on the journal thread while the loop ran other tasks (written
    # on the loop, the ticker gets one or two turns: the apply's own await)
    assert during > 20, during
    # answered only once durable: a store restored from the directory now has every object
    store.close()
    again = ConfigStore(tmp_path, validator=fake_validator)
    assert len(again) == 1000 and not again.load_problems


async def test_sync_apply_during_an_async_one_keeps_commit_order(tmp_path: Path) -> None:
    import asyncio

    state = HeldJournal(tmp_path)
    store = ConfigStore(state, validator=fake_validator)
    first = asyncio.create_task(store.apply_async([*_big_batch(500), vs("reviews", weight=10)]))
    while not state.entered.is_set():   # staged (in slices), its record is being written
        await asyncio.sleep(0.001)
    assert store.get("VirtualService", "bookinfo", "reviews") is None   # not live before it is durable
    r = store.apply([vs("reviews", weight=20)])   # staged on top of the one in flight, queued behind it
    assert [x.action for x in r] == ["configured"]
    state.gate.set()
    assert [x.action for x in await first][-1] == "created"
    await store.wait_live()
    live = store.get("VirtualService", "bookinfo", "reviews")
    assert live is not None and live.spec["http"][0]["route"][0]["weight"] == 20
    store.close()
    again = ConfigStore(tmp_path, validator=fake_validator)
    restored = again.get("VirtualService", "bookinfo", "reviews")
    assert restored is not None and restored.spec["http"][0]["route"][0]["weight"] == 20
    assert len(again) == 501


class HeldJournal(StateDir):
    """The store's persistence seam with a gate: each commit waits until the test opens it (a stand-in for a
    slow disk), so "the record is in flight" lasts as long as the test needs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, background=True)
        self.gate = threading.Event()
        self.entered = threading.Event()   # a commit began (its change is staged)
        self.committed: list[list[str]] = []   # the names of each record, in the order they were written

    def commit(self, writes: Iterable[Config], deletes: Iterable[ConfigKey]) -> None:
        writes, deletes = list(writes), list(deletes)
        self.entered.set()
        if not self.gate.wait(10):
            raise OSError("the test never opened the gate")
        super().commit(writes, deletes)
        self.committed.append([c.name for c in writes] + [f"-{k.name}" for k in deletes])


async def test_sync_apply_and_delete_never_wait_on_the_loop_for_a_record_in_flight(tmp_path: Path) -> None:
    """While an async record cannot finish, synchronous applies and deletes on the loop still return (before
    the fix they blocked the loop until the record was durable: here that is forever), are staged on the
    pending view, and go live after it in commit order; listeners see the changes in that order."""
    import asyncio

    state = HeldJournal(tmp_path)
    store = ConfigStore(state, validator=fake_validator)
    seen: list[list[str]] = []
    store.add_listener(lambda results: seen.append([f"{x.name}:{x.action}" for x in results]))
    big = asyncio.create_task(store.apply_async([*_big_batch(3), vs("reviews", weight=10)]))
    while not state.entered.is_set():   # staged; its record waits at the gate
        await asyncio.sleep(0.001)
    assert store.apply([vs("reviews", weight=20)])[0].action == "configured"   # returns: the loop is free
    assert store.delete([ConfigKey("VirtualService", "bulk", "svc-0")])[0].action == "deleted"
    assert store.apply([vs("ratings")])[0].action == "created"
    with pytest.raises(ValueError, match="unsafe name"):   # refused at once, nothing queued
        store.apply([vs("..")])
    assert store.list() == [] and seen == [] and not big.done()   # nothing live before the first record
    state.gate.set()
    await big
    await store.wait_live()
    assert state.committed == [["svc-0", "svc-1", "svc-2", "reviews"], ["reviews"], ["-svc-0"], ["ratings"]]
    assert seen == [["svc-0:created", "svc-1:created", "svc-2:created", "reviews:created"],
                    ["reviews:configured"], ["svc-0:deleted"], ["ratings:created"]]
    reviews = store.get("VirtualService", "bookinfo", "reviews")
    assert reviews is not None and reviews.spec["http"][0]["route"][0]["weight"] == 20
    assert sorted(c.name for c in store.list()) == ["ratings", "reviews", "svc-1", "svc-2"]
    store.close()
    again = ConfigStore(tmp_path, validator=fake_validator)
    assert sorted(c.name for c in again.list()) == ["ratings", "reviews", "svc-1", "svc-2"]


async def test_cancelled_async_apply_still_goes_live_and_errors_reach_the_caller(tmp_path: Path) -> None:
    import asyncio

    store = ConfigStore(tmp_path, validator=fake_validator, background_writes=True)
    task = asyncio.create_task(store.apply_async(_big_batch(300)))
    await asyncio.sleep(0)
    task.cancel()   # the client went away: the committed change is not lost, nor half-applied
    with pytest.raises(asyncio.CancelledError):
        await task
    r = await store.delete_async([ConfigKey("VirtualService", "bulk", "svc-0")])
    assert [x.action for x in r] == ["deleted"] and len(store) == 299
    with pytest.raises(ValueError, match="unsafe name"):
        await store.apply_async([vs("..")])
    assert len(store) == 299 and store.get("VirtualService", "bookinfo", "..") is None
    store.close()
    assert len(ConfigStore(tmp_path, validator=fake_validator)) == 299


def test_a_bulk_checkpoint_syncs_only_its_own_file_system(tmp_path: Path) -> None:
    """More than BULK_SYNC_OVER files are flushed with syncfs(2) on their file system (Linux), not sync(2) of
    every file system on the machine, and the objects read back."""
    import sys

    from mizzen.controlplane.persist import BULK_SYNC_OVER, sync_filesystem

    assert sync_filesystem(tmp_path) == ("syncfs" if sys.platform == "linux" else "sync")
    store = ConfigStore(tmp_path, validator=lambda c: [])
    store.apply(_big_batch(BULK_SYNC_OVER + 5))
    assert not list((tmp_path / "journal").glob("*.json"))   # checkpointed: the record is gone
    assert len(ConfigStore(tmp_path, validator=lambda c: [])) == BULK_SYNC_OVER + 5


async def test_a_big_async_apply_is_staged_in_slices_and_restaged_if_the_view_moved(tmp_path: Path) -> None:
    """apply_async stages in slices (here: a yield every 20 objects), so the loop runs meanwhile; a change
    that goes live during its staging is seen: it is staged again over it and committed after it."""
    import asyncio

    state = HeldJournal(tmp_path)
    state.gate.set()
    store = ConfigStore(state, validator=fake_validator, stage_slice_s=0.0)
    big = asyncio.create_task(store.apply_async([vs("reviews", weight=10), *_big_batch(200)]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)   # the big apply has staged "reviews" (first) and yielded, not finished
    assert not big.done() and not state.entered.is_set()
    assert store.apply([vs("reviews", weight=20)])[0].action == "created"   # nothing in flight: live now
    results = await big
    assert results[0].action == "configured" and len(results) == 201   # staged again, over the new one
    reviews = store.get("VirtualService", "bookinfo", "reviews")
    assert reviews is not None and reviews.spec["http"][0]["route"][0]["weight"] == 10
    assert [names[0] for names in state.committed] == ["reviews", "reviews"]
    assert len(state.committed[1]) == 201
    store.close()
    again = ConfigStore(tmp_path, validator=fake_validator).get("VirtualService", "bookinfo", "reviews")
    assert again is not None and again.spec["http"][0]["route"][0]["weight"] == 10
