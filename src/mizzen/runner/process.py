"""One container of one pod as a supervised local process: started in its own session/process group (and
killed with the runner via PDEATHSIG), output appended to a log file, restarted with exponential backoff when
it exits unexpectedly (like kubelet's CrashLoopBackOff), stopped with SIGTERM then SIGKILL on its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mizzen.childproc import tied_to_parent

log = logging.getLogger("mizzen.runner")


@dataclass(frozen=True)
class Backoff:
    start_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0        # running this long resets the backoff

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.start_s * (2 ** max(0, failures - 1))))


class ContainerProcess:
    """Start, supervise and stop one container process. ``on_change`` is called on every state change."""

    def __init__(
        self,
        label: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: str | None = None,
        backoff: Backoff | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.backoff = backoff or Backoff()
        self.on_change = on_change
        self.restarts = 0
        self.last_exit: int | None = None
        self.state = "Waiting"            # Waiting | Running | CrashLoopBackOff | Failed | Terminated
        self.message = ""
        self.started_at: float | None = None     # wall clock of the current process's start
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *tied_to_parent(self.argv, self.env),   # SIGKILLed when the runner goes away
                env=self.env,
                cwd=self.cwd or None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.state, self.message = "Running", ""
        self.started_at = time.time()
        self._changed()

    async def start(self) -> None:
        """Start the process (raises OSError when it cannot be executed) and its supervisor."""
        try:
            await self._spawn()
        except OSError as exc:
            self.state, self.message = "Failed", f"cannot start {self.argv[0]!r}: {exc.strerror or exc}"
            self._changed()
            raise
        self._task = asyncio.create_task(self._supervise(), name=f"container {self.label}")

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started >= self.backoff.stable_s:
                failures = 0
            failures += 1
            self.last_exit = code
            delay = self.backoff.delay(failures)
            self.state = "CrashLoopBackOff"
            self.message = f"exited with code {code}; restarting in {delay:.1f}s"
            log.warning("container %s exited with code %s; restart #%d in %.1fs (log: %s)",
                        self.label, code, self.restarts + 1, delay, self.log_path)
            self._changed()
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                self.state, self.message = "Failed", f"cannot restart: {exc}"
                self._changed()
                return
            self.restarts += 1
            log.info("container %s restarted (restart count %d)", self.label, self.restarts)
            self._changed()

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; waits until the process is gone."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("container %s ignored SIGTERM for %.1fs; killing", self.label, grace_s)
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None:
            signal_group(proc.pid, signal.SIGKILL)    # anything the app left behind in its group
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = "Terminated"
        self._changed()


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid`` leads (gone or not ours: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
