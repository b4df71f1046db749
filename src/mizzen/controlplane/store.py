"""The config store: applied objects, all-or-nothing apply/delete, snapshots and change listeners.

Every apply re-validates the whole batch (unless the caller hands in the issues the same validator found,
as the API's worker process does) and refuses it entirely on any error (:class:`ConfigError`), so a
half-applied change never reaches a proxy. ``created`` timestamps survive updates (Istio orders same-host
VirtualServices by creation). With a state directory every change is committed to disk as one journal
record before memory changes (see :mod:`.persist`), and the store is reloaded from it at start: every
restored object is validated again, and what cannot be restored is quarantined and listed in
:attr:`ConfigStore.load_problems`.

:meth:`ConfigStore.apply_async` / :meth:`ConfigStore.delete_async` (the API's) write that record on the
journal thread and answer once it is durable, so the event loop keeps serving xDS meanwhile. Changes become
visible (memory, listeners) in commit order. Every change is staged against the *pending view* (the live
objects with the changes in flight laid over them), so nothing waits for a record in flight on the loop: a
synchronous :meth:`ConfigStore.apply` / :meth:`ConfigStore.delete` made on the loop while records are in
flight is validated and staged at once, its record queued behind theirs, and it goes live after them
(:meth:`ConfigStore.wait_live` waits for that).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from mizzen.config.errors import ConfigError, Issue, Severity
from mizzen.config.model import Config, ConfigKey, ConfigSnapshot
from mizzen.controlplane.persist import LoadProblem, StateDir

log = logging.getLogger(__name__)

__all__ = [
    "CONFIGURED",
    "CREATED",
    "DELETED",
    "NOT_FOUND",
    "UNCHANGED",
    "ApplyResult",
    "ConfigStore",
    "Listener",
    "Validator",
    "default_validator",
]

Validator = Callable[[Config], list[Issue]]
Listener = Callable[[list["ApplyResult"]], None]

CREATED = "created"
CONFIGURED = "configured"
UNCHANGED = "unchanged"
DELETED = "deleted"
NOT_FOUND = "not found"


@dataclass(frozen=True)
class ApplyResult:
    kind: str
    namespace: str
    name: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "action": self.action}

    @property
    def changed(self) -> bool:
        return self.action in (CREATED, CONFIGURED, DELETED)


@dataclass
class _InFlight:
    """A change whose journal record is being written on the journal thread; made live once it is durable."""

    record: Future[None]
    writes: dict[ConfigKey, Config]
    deletes: builtins.list[ConfigKey]
    results: builtins.list[ApplyResult]
    last_created: float
    settled: asyncio.Future[None] | None = field(default=None)
    caller_waits: bool = True   # False: a synchronous apply queued behind others (nobody awaits it)
    gone: frozenset[ConfigKey] = field(init=False)

    def __post_init__(self) -> None:
        self.gone = frozenset(self.deletes)


STAGE_SLICE_S = 0.005   # apply_async stages for at most this long between two yields to the loop
_STAGE_STEP = 20        # objects staged between two looks at the clock


async def _yield() -> None:
    await asyncio.sleep(0)


@dataclass
class _Staged:
    """A staged apply: its results, the objects that change, the new last creation time, its warnings, and
    what it read (each key's object in the pending view, the last creation time) to tell if that moved."""

    results: builtins.list[ApplyResult]
    changed: dict[ConfigKey, Config]
    last_created: float
    warnings: builtins.list[Issue]
    seen: dict[ConfigKey, Config | None]
    base_last_created: float


def default_validator() -> Validator:
    """The per-kind validators of :mod:`mizzen.config.validation` (imported on first use: the schemas load
    with it)."""
    from mizzen.config.validation import validate

    fn: Validator = validate
    return fn


class ConfigStore:
    """Mutable set of applied objects. Not thread-safe: use it from one thread (the control plane's loop)."""

    def __init__(
        self,
        state_dir: StateDir | Path | str | None = None,
        *,
        validator: Validator | None = None,
        clock: Callable[[], float] = time.time,
        background_writes: bool = False,
        checks: Validator | None = None,
        stage_slice_s: float = STAGE_SLICE_S,
    ) -> None:
        self._validator = validator
        self._checks = checks   # policy beyond validation, run on every apply (also a prevalidated one)
        self._clock = clock
        self.stage_slice_s = stage_slice_s   # apply_async's longest stretch of staging between yields
        # how apply_async yields between its slices (the control plane's: Pusher.make_way, which also lets
        # a running push finish first)
        self.pause: Callable[[], Awaitable[None]] = _yield
        self._objects: dict[ConfigKey, Config] = {}
        self._snapshot: ConfigSnapshot | None = None
        self._listeners: list[Listener] = []
        self._last_created = 0.0
        self._inflight: builtins.list[_InFlight] = []   # async commits, in commit order
        self.load_problems: list[LoadProblem] = []
        self.last_warnings: list[Issue] = []   # warnings of the last apply()
        if isinstance(state_dir, StateDir) or state_dir is None:
            self._state = state_dir
        else:
            self._state = StateDir(Path(state_dir), background=background_writes)
        if self._state is not None:
            configs, self.load_problems = self._state.load_all(self._restore_errors)
            for c in configs:
                self._objects[c.key] = c
                self._last_created = max(self._last_created, c.created)
            if configs:
                log.info("loaded %d objects from %s", len(configs), self._state.root)

    @property
    def state(self) -> StateDir | None:
        """The state directory the objects persist in (None: in memory only)."""
        return self._state
    def _restore_errors(self, config: Config) -> builtins.list[str]:
        """The validation errors of an object read back from disk (it is never served with any)."""
        return [i.message if not i.path else f"{i.path}: {i.message}" for i in self.validate([config])
                if i.severity is Severity.ERROR]

    def wait_written(self) -> None:
        """Wait until the object files of every commit are written (the journal already holds them)."""
        if self._state is not None:
            self._state.wait()

    def close(self) -> None:
        """:meth:`wait_written`, then stop the writer thread."""
        if self._state is not None:
            self._state.close()

    # --- reading --------------------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path | None:
        return self._state.root if self._state else None

    def get(self, kind: str, namespace: str, name: str) -> Config | None:
        return self._objects.get(ConfigKey(kind, namespace, name))

    def list(
        self, kind: str | None = None, namespace: str | None = None, name: str | None = None
    ) -> builtins.list[Config]:
        out = [
            c for c in self._objects.values()
            if (kind is None or c.kind == kind)
            and (namespace is None or c.namespace == namespace)
            and (name is None or c.name == name)
        ]
        return sorted(out, key=lambda c: c.key)

    def __len__(self) -> int:
        return len(self._objects)

    def snapshot(self) -> ConfigSnapshot:
        """The current contents, built once per change."""
        if self._snapshot is None:
            self._snapshot = ConfigSnapshot.of(self._objects.values())
        return self._snapshot

    # --- listeners ------------------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changed_results)`` after every change; returns an unsubscribe function."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _notify(self, results: builtins.list[ApplyResult]) -> None:
        changed = [r for r in results if r.changed]
        if not changed:
            return
        self._snapshot = None
        for listener in list(self._listeners):
            try:
                listener(changed)
            except Exception:
                log.exception("config store listener failed")

    # --- writing --------------------------------------------------------------------------------------------
    def validate(self, configs: Iterable[Config]) -> builtins.list[Issue]:
        """Every issue (errors and warnings) the validators find in ``configs``."""
        if self._validator is None:
            self._validator = default_validator()
        issues: builtins.list[Issue] = []
        for c in configs:
            try:
                issues.extend(self._validator(c))
                if self._checks is not None:
                    issues.extend(self._checks(c))
            except Exception as e:  # a validator bug must not let an object through unchecked
                log.exception("validator failed on %s", c.key)
                issues.append(Issue(f"internal validation error: {e}", kind=c.kind, name=c.name,
                                    file=c.source.file if c.source else "",
                                    line=c.source.line if c.source else 0))
        return issues

    def apply(
        self, configs: Iterable[Config], *, dry_run: bool = False, issues: Iterable[Issue] | None = None
    ) -> builtins.list[ApplyResult]:
        """Create or update every object, or none: raises :class:`ConfigError` if any object has an error.

        ``issues``: what the store's own (default) validator found in exactly these objects, computed
        elsewhere (the API validates in a worker process); then they are not validated again here.
        Returns one result per input object, in order; a later duplicate of the same key wins. The change is
        live on return, except while records of :meth:`apply_async` are in flight (called on their loop):
        then it is queued behind them and goes live after them, without blocking the loop.
        """
        self._drain_off_loop()
        results, changed, last_created = self._stage(configs, issues)
        if dry_run:
            return results
        self._commit_now_or_queue(changed, [], results, last_created)
        return results

    def delete(self, keys: Iterable[ConfigKey], *, dry_run: bool = False) -> builtins.list[ApplyResult]:
        """Delete objects by key; a missing one is reported "not found" (not an error). Live on return, or
        queued like :meth:`apply`."""
        self._drain_off_loop()
        results, gone = self._stage_delete(keys)
        if dry_run:
            return results
        self._commit_now_or_queue({}, sorted(gone), results, self._pending_last_created())
        return results

    async def apply_async(
        self, configs: Iterable[Config], *, dry_run: bool = False, issues: Iterable[Issue] | None = None
    ) -> builtins.list[ApplyResult]:
        """:meth:`apply`, with the journal record written (and fsynced) on the journal thread: returns once it
        is durable and the change is live. Staged in slices (see :meth:`_stage_sliced`). A cancelled caller
        does not cancel the change (staging and commit run on in their own task)."""
        task = asyncio.ensure_future(self._apply_in_task(list(configs), dry_run, issues))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())   # retrieved if nobody awaits it
        results, warnings = await asyncio.shield(task)
        # an apply meanwhile (another source) replaced them: the caller reads this apply's, with no await
        # between this return and its read
        self.last_warnings = warnings
        return results

    async def _apply_in_task(self, configs: builtins.list[Config], dry_run: bool,
                             issues: Iterable[Issue] | None
                             ) -> tuple[builtins.list[ApplyResult], builtins.list[Issue]]:
        staged = await self._stage_sliced(configs, issues)
        if not dry_run:
            await self._commit_off_loop(staged.changed, [], staged.results, staged.last_created)
        return staged.results, staged.warnings

    async def delete_async(self, keys: Iterable[ConfigKey], *,
                           dry_run: bool = False) -> builtins.list[ApplyResult]:
        """:meth:`delete`, with the journal record written on the journal thread (see :meth:`apply_async`)."""
        results, gone = self._stage_delete(keys)
        if dry_run:
            return results
        await self._commit_off_loop({}, sorted(gone), results, self._pending_last_created())
        return results

    async def wait_live(self) -> None:
        """Until every change staged so far is live (or failed: its caller, or the log, has the error)."""
        while self._inflight:
            settled = self._inflight[-1].settled
            assert settled is not None
            with contextlib.suppress(Exception):
                await asyncio.shield(settled)

    # the pending view: the live objects with the changes in flight laid over them (changes are staged on it)
    def _view_get(self, key: ConfigKey) -> Config | None:
        for entry in reversed(self._inflight):
            if key in entry.writes:
                return entry.writes[key]
            if key in entry.gone:
                return None
        return self._objects.get(key)

    def _pending_last_created(self) -> float:
        return max([self._last_created, *(e.last_created for e in self._inflight)])

    def _commit_now_or_queue(self, writes: dict[ConfigKey, Config], deletes: builtins.list[ConfigKey],
                             results: builtins.list[ApplyResult], last_created: float) -> None:
        """A synchronous change: committed and made live now, or, behind records in flight, queued."""
        if self._state is None or not (writes or deletes):
            self._make_live(writes, deletes, results, last_created)
            return
        if self._inflight:   # on their loop (see _drain_off_loop): queue the record behind theirs
            self._state.check_names(writes.values(), deletes)   # refused now, before anything is queued
            self._enqueue(asyncio.get_running_loop(), writes, deletes, results, last_created,
                          caller_waits=False)
            return
        self._state.commit(writes.values(), deletes)   # the commit point; raises before it on unsafe names
        self._make_live(writes, deletes, results, last_created)

    def _enqueue(self, loop: asyncio.AbstractEventLoop, writes: dict[ConfigKey, Config],
                 deletes: builtins.list[ConfigKey], results: builtins.list[ApplyResult], last_created: float,
                 *, caller_waits: bool) -> _InFlight:
        assert self._state is not None
        entry = _InFlight(self._state.commit_in_thread(writes.values(), deletes), writes, deletes, results,
                          last_created, loop.create_future(), caller_waits)
        self._inflight.append(entry)

        def record_done(_f: Future[None]) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._settle)

        entry.record.add_done_callback(record_done)
        return entry

    async def _commit_off_loop(self, writes: dict[ConfigKey, Config], deletes: builtins.list[ConfigKey],
                               results: builtins.list[ApplyResult], last_created: float) -> None:
        if not (writes or deletes):
            return   # nothing changes (against the pending view)
        if self._state is None:
            self._make_live(writes, deletes, results, last_created)
            return
        entry = self._enqueue(asyncio.get_running_loop(), writes, deletes, results, last_created,
                              caller_waits=True)
        assert entry.settled is not None
        await asyncio.shield(entry.settled)

    def _settle(self) -> None:
        """Make live, in commit order, each in-flight change whose record is written (drop a failed one)."""
        while self._inflight and self._inflight[0].record.done():
            entry = self._inflight.pop(0)
            error = entry.record.exception()
            if error is None:
                self._make_live(entry.writes, entry.deletes, entry.results, entry.last_created)
            elif not entry.caller_waits:
                log.error("a queued change of %d objects was NOT applied: its journal record failed: %s",
                          len(entry.writes) + len(entry.deletes), error)
            if entry.settled is not None and not entry.settled.done():
                if error is None:
                    entry.settled.set_result(None)
                else:
                    entry.settled.set_exception(error)
                    entry.settled.exception()   # retrieved: a cancelled caller leaves no "never retrieved"

    def _drain_off_loop(self) -> None:
        """Called off the loop that owns the records in flight (or with none running): wait (blocking) for
        them, so what follows is committed after them. On their loop nothing waits (changes are queued)."""
        if not self._inflight:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            return
        for entry in list(self._inflight):
            with contextlib.suppress(Exception):   # reported to that change's own caller by _settle
                entry.record.result()
        self._settle()

    def _stage(self, configs: Iterable[Config], issues: Iterable[Issue] | None
               ) -> tuple[builtins.list[ApplyResult], dict[ConfigKey, Config], float]:
        """Validate and stage an apply: (results, the objects that change, the new last creation time)."""
        steps = self._staging(configs, issues)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                staged: _Staged = done.value
                break
        self.last_warnings = staged.warnings
        return staged.results, staged.changed, staged.last_created

    async def _stage_sliced(self, configs: Iterable[Config], issues: Iterable[Issue] | None) -> _Staged:
        """:meth:`_stage` yielding to the event loop after every ``stage_slice_s`` of it (a 1,000-object
        apply is ~100 ms of staging). If a change was staged meanwhile over what this one read, it is staged
        again in one go, so the result is what staging it all at once now would give."""
        batch = list(configs)
        steps = self._staging(batch, issues)
        t0 = time.monotonic()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                staged: _Staged = done.value
                break
            if time.monotonic() - t0 >= self.stage_slice_s:
                await self.pause()
                t0 = time.monotonic()
        if staged.base_last_created != self._pending_last_created() or any(
                self._view_get(k) is not old for k, old in staged.seen.items()):
            results, changed, last_created = self._stage(batch, issues)
            return _Staged(results, changed, last_created, self.last_warnings, staged.seen, last_created)
        self.last_warnings = staged.warnings
        return staged

    def _staging(self, configs: Iterable[Config], issues: Iterable[Issue] | None
                 ) -> Generator[None, None, _Staged]:
        """The staging of an apply, pausing (a bare ``yield``) every few objects; returns what it staged."""
        batch = list(configs)
        if issues is not None and self._validator not in (None, default_validator()):
            issues = None   # a custom validator must see every object itself
        if issues is None:
            issues = self.validate(batch)
        else:
            issues = builtins.list(issues)
            if self._checks is not None:
                for i, c in enumerate(batch):
                    issues.extend(self._checks(c))
                    if i % _STAGE_STEP == _STAGE_STEP - 1:
                        yield
        errors = [i for i in issues if i.severity is Severity.ERROR]
        warnings = [i for i in issues if i.severity is not Severity.ERROR]
        if errors:
            self.last_warnings = warnings
            raise ConfigError(errors)
        staged: dict[ConfigKey, Config] = {}
        seen: dict[ConfigKey, Config | None] = {}   # what each key was in the view when staged
        results: builtins.list[ApplyResult] = []
        now = self._clock()
        base = last_created = self._pending_last_created()
        for i, c in enumerate(batch):
            if i % _STAGE_STEP == _STAGE_STEP - 1:
                yield
            key = c.key
            old = self._view_get(key)
            seen.setdefault(key, old)
            if old is None:
                prev = staged.get(key)   # a duplicate in the same batch keeps the first one's timestamp
                if prev is None:
                    # strictly increasing, so objects applied together keep their order in the batch
                    last_created = max(now, last_created + 1e-6)
                new = c.with_created(prev.created if prev else last_created)
                action = CREATED
            elif old.content_hash() == c.content_hash():
                new, action = old, UNCHANGED
            else:
                new, action = c.with_created(old.created), CONFIGURED
            staged[key] = new
            results.append(ApplyResult(c.kind, c.namespace, c.name, action))
        changed = {k: v for k, v in staged.items() if seen[k] is not v}
        return _Staged(results, changed, last_created, warnings, seen, base)

    def _stage_delete(self, keys: Iterable[ConfigKey]) -> tuple[builtins.list[ApplyResult], set[ConfigKey]]:
        results: builtins.list[ApplyResult] = []
        gone: set[ConfigKey] = set()
        for k in keys:
            found = k not in gone and self._view_get(k) is not None
            results.append(ApplyResult(k.kind, k.namespace, k.name, DELETED if found else NOT_FOUND))
            if found:
                gone.add(k)
        return results, gone

    def _make_live(self, writes: dict[ConfigKey, Config], deletes: Iterable[ConfigKey],
                   results: builtins.list[ApplyResult], last_created: float) -> None:
        self._objects.update(writes)
        for k in deletes:
            self._objects.pop(k, None)
        self._last_created = max(self._last_created, last_created)
        self._notify(results)
