"""Shared by the demo tests: ``mizzen demo`` as a real process on free ports with its own state dir
(:func:`run_demo`), a handle to drive it with the ``mizzen`` command and real requests (:class:`Demo`), and
/proc helpers to check that nothing it started is left (processes, listening sockets).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MIZZEN = str(Path(sys.executable).parent / "mizzen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening() -> set[tuple[str, int]]:
    """Every listening TCP socket on the machine (IPv4, and IPv4-mapped IPv6 as IPv4)."""
    return _listeners(None)


def socket_inodes(pids: set[int]) -> set[int]:
    """The socket inodes the processes ``pids`` hold open (from /proc/<pid>/fd)."""
    out = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    return out


_V4_MAPPED = "0000000000000000FFFF0000"


def listening_of(pids: set[int]) -> set[tuple[str, int]]:
    """The listening TCP sockets held by ``pids``: what a test's own processes listen on, so that checks
    ignore everything else on the machine (a user's ``mizzen demo``, other tests). IPv4-mapped IPv6
    sockets (gRPC's ``[::ffff:127.0.0.1]:port``) count as their IPv4 address."""
    return _listeners(socket_inodes(pids))


def _listeners(inodes: set[int] | None) -> set[tuple[str, int]]:
    return set(listening_sockets(inodes).values())


def listening_sockets(inodes: set[int] | None = None) -> dict[int, tuple[str, int]]:
    """Listening TCP sockets by inode (of ``inodes`` only, if given). An inode names one socket for good
    (unlike a port number, which another process may bind as soon as it is free)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if fields[3] != "0A" or (inodes is not None and inode not in inodes):
                continue
            hexip, hexport = fields[1].split(":")
            if len(hexip) == 32:
                if not hexip.startswith(_V4_MAPPED):
                    out[inode] = (hexip, int(hexport, 16))
                    continue
                hexip = hexip[24:]
            ip = ".".join(str(int(hexip[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out[inode] = (ip, int(hexport, 16))
    return out


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(parts[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    url: str
    api: str
    state: Path
    ports: tuple[int, ...]

    def output(self) -> str:
        return (self.state / "demo.out").read_text()

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``mizzen`` commands against this demo: they find its API token in its state
        dir, as a user's commands find the default demo's."""
        env = {k: v for k, v in os.environ.items() if k not in ("MIZZEN_TOKEN", "MIZZEN_TOKEN_FILE")}
        return {**env, "MIZZEN_STATE_DIR": str(self.state)}

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    def mizzen(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([MIZZEN, "--server", self.api, *args], capture_output=True, text=True, timeout=120,
                           env=self.env)
        if check:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def page(self, client: httpx.Client) -> tuple[str, str]:
        """(reviews version that served the page, star colour or 'none')."""
        r = client.get(f"{self.url}/productpage")
        assert r.status_code == 200, r.status_code
        served = re.search(r"reviews-(v[123])-", r.text)
        colour = re.search(r'<font color="(black|red)">', r.text)
        return (served.group(1) if served else "?"), (colour.group(1) if colour else "none")

    def pages(self, n: int, client: httpx.Client | None = None) -> Counter[str]:
        with client or httpx.Client(trust_env=False, timeout=20) as c:
            return Counter(self.page(c)[0] for _ in range(n))

    def until(self, n: int, want: set[str], client: httpx.Client | None = None, timeout: float = 5) -> None:
        """Wait until ``n`` consecutive pages come only from versions in ``want`` (config propagated)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.pages(n, client)
            if set(seen) <= want:
                return
            assert time.monotonic() < deadline, seen


@contextlib.contextmanager
def run_demo(state: Path, *extra: str, ready_timeout: float = 90) -> Iterator[Demo]:
    """Start ``mizzen demo`` on free ports with ``state`` as its state dir; yields once Bookinfo is up;
    SIGKILLs its process group at the end if it is still running. Prometheus and Jaeger are off unless
    ``extra`` turns them on (a later option wins)."""
    port, tls, xds, api = free_port(), free_port(), free_port(), free_port()
    log = (state / "demo.out").open("w")
    proc = subprocess.Popen(
        [MIZZEN, "demo", "--port", str(port), "--tls-port", str(tls), "--xds-port", str(xds),
         "--api-port", str(api), "--state-dir", str(state), "--prometheus-port", "0", "--jaeger-host", "",
         *extra],
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    d = Demo(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api}", state, (port, tls, xds, api))
    try:
        deadline = time.monotonic() + ready_timeout
        # "Bookinfo is up" is printed once every pod is ready and synced; the banner after it (addresses, any
        # objects that could not be restored) ends with "Press Ctrl-C": wait for the whole banner
        while "Press Ctrl-C to stop everything." not in d.output():
            assert proc.poll() is None, d.output()
            assert time.monotonic() < deadline, f"demo not ready in {ready_timeout:.0f} s:\n" + d.output()
            time.sleep(0.1)
        yield d
    finally:
        stop_demo(proc)
        log.close()


def stop_demo(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Stop a demo as Ctrl-C does (it stops every Envoy and app in order), SIGKILL if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_all_targets_up(client: httpx.Client, url: str, timeout: float = 60,
                        pods: tuple[str, ...] = ()) -> None:
    """Until every discovered target has been scraped up a few times, and a target exists for each pod-name
    prefix in ``pods`` (a pod started just now is discovered on the next file-SD refresh). Traffic sent
    before a pod's first scrape is already in that first sample, so rate() over the window would never
    show it."""
    deadline = time.monotonic() + timeout
    while True:
        targets = client.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
        names = [t.get("labels", {}).get("pod", "") for t in targets]
        missing = [p for p in pods if not any(n.startswith(p) for n in names)]
        if targets and not missing and all(t["health"] == "up" for t in targets):
            time.sleep(2.5)          # two more scrapes at the tests' 1 s interval
            return
        assert time.monotonic() < deadline, (missing, [(t["scrapeUrl"], t["health"]) for t in targets])
        time.sleep(0.5)
