"""One container of one pod as a supervised local process: started in its own session/process group (and
killed with the runner via PDEATHSIG), output appended to a log file, restarted with exponential backoff when
it exits unexpectedly (like kubelet's CrashLoopBackOff), stopped with SIGTERM then SIGKILL on its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mizzen.childproc import signal_group, tied_to_parent

log = logging.getLogger("mizzen.runner")


@dataclass(frozen=True)
class Backoff:
    start_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0        # running this long resets the backoff

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.start_s * (2 ** max(0, failures - 1))))


async def spawn_logged(argv: Sequence[str], env: Mapping[str, str], log_path: Path, *, cwd: str | None = None,
                       stdin: int = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own session, output appended to ``log_path``, SIGKILLed if we go away."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *tied_to_parent(list(argv), dict(env)), env=dict(env), cwd=cwd or None, stdin=stdin, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float, what: str) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace_s``, then SIGKILL whatever is left in the
    group; returns once the process is gone."""
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.1fs; killing", what, grace_s)
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    signal_group(proc.pid, signal.SIGKILL)    # anything the app left behind in its group


class Supervised:
    """What a supervised process reports (kubelet's container status) and its crash-loop step."""

    label: str
    log_path: Path
    backoff: Backoff
    restarts: int
    last_exit: int | None
    state: str            # Waiting | Running | CrashLoopBackOff | Failed | Terminated
    message: str
    _stopping: bool
    _proc: asyncio.subprocess.Process | None

    @property
    def pid(self) -> int | None:
        """The running process's pid (None while none runs)."""
        p = self._proc
        return p.pid if p is not None and p.returncode is None else None

    def _changed(self) -> None:
        raise NotImplementedError

    def _failed(self, message: str) -> None:
        self.state, self.message = "Failed", message
        self._changed()

    async def _crash_loop_wait(self, proc: asyncio.subprocess.Process, failures: int) -> int | None:
        """Wait for ``proc`` to exit; then (unless stopping) record the exit, report CrashLoopBackOff and
        sleep the backoff delay. Returns the failure count so far, or None when stopping."""
        started = time.monotonic()
        code = await proc.wait()
        if self._stopping:
            return None
        if time.monotonic() - started >= self.backoff.stable_s:
            failures = 0
        failures += 1
        delay = self.backoff.delay(failures)
        self.last_exit, self.state = code, "CrashLoopBackOff"
        self.message = f"exited with code {code}; restarting in {delay:.1f}s"
        log.warning("container %s exited with code %s; restart #%d in %.1fs (log: %s)",
                    self.label, code, self.restarts + 1, delay, self.log_path)
        self._changed()
        await asyncio.sleep(delay)
        return None if self._stopping else failures

    async def _restart(self) -> None:
        """Start the process again (raises OSError when it cannot)."""
        raise NotImplementedError

    def _restarted(self) -> None:
        """Report the restart (``restarts`` counts it already)."""
        raise NotImplementedError

    async def _supervise(self) -> None:
        """Restart the process with backoff each time it exits, until stopped or it cannot be started."""
        failures = 0
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            step = await self._crash_loop_wait(proc, failures)
            if step is None:
                return
            failures = step
            try:
                await self._restart()
            except OSError as exc:
                self._failed(f"cannot restart: {exc}")
                return
            self.restarts += 1
            self._restarted()


class ContainerProcess(Supervised):
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
    def running(self) -> bool:
        return self.pid is not None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _spawn(self) -> None:
        self._proc = await spawn_logged(self.argv, self.env, self.log_path, cwd=self.cwd)
        self.state, self.message = "Running", ""
        self.started_at = time.time()
        self._changed()

    async def start(self) -> None:
        """Start the process (raises OSError when it cannot be executed) and its supervisor."""
        try:
            await self._spawn()
        except OSError as exc:
            self._failed(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}")
            raise
        self._task = asyncio.create_task(self._supervise(), name=f"container {self.label}")

    async def _restart(self) -> None:
        await self._spawn()

    def _restarted(self) -> None:
        log.info("container %s restarted (restart count %d)", self.label, self.restarts)
        self._changed()

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; waits until the process is gone."""
        self._stopping = True
        proc = self._proc
        if proc is not None:
            await stop_group(proc, grace_s, f"container {self.label}")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = "Terminated"
        self._changed()
