"""On-disk state of the config store: a journal of applies (the commit points) and one JSON file per object.

Layout: ``<state>/objects/<Kind>/<namespace or _cluster>/<name>.json``, registered workloads (the pods of the
local mesh) under ``<state>/workloads/<namespace>/<name>.json``, pending applies under
``<state>/journal/<seq>.json`` and files that could not be restored under ``<state>/quarantine/``.

Every apply or delete is first written as ONE journal record (temporary file, fsync, rename, directory fsync):
that rename is the apply's commit point. A record leaves out the objects' field -> line maps (most of their
bytes); the object files keep them. Only then are the object files written (each one atomically) and
the record removed (a "checkpoint"). At start, records still present are replayed in order, so after a crash
at any step either all or none of an apply's objects are on disk. Names too long for a file name (over 195
characters) are stored as a readable prefix plus a hash. A file that cannot be read back is moved aside to
``quarantine/`` and reported (log and :class:`LoadProblem`), never served.

``MIZZEN_TEST_CRASH_AT=<step>`` makes the process SIGKILL itself at that named step of an apply (a test-only
seam for the crash-consistency test; see :data:`CRASH_STEPS`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mizzen.atomicfile import fsync_dir, write_atomic
from mizzen.config.model import Config, ConfigKey, Source
from mizzen.registry.model import Workload

log = logging.getLogger(__name__)

__all__ = [
    "CRASH_STEPS",
    "LoadProblem",
    "StateDir",
    "config_to_record",
    "crash_point",
    "file_stem",
    "record_to_config",
    "sync_filesystem",
]

CLUSTER_SCOPE_DIR = "_cluster"
FORMAT_VERSION = 1
# file names are at most 255 bytes (NAME_MAX): longer object names keep a readable prefix plus a hash
MAX_PLAIN_STEM = 195
_HASHED_PREFIX = 180
BULK_SYNC_OVER = 16     # a checkpoint of more files syncs their file system once instead of each file

CRASH_ENV = "MIZZEN_TEST_CRASH_AT"
# the named steps of an apply/delete, in order (before-commit and journal-tmp: nothing committed yet)
CRASH_STEPS = ("before-commit", "journal-tmp", "committed", "checkpoint-partial", "checkpoint-written",
               "done")


def crash_point(step: str) -> None:
    """SIGKILL this process if the test-only ``MIZZEN_TEST_CRASH_AT`` names ``step`` (a seam for tests)."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("%s=%s: killing this process", CRASH_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)


def file_stem(name: str) -> str:
    """The file name (without ``.json``) for an object or workload name: the name itself, or for names longer
    than 195 characters their first 180 plus a hash (never equal to a plain name's stem)."""
    if len(name.encode()) <= MAX_PLAIN_STEM:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:_HASHED_PREFIX]}.{digest}"


@dataclass(frozen=True)
class LoadProblem:
    """A state file that could not be restored, and where it was moved (``quarantine``)."""

    path: str
    error: str
    quarantine: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error, "quarantine": self.quarantine}

    def __str__(self) -> str:
        moved = f" (moved to {self.quarantine})" if self.quarantine else ""
        return f"{self.path}: {self.error}{moved}"


def config_to_record(config: Config) -> dict[str, Any]:
    """The JSON form of a stored object (manifest plus store bookkeeping)."""
    record = config.to_manifest()
    record["mizzen"] = {
        "format": FORMAT_VERSION,
        "created": config.created,
        "source": {"file": config.source.file, "line": config.source.line} if config.source else None,
        "lines": dict(config.lines),
    }
    return record


_CREATED_SLOT = b'"mizzen": {"format": %d, "created": null' % FORMAT_VERSION


def record_json(config: Config) -> bytes:
    """:func:`config_to_record` as JSON with ``created`` left null, computed once per object and kept on it
    (the API's worker process prepares it, so a large apply is not serialized on the event loop)."""
    cached: bytes | None = config.__dict__.get("_record_json")
    if cached is None:
        record = config_to_record(config)
        record["mizzen"]["created"] = None
        cached = json.dumps(record, default=str).encode()
        object.__setattr__(config, "_record_json", cached)
    return cached


def _with_created(fragment: bytes, created: float) -> bytes:
    """The record JSON with its creation time filled in (the store bookkeeping is the last key)."""
    i = fragment.rfind(_CREATED_SLOT)
    if i < 0:
        raise ValueError("not a record made by record_json")
    slot = b'"mizzen": {"format": %d, "created": %s' % (FORMAT_VERSION, json.dumps(created).encode())
    return fragment[:i] + slot + fragment[i + len(_CREATED_SLOT):]


_BOOKKEEPING = b'"mizzen": {"format": '
_LINES_KEY = b'"lines": '


def _without_lines(data: bytes) -> bytes:
    """A stored record with an empty field -> line map, for the journal: the map is ~70 % of a record (221
    entries for a VirtualService of 20 routes), and the journal record of a maximum-size apply is fsynced
    while every later apply waits behind it (11.4 MiB -> 3.4 MiB). The object files keep the map; an object
    restored from a replayed record (after a crash between commit and checkpoint) has none: messages about
    it then name no line. The map is the last value of the bookkeeping object, itself the record's last
    value (see :func:`config_to_record`): its start is the last ``"mizzen": {"format": `` (the map's values
    are numbers, so none of its keys is followed by an object), its ``lines`` key the first after that (the
    bookkeeping before it holds numbers and the source ``{"file": ..., "line": n}``, whose string escapes
    every quote)."""
    start = data.rfind(_BOOKKEEPING)
    at = data.find(_LINES_KEY, start) if start >= 0 else -1
    if at < 0 or not data.endswith(b"}}"):
        return data
    return data[:at + len(_LINES_KEY)] + b"{}}}"


def record_to_config(record: Any) -> Config:
    """Inverse of :func:`config_to_record`; raises ValueError on anything malformed."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    meta = record.get("metadata")
    extra = record.get("mizzen") or {}
    if not isinstance(meta, dict) or not isinstance(extra, dict):
        raise ValueError("metadata/mizzen must be objects")
    kind, api_version, name = record.get("kind"), record.get("apiVersion"), meta.get("name")
    if not (isinstance(kind, str) and isinstance(api_version, str) and isinstance(name, str) and name):
        raise ValueError("kind, apiVersion and metadata.name are required")
    namespace = meta.get("namespace") or ""
    spec = record.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict) or not isinstance(namespace, str):
        raise ValueError("spec must be an object and metadata.namespace a string")
    src = extra.get("source")
    source = Source(str(src["file"]), int(src["line"])) if isinstance(src, dict) else None
    lines = extra.get("lines") or {}
    return Config(
        kind=kind,
        api_version=api_version,
        name=name,
        namespace=namespace,
        spec=spec,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        source=source,
        created=float(extra.get("created") or 0.0),
        lines={str(k): int(v) for k, v in dict(lines).items()},
    )


def _safe_part(part: str) -> bool:
    return "/" not in part and part not in ("", ".", "..") and "\0" not in part


class StateDir:
    """Reads and writes the journal and the object files under ``<root>``.

    With ``background=True`` checkpoints (writing object files after a commit) run on one worker thread, in
    commit order, so a large apply never blocks the caller's event loop on thousands of fsyncs; :meth:`wait`
    waits for them (the control plane calls it on stop). :meth:`commit` writes the journal record on the
    calling thread; :meth:`commit_in_thread` writes it on the journal thread (a 3 MiB record and its fsyncs
    off the event loop) and returns a future that is done once the record is durable. Records are numbered
    in the order they are written (one at a time); callers that mix both keep their own order (the store
    waits for a queued record before writing the next one).
    """

    def __init__(self, root: Path, *, background: bool = False) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.workloads = self.root / "workloads"
        self.journal = self.root / "journal"
        self.quarantine = self.root / "quarantine"
        self._seq = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mizzen-state") if background else None
        self._pending: list[Future[None]] = []
        self._journal_thread: ThreadPoolExecutor | None = None   # commit_in_thread's, made on first use
        self._lock = threading.Lock()   # one record written at a time: sequence numbers follow write order
        self._failed = False   # a checkpoint failed: keep later journal records too, so replay order holds

    def path_for(self, key: ConfigKey) -> Path:
        ns = key.namespace or CLUSTER_SCOPE_DIR
        for part in (key.kind, ns, key.name):
            if not _safe_part(part):
                raise ValueError(f"{key}: unsafe name for a state file")
        return self.objects / key.kind / ns / f"{file_stem(key.name)}.json"

    def write(self, config: Config) -> None:
        atomic_write(self.path_for(config.key), _with_created(record_json(config), config.created))

    def remove(self, key: ConfigKey) -> None:
        remove_file(self.path_for(key))

    # --- the journal: one record per apply/delete is its commit point ---------------------------------------
    def commit(self, writes: Iterable[Config], deletes: Iterable[ConfigKey]) -> None:
        """Make one apply durable: a single journal record (the commit point), then the checkpoint that writes
        the object files (now, or on the worker thread with ``background``)."""
        writes, deletes = list(writes), list(deletes)
        with self._lock:
            self._commit_locked(writes, deletes)

    def commit_in_thread(self, writes: Iterable[Config], deletes: Iterable[ConfigKey]) -> Future[None]:
        """:meth:`commit` on the journal thread (every step: name checks, the record, its fsyncs): the future
        is done once the record is durable (or failed, with commit's exception); written in call order."""
        writes, deletes = list(writes), list(deletes)
        with self._lock:
            if self._journal_thread is None:
                self._journal_thread = ThreadPoolExecutor(1, thread_name_prefix="mizzen-journal")
            return self._journal_thread.submit(self.commit, writes, deletes)

    def check_names(self, writes: Iterable[Config], deletes: Iterable[ConfigKey]) -> None:
        """Raise ValueError if any object's name is unsafe for a state file (what :meth:`commit` refuses)."""
        for c in writes:
            self.path_for(c.key)
        for key in deletes:
            self.path_for(key)

    def _commit_locked(self, writes: list[Config], deletes: list[ConfigKey]) -> None:
        paths = [self.path_for(c.key) for c in writes]   # refuse unsafe names before anything is written
        for key in deletes:
            self.path_for(key)
        files = [(p, _with_created(record_json(c), c.created)) for p, c in zip(paths, writes, strict=True)]
        head = json.dumps({"format": FORMAT_VERSION,
                           "deletes": [[k.kind, k.namespace, k.name] for k in deletes]}).encode()
        body = head[:-1] + b', "writes": [' + b",".join(_without_lines(data) for _, data in files) + b"]}"
        crash_point("before-commit")
        self._seq = max(self._seq, self._last_seq()) + 1
        path = self.journal / f"{self._seq:012d}.json"
        atomic_write(path, body, step="journal-tmp")
        crash_point("committed")
        if self._executor is None:
            self._checkpoint(path, files, deletes)
        else:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._executor.submit(self._checkpoint, path, files, deletes))

    def wait(self) -> None:
        """Wait for every queued record and checkpoint (errors are logged; the journal keeps what they did not
        write)."""
        if self._journal_thread is not None:
            self._journal_thread.submit(lambda: None).result()   # the records queued before this call
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            f.result()
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]

    def close(self) -> None:
        self.wait()
        if self._journal_thread is not None:
            self._journal_thread.shutdown(wait=True)
            self._journal_thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _checkpoint(self, journal: Path, files: list[tuple[Path, bytes]], deletes: list[ConfigKey]) -> None:
        # many files: one sync of their file system for all instead of an fsync each (3 ms apiece adds up to
        # seconds)
        bulk = len(files) + len(deletes) > BULK_SYNC_OVER
        try:
            for i, (path, data) in enumerate(files):
                atomic_write(path, data, sync=not bulk)
                if i == 0:
                    crash_point("checkpoint-partial")
            for key in deletes:
                remove_file(self.path_for(key), sync=not bulk)
            if bulk:
                sync_filesystem(self.objects)
            crash_point("checkpoint-written")
            if not self._failed:
                remove_file(journal)
            crash_point("done")
        except Exception:
            # the journal record stays, so the next start replays it (and every later one, in order)
            self._failed = True
            log.exception("writing the object files of %s failed; it is replayed at the next start", journal)

    def _last_seq(self) -> int:
        last = 0
        if self.journal.is_dir():
            for p in self.journal.glob("*.json"):
                if p.stem.isdigit():
                    last = max(last, int(p.stem))
        return last

    def recover(self) -> list[LoadProblem]:
        """Replay committed journal records (oldest first) into the object files; drop uncommitted ones."""
        problems: list[LoadProblem] = []
        if not self.journal.is_dir():
            return problems
        for tmp in self.journal.glob(".*.tmp"):
            log.warning("dropping an uncommitted apply (the process stopped before its commit): %s", tmp.name)
            tmp.unlink(missing_ok=True)
        for path in sorted(self.journal.glob("*.json")):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
                records = list(body.get("writes") or [])
                files = [(self.path_for(record_to_config(r).key), _object_bytes(r)) for r in records]
                deletes = [ConfigKey(str(k), str(ns), str(n)) for k, ns, n in body.get("deletes") or []]
            except (OSError, ValueError, TypeError, KeyError) as e:
                problems.append(self._quarantine(path, f"journal record unreadable: {type(e).__name__}: {e}"))
                continue
            log.info("replaying the committed apply %s (%d writes, %d deletes)", path.name, len(records),
                     len(deletes))
            self._checkpoint(path, files, deletes)
            self._seq = max(self._seq, int(path.stem) if path.stem.isdigit() else 0)
        return problems

    # --- loading --------------------------------------------------------------------------------------------
    def load_all(
        self, validator: Callable[[Config], list[str]] | None = None
    ) -> tuple[list[Config], list[LoadProblem]]:
        """Every object that reads back (and, given ``validator``, passes it: it returns error messages), and
        a problem per file that does not, each moved to ``quarantine/`` (sorted by path)."""
        problems = self.recover()
        configs: list[Config] = []
        if not self.objects.is_dir():
            return configs, problems
        for path in sorted(self.objects.glob("*/*/*.json")):
            try:
                config = record_to_config(json.loads(path.read_text(encoding="utf-8")))
                expected = self.path_for(config.key)
                if expected != path:
                    raise ValueError(f"object {config.key} does not belong in this file")
            except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
                problems.append(self._quarantine(path, f"{type(e).__name__}: {e}"))
                continue
            errors = validator(config) if validator is not None else []
            if errors:
                more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
                problems.append(self._quarantine(path, f"{config.key} fails validation: "
                                                       + "; ".join(errors[:3]) + more))
                continue
            configs.append(config)
        return configs, problems

    def read_objects(self) -> list[Config]:
        """The object files that read back now, with no recovery, validation or quarantine: a look from
        another process (``mizzen demo``) at what the owning control plane restored; it reports the rest."""
        configs: list[Config] = []
        for path in sorted(self.objects.glob("*/*/*.json")) if self.objects.is_dir() else []:
            try:
                configs.append(record_to_config(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError, KeyError, RecursionError):
                continue
        return configs

    def _quarantine(self, path: Path, error: str) -> LoadProblem:
        """Move a file that cannot be restored to ``quarantine/`` (kept for inspection), loudly."""
        rel = path.relative_to(self.root).as_posix().replace("/", "__")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.quarantine / f"{stamp}-{file_stem(rel)}"
        try:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            fsync_dir(path.parent)
            where = str(target)
        except OSError as e:
            log.error("could not move %s to %s: %s", path, self.quarantine, e)
            where = ""
        problem = LoadProblem(str(path), error, where)
        log.error("state file %s could not be restored and is NOT served: %s%s", path, error,
                  f"; moved to {where}" if where else "")
        return problem


    # --- registered workloads ------------------------------------------------------------------------------
    def workload_path(self, namespace: str, name: str) -> Path:
        for part in (namespace, name):
            if not _safe_part(part):
                raise ValueError(f"workload {namespace}/{name}: unsafe name for a state file")
        return self.workloads / namespace / f"{file_stem(name)}.json"

    def write_workload(self, w: Workload) -> None:
        record = dataclasses.asdict(w)
        atomic_write(self.workload_path(w.namespace, w.name), json.dumps(record, sort_keys=True).encode())

    def remove_workload(self, namespace: str, name: str) -> None:
        remove_file(self.workload_path(namespace, name))

    def load_workloads(self) -> tuple[list[Workload], list[LoadProblem]]:
        out: list[Workload] = []
        problems: list[LoadProblem] = []
        if not self.workloads.is_dir():
            return out, problems
        for path in sorted(self.workloads.glob("*/*.json")):
            try:
                out.append(Workload(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as e:
                problems.append(LoadProblem(str(path), f"{type(e).__name__}: {e}"))
                log.error("workload file %s is unreadable, ignored: %s", path, e)
        return out, problems


def _object_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, default=str).encode()   # no indent: the C encoder


def atomic_write(path: Path, data: bytes, *, step: str = "", sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content, never a mix (``step``: a
    crash point between the fsynced temporary file and the rename; ``sync=False``: the caller syncs)."""
    write_atomic(path, data, sync=sync, before_rename=(lambda: crash_point(step)) if step else None)


_libc: Any = None


def sync_filesystem(path: Path) -> str:
    """Flush the file system holding ``path`` to disk: ``syncfs(2)`` where there is one (Linux), so the
    control plane waits only for its own file system's writes (``sync(2)`` flushes every file system of the
    machine: on a busy one, seconds, during which the next journal fsync waits too); else ``os.sync()``.
    Returns which of the two ran."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        syncfs = _libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return "sync"
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) == 0:
            return "syncfs"
    finally:
        os.close(fd)
    os.sync()
    return "sync"


def remove_file(path: Path, *, sync: bool = True) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    if sync:
        fsync_dir(path.parent)
