"""Benchmark: ``mizzen demo`` start -> first 200 on /productpage through the gateway, and the demo's memory.

    .venv/bin/python bench/bench_demo.py              # 3 runs
    .venv/bin/python bench/bench_demo.py --runs 1

Each run starts ``.venv/bin/mizzen demo --fresh`` as a real subprocess on free ports and a temp --state-dir,
polls ``http://<gateway>/productpage`` until it answers 200 (seconds from spawn), then sums VmRSS and PSS
over the demo process and all its descendants (from /proc), split by kind: runner (the demo Python process),
control plane (its process and its warm spare), apps (Bookinfo processes) and Envoys. Then SIGINT, and
checks that every process of the tree exited and the gateway port is free again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import pss_mb, rss_mb, tree_pids

MIZZEN = Path(sys.executable).parent / "mizzen"
HOST = f"127.74.{1 + os.getpid() % 200}.1"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def kind_of(pid: int, root: int) -> str:
    if pid == root:
        return "runner"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    if b"mizzen.controlplane" in argv:     # the running one and its warm spare (--standby)
        return "control plane"
    return "envoys" if os.path.basename(argv[0].decode(errors="replace")) == "envoy" else "apps"


def one_run(i: int, timeout: float) -> tuple[float | None, dict[str, tuple[int, float, float]], bool]:
    """(seconds to first 200 or None, kind -> (processes, VmRSS MB, PSS MB), stopped cleanly)."""
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-demo-") as tmp:
        port, tls = free_port(HOST), free_port(HOST)
        cmd = [str(MIZZEN), "demo", "--fresh", "--state-dir", f"{tmp}/state", "--host", HOST,
               "--port", str(port), "--tls-port", str(tls), "--xds-port", str(free_port("127.0.0.1")),
               "--api-port", str(free_port("127.0.0.1")), "--ready-timeout", str(timeout)]
        out = open(f"{tmp}/demo.out", "wb")   # noqa: SIM115 - closed below, after the process ended
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "COLUMNS": "120"})
        ready: float | None = None
        url = f"http://{HOST}:{port}/productpage"
        mem: dict[str, tuple[int, float, float]] = {}
        pids: list[int] = []
        try:
            with httpx.Client(trust_env=False, timeout=2) as client:
                while time.monotonic() - t0 < timeout and proc.poll() is None:
                    try:
                        if client.get(url).status_code == 200:
                            ready = time.monotonic() - t0
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
            if ready is None:
                print(f"run {i}: no 200 from {url} within {timeout:.0f}s (exit {proc.poll()})")
            time.sleep(1.0)     # let startup allocations settle before measuring
            pids = tree_pids(proc.pid)
            for pid in pids:
                k = kind_of(pid, proc.pid)
                n, rss, pss = mem.get(k, (0, 0.0, 0.0))
                mem[k] = (n + 1, rss + rss_mb(pid), pss + pss_mb(pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"run {i}: demo did not stop within 30 s after SIGINT; killing")
                proc.kill()
                proc.wait(5)
            out.close()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if alive(p)]
        clean = proc.returncode == 0 and not left and port_free(HOST, port)
        if not clean:
            tail = Path(f"{tmp}/demo.out").read_text(errors="replace").splitlines()[-10:]
            print(f"run {i}: exit {proc.returncode}, processes left {left}, gateway port free "
                  f"{port_free(HOST, port)}\n  " + "\n  ".join(tail))
            for p in left:     # leave nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        return ready, mem, clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the first 200 per run")
    args = ap.parse_args()
    if not MIZZEN.exists():
        sys.exit(f"{MIZZEN} not found: run with the project's venv python")
    times: list[float] = []
    for i in range(1, args.runs + 1):
        ready, mem, clean = one_run(i, args.timeout)
        total = sum(v[1] for v in mem.values()), sum(v[2] for v in mem.values())
        parts = ", ".join(f"{k} x{n}: {rss:.0f} MB RSS / {pss:.0f} MB PSS"
                          for k, (n, rss, pss) in sorted(mem.items()))
        shown = f"{ready:.2f} s" if ready is not None else "FAILED"
        print(f"run {i}: first 200 on /productpage after {shown}; stopped cleanly: {clean}")
        print(f"  memory of the demo tree: total {total[0]:.0f} MB RSS / {total[1]:.0f} MB PSS ({parts})")
        if ready is not None:
            times.append(ready)
    if times:
        print(f"\nstart -> first 200: median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
              f"max {max(times):.2f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
