"""Parsing and validating the documents of an API request (apply, delete, analyze) off the event loop.

A request body of up to :data:`MAX_BODY` bytes holds up to :data:`MAX_OBJECTS` objects (like Kubernetes'
3 MiB request limit; more is answered 413). Parsing and validating that much takes seconds of pure-Python
CPU, which in the control plane's process would stall every xDS stream, so bodies over
:data:`INLINE_MAX_BYTES` go to one worker process (a ``ProcessPoolExecutor`` started on first use, spawned,
not forked, so it shares nothing with gRPC); small ones, the usual ``mizzen apply -f``, are parsed in place
with the same code (:func:`mizzen.config.loader.load_texts`, which counts objects before validating). The
worker answers with each object's stored JSON and content hash; the objects are rebuilt from it in slices
of a few milliseconds. Each object's field -> line map (most of its stored JSON: ~200 entries for a
VirtualService of 20 routes) is not parsed then: :class:`LazyLines` reads it from the stored JSON on first
use (only a message about the object needs it), which cuts the rebuild's CPU on the event loop and the
memory the objects hold. Each object's field index (:meth:`Config.spec_fields`, which the first push after the
apply reads for every new object: ~170 ms of walking 1,000 specs) is built by the worker too and sent along.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from mizzen.config.errors import Issue
from mizzen.config.loader import LoadResult, TooManyObjects, load_texts
from mizzen.config.model import Config
from mizzen.controlplane.persist import record_json, record_to_config

log = logging.getLogger(__name__)

__all__ = [
    "INLINE_MAX_BYTES",
    "MAX_BODY",
    "MAX_OBJECTS",
    "LazyLines",
    "ParsePool",
    "ParserCrashed",
    "TooManyObjects",
]

MAX_BODY = 3 * 1024 * 1024        # bytes in one API request (Kubernetes' default request limit: 3 MiB)
MAX_OBJECTS = 1000                # objects in one apply/delete/analyze request
INLINE_MAX_BYTES = 32 * 1024      # smaller bodies are parsed on the event loop (a few milliseconds)
WORKER_NICE = 10                  # the worker's scheduling priority, below the control plane's
SLICE_S = 0.005                   # longest stretch of rebuilding objects between two yields to the loop


@dataclass
class Prepared:
    """What the worker sends back: each object as its stored JSON (cheap to pickle: bytes, not thousands of
    small objects, whose unpickling would hold the GIL for seconds) with its content hash and where its
    ``lines`` map starts in that JSON (-1: not found, parse it all), and the issues."""

    records: list[tuple[bytes, str, int]]
    errors: list[Issue]
    warnings: list[Issue]
    # per record: its spec's field names (Config.spec_fields) as a JSON list; empty: computed when rebuilt
    fields: list[bytes] = field(default_factory=list)


_LINES_TAIL = b"}}"   # the stored JSON ends with the lines map, closing "mizzen" and the record


def _lines_offset(raw: bytes, lines: Mapping[str, int]) -> int:
    """Where the JSON of ``lines`` starts in the stored JSON ``raw`` (its last value), or -1."""
    tail = json.dumps(dict(lines)).encode() + _LINES_TAIL
    start = len(raw) - len(tail)
    return start if raw.endswith(tail) and raw[:start].endswith(b'"lines": ') else -1


class LazyLines(Mapping[str, int]):
    """An object's field -> line map, parsed from its stored JSON (``raw[start:end]``) on first use."""

    __slots__ = ("_end", "_map", "_raw", "_start")

    def __init__(self, raw: bytes, start: int, end: int) -> None:
        self._raw, self._start, self._end = raw, start, end
        self._map: dict[str, int] | None = None

    @property
    def parsed(self) -> bool:
        return self._map is not None

    def _lines(self) -> dict[str, int]:
        if self._map is None:
            loaded = json.loads(self._raw[self._start:self._end])
            self._map = {str(k): int(v) for k, v in loaded.items()}
            self._raw = b""
        return self._map

    def __getitem__(self, key: str) -> int:
        return self._lines()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines())

    def __len__(self) -> int:
        return len(self._lines())

    def __reduce__(self) -> tuple[type[dict[str, int]], tuple[dict[str, int]]]:
        return dict, (self._lines(),)   # pickled as the plain map


def load_prepared(docs: Sequence[tuple[str, str]], namespace: str | None, max_objects: int) -> Prepared:
    """:func:`load_texts` in the worker process, the objects serialized as the store will persist them."""
    result = load_texts(docs, namespace, max_objects)
    records = []
    fields = []
    for c in result.configs:
        raw = record_json(c)
        records.append((raw, c.content_hash(), _lines_offset(raw, c.lines)))
        fields.append(json.dumps(sorted(c.spec_fields())).encode())
    return Prepared(records, result.errors, result.warnings, fields)


async def _yield() -> None:
    await asyncio.sleep(0)


async def unpack(prepared: Prepared, slice_s: float = SLICE_S,
                 pause: Callable[[], Awaitable[None]] = _yield) -> LoadResult:
    """The objects back from their JSON, calling ``pause`` (default: a yield to the event loop) whenever a
    stretch took ``slice_s`` (their ``lines`` left unparsed: :class:`LazyLines`)."""
    configs: list[Config] = []
    fields = prepared.fields if len(prepared.fields) == len(prepared.records) else None
    t0 = time.monotonic()
    for i, (raw, digest, lines_at) in enumerate(prepared.records):
        if time.monotonic() - t0 > slice_s:
            await pause()
            t0 = time.monotonic()
        if lines_at < 0:
            config = record_to_config(json.loads(raw))
        else:
            config = record_to_config(json.loads(raw[:lines_at] + b"{}" + _LINES_TAIL))
            object.__setattr__(config, "lines", LazyLines(raw, lines_at, len(raw) - len(_LINES_TAIL)))
        object.__setattr__(config, "_content_hash", digest)   # the caches Config.content_hash and
        object.__setattr__(config, "_record_json", raw)       # record_json keep (same content)
        if fields is not None:   # the field index the first push after the apply reads, from the worker
            object.__setattr__(config, "_spec_fields", frozenset(json.loads(fields[i])))
        else:
            config.spec_fields()
        configs.append(config)
    return LoadResult(configs, prepared.errors, prepared.warnings)


class ParserCrashed(Exception):
    """The worker process died twice on one request (answered 400: the request cannot be parsed)."""


class ParsePool:
    """One lazily started worker process for :func:`load_documents` on large bodies."""

    def __init__(self, inline_max_bytes: int = INLINE_MAX_BYTES) -> None:
        self.inline_max_bytes = inline_max_bytes
        self._pool: ProcessPoolExecutor | None = None
        # how the rebuild yields between its slices (the control plane's: Pusher.make_way)
        self.pause: Callable[[], Awaitable[None]] = _yield

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # niced: on a busy machine the parse waits, not the xDS streams and the proxies
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=os.nice, initargs=(WORKER_NICE,))
        return self._pool

    async def load(self, docs: Sequence[tuple[str, str]], namespace: str | None,
                   max_objects: int = MAX_OBJECTS) -> LoadResult:
        size = sum(len(t) for t, _ in docs)
        if size <= self.inline_max_bytes:
            return load_texts(docs, namespace, max_objects)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                prepared = await loop.run_in_executor(self._executor(), load_prepared, list(docs), namespace,
                                                      max_objects)
                return await unpack(prepared, pause=self.pause)
            except RuntimeError as e:
                if "bootstrapping phase" not in str(e):
                    raise
                # spawn needs an `if __name__ == "__main__":` guard in the main script; without one, parse
                # here (correct, only slower for the event loop)
                log.warning("cannot start the parse worker process (%s); parsing in this process", e)
                self.inline_max_bytes = 1 << 62
                return load_texts(docs, namespace, max_objects)
            except BrokenProcessPool:   # the worker died (killed, out of memory): start a new one once
                log.warning("the parse worker process died; starting a new one (attempt %d)", attempt)
                self._pool = None
        raise ParserCrashed("the request could not be parsed: the parser process died on it")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
