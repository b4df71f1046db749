"""A helper process of the observability addons (Prometheus, Jaeger): started in its own session, its
output in a log file, dying with its parent (:func:`mizzen.childproc.tied_to_parent`), waited for until its
readiness URL answers, and stopped by its PID (SIGTERM to its process group, SIGKILL after a grace
period)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import httpx

from mizzen.childproc import signal_group, tied_to_parent

__all__ = ["Addon", "AddonError", "AddonProcess"]


class AddonError(RuntimeError):
    """An addon could not be started (one line, with where its log is)."""


class AddonProcess:
    """One running addon binary."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, ready_url: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready_url = ready_url
        self.env = dict(env) if env is not None else None
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.returncode is None else None

    async def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until ``ready_url`` answers 200; on failure it is stopped and AddonError says why
        (with the last line of its log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *tied_to_parent(self.argv), stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env=self.env)
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    break
                try:
                    r = await client.get(self.ready_url)
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = type(e).__name__
                await asyncio.sleep(0.1)
        code = self.proc.returncode
        await self.stop()
        why = f"exited with code {code}" if code is not None else f"not ready after {timeout:.0f}s ({last})"
        raise AddonError(f"{self.name} {why}; last log line: {self._last_line()} (log: {self.log_path})")

    def _last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "-"
        return lines[-1][-300:] if lines else "-"

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM its process group, SIGKILL after ``grace_s``; waits for it."""
        p, self.proc = self.proc, None
        if p is None or p.returncode is not None:
            return
        signal_group(p.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(p.wait(), grace_s)
        except TimeoutError:
            signal_group(p.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wait(), grace_s)


class _Options(Protocol):
    @property
    def url(self) -> str: ...


OptionsT = TypeVar("OptionsT", bound=_Options)


class Addon(Generic[OptionsT]):
    """What every addon has alike: its options, its binary (None: not installed), its running process, its
    URL, its PID and its stop; each addon's own ``start`` renders its config and starts ``self.process``."""

    def __init__(self, opts: OptionsT, binary: str | None) -> None:
        self.opts = opts
        self.binary = binary
        self.process: AddonProcess | None = None

    @property
    def url(self) -> str:
        return self.opts.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
            self.process = None
