"""A real ``python -m mizzen.controlplane`` process for tests: started with the given flags, its announce line
read (``mizzen control plane: xds=... http=...``), and on leaving stopped with SIGTERM, which it must exit 0
from; killed instead if the body failed."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import IO, Any

ANNOUNCE = "mizzen control plane: xds="


@asynccontextmanager
async def controlplane_process(*args: str, env: Mapping[str, str] | None = None,
                               stderr: IO[Any] | int | None = None) -> AsyncIterator[str]:
    """Yield the announce line once the control plane is serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mizzen.controlplane", *args, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        env=None if env is None else dict(env))
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith(ANNOUNCE), line
        yield line
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
