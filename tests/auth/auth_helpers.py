"""Shared by the lockdown tests: a directory other users may traverse (so only file modes protect what is in
it), and running a stdlib-only Python snippet as ``nobody`` (``setpriv``; the tests run as root)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                                reason="runs requests as nobody: needs root and setpriv")

# one request with the standard library; prints {"status": ..., "body": ...} or {"error": ...}
REQUEST = r"""
import json, sys, urllib.request, urllib.error
url, method, body, headers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
req = urllib.request.Request(url, method=method, data=body.encode() if body else None, headers=headers)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=10) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode(errors="replace")}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
"""

READ = r"""
import json, sys
try:
    print(json.dumps({"text": open(sys.argv[1]).read()}))
except OSError as e:
    print(json.dumps({"error": type(e).__name__}))
"""

CONNECT_UNIX = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"POST /quitquitquit HTTP/1.0\r\n\r\n")
    print(json.dumps({"answer": s.recv(100).decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"error": type(e).__name__}))
"""


@contextmanager
def traversable_dir() -> Iterator[Path]:
    """A fresh temp dir with mode 0755 (pytest's tmp dirs are 0700, which alone would stop ``nobody``)."""
    path = Path(tempfile.mkdtemp(prefix="mizzen-lockdown-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` (stdlib only) as nobody; its one JSON line."""
    proc = subprocess.run([*AS_NOBODY, sys.executable, "-I", "-c", script, *args], capture_output=True,
                          text=True, timeout=30, check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


async def request_as_nobody(url: str, method: str = "GET", body: str = "",
                            headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One request as nobody, in a thread (the server under test runs on this event loop)."""
    return await asyncio.to_thread(as_nobody, REQUEST, url, method, body, json.dumps(headers or {}))
