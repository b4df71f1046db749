"""Soak: ``mizzen demo`` under steady traffic, config flips and a control-plane SIGKILL every few minutes.

    .venv/bin/python bench/bench_soak.py                          # 30 minutes, a kill every 5 minutes
    .venv/bin/python bench/bench_soak.py --minutes 6 --kill-every 120 --warmup 60

Starts ``.venv/bin/mizzen demo --fresh`` (temp state dir, free ports, gateway on 127.75.x.1) and, for the
whole run:

- **traffic**: one client sends GET /productpage through the gateway back to back (bounded by the run's
  length and a request cap); a request fails when it is not a 200 or the page shows a Bookinfo error;
- **config flips**: every ``--flip-every`` s the reviews VirtualService alternates between Istio's
  ``virtual-service-all-v1.yaml`` and ``virtual-service-reviews-80-20.yaml`` (POST /apis/apply); the time
  until every proxy ACKed it is recorded (an error if not within 10 s);
- **control-plane kills**: every ``--kill-every`` s the control plane (the ``istiod`` pod) is SIGKILLed;
  the time until it answers /ready and every proxy is SYNCED again is recorded (an error if not in 10 s);
- **memory**: every ``--sample-every`` s the VmRSS of the demo process (runner + supervisor), the Envoys,
  the apps and the control plane (the running one and its warm spare) is sampled.

At the end it prints the errors, the latencies, and the RSS growth per 10 minutes after ``--warmup`` (the
least-squares slope of the samples), for the long-lived processes; the control plane restarts at each
kill, so it is reported as its RSS range instead. Then SIGINT, and a check that the demo stopped cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_ms, rss_mb, tree_pids

ROOT = Path(__file__).resolve().parents[1]
MIZZEN = Path(sys.executable).parent / "mizzen"
HOST = f"127.75.{1 + os.getpid() % 200}.1"
NET = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"
FLIPS = [NET / "virtual-service-all-v1.yaml", NET / "virtual-service-reviews-80-20.yaml"]
FAILED_MARKERS = ("Error fetching", "currently unavailable")
PROXIES = 8          # 6 Bookinfo sidecars + the ingress and egress gateways


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def kind_of(pid: int, root: int, control_plane: int | None = None) -> str:
    """demo | envoys | control plane (the running one) | control plane spare | apps | gone."""
    if pid == root:
        return "demo"
    if pid == control_plane:
        return "control plane"
    argv = cmdline(pid)
    if not argv:
        return "gone"
    if os.path.basename(argv[0]) == "envoy":
        return "envoys"
    if "mizzen.controlplane" in argv:     # a promoted spare keeps --standby in its command line
        return "control plane spare" if "--standby" in argv else "control plane"
    return "apps"


@dataclass
class Traffic:
    url: str
    until: float
    max_requests: int
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not self.stop.is_set() and time.monotonic() < self.until \
                    and self.ok + len(self.failures) < self.max_requests:
                try:
                    r = client.get(self.url)
                    if r.status_code != 200 or any(m in r.text for m in FAILED_MARKERS):
                        self.failures.append((time.monotonic(), f"HTTP {r.status_code}"))
                    else:
                        self.ok += 1
                except httpx.HTTPError as e:
                    self.failures.append((time.monotonic(), type(e).__name__))


class Soak:
    def __init__(self, api: str) -> None:
        self.api = api
        self.client = httpx.Client(trust_env=False, timeout=5)
        self.errors: list[str] = []

    def synced(self) -> bool:
        try:
            if self.client.get(f"{self.api}/ready").status_code != 200:
                return False
            if self.client.get(f"{self.api}/debug/push_status").json().get("pending"):
                return False
            syncz = self.client.get(f"{self.api}/debug/syncz").json()
        except (httpx.HTTPError, ValueError):
            return False
        return len(syncz) == PROXIES and all(p.get("synced") for p in syncz)

    def routes_acked(self) -> dict[str, str]:
        syncz = self.client.get(f"{self.api}/debug/syncz").json()
        return {p["proxy"]: p["types"]["RDS"]["acked"] for p in syncz}

    def wait_synced(self, timeout: float, changed_from: dict[str, str] | None = None) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.synced():
                if changed_from is None:
                    return time.monotonic() - t0
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    now = self.routes_acked()
                    if any(now.get(k) != v for k, v in changed_from.items()):
                        return time.monotonic() - t0
            time.sleep(0.01)
        return None

    def apply(self, path: Path) -> bool:
        r = self.client.post(f"{self.api}/apis/apply", json={
            "documents": [{"file": path.name, "text": path.read_text()}], "namespace": "bookinfo"})
        if r.status_code != 200:
            self.errors.append(f"apply {path.name}: HTTP {r.status_code} {r.text[:200]}")
            return False
        return True

    def control_plane_pid(self) -> int | None:
        try:
            r = self.client.get(f"{self.api}/apis/pods", params={"namespace": "istio-system"})
            items = r.json()["items"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        for item in items:                # each carries its v1 Pod; the container's id is local://<pid>
            pod = item.get("object") or {}
            if pod.get("metadata", {}).get("labels", {}).get("app") == "istiod":
                statuses = pod.get("status", {}).get("containerStatuses") or [{}]
                cid = statuses[0].get("containerID", "")
                return int(cid.removeprefix("local://")) if cid else None
        return None


def slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per 10 minutes."""
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return float("nan") if den == 0 else sum((t - mx) * (v - my) for t, v in samples) / den * 600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=300.0, help="seconds between control-plane kills")
    ap.add_argument("--flip-every", type=float, default=20.0, help="seconds between config flips")
    ap.add_argument("--sample-every", type=float, default=30.0, help="seconds between memory samples")
    ap.add_argument("--warmup", type=float, default=300.0, help="seconds of samples left out of the slope")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if not MIZZEN.exists():
        sys.exit(f"{MIZZEN} not found: run with the project's venv python")
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-soak-") as tmp:
        port, tls = free_port(HOST), free_port(HOST)
        api_port = free_port("127.0.0.1")
        api = f"http://127.0.0.1:{api_port}"
        cmd = [str(MIZZEN), "demo", "--fresh", "--state-dir", f"{tmp}/state", "--host", HOST,
               "--port", str(port), "--tls-port", str(tls), "--xds-port", str(free_port("127.0.0.1")),
               "--api-port", str(api_port)]
        out = open(f"{tmp}/demo.out", "wb")   # noqa: SIM115 - closed below, after the process ended
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "COLUMNS": "160"})
        soak = Soak(api)
        results: dict[str, Any] = {}
        seen: dict[int, list[str]] = {}     # pid -> its command line when sampled
        try:
            deadline = time.monotonic() + 120
            while "Bookinfo is up" not in Path(f"{tmp}/demo.out").read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the demo did not start:\n"
                             + Path(f"{tmp}/demo.out").read_text(errors="replace"))
                time.sleep(0.2)
            # the demo's API token (created by the demo in its state dir)
            token = Path(f"{tmp}/state/token").read_text().strip()
            soak.client.headers["Authorization"] = f"Bearer {token}"
            soak.apply(NET / "destination-rule-all.yaml")
            soak.wait_synced(10)
            t0 = time.monotonic()
            traffic = Traffic(f"http://{HOST}:{port}/productpage", t0 + duration,
                              max_requests=int(duration * 200))
            thread = threading.Thread(target=traffic.run, daemon=True)
            thread.start()
            flips: list[float] = []
            kills: list[float] = []
            samples: dict[str, list[tuple[float, float]]] = {}
            next_flip, next_kill, next_sample = t0 + args.flip_every, t0 + args.kill_every, t0
            flip = 0
            while time.monotonic() < t0 + duration and proc.poll() is None:
                now = time.monotonic()
                if now >= next_sample:
                    next_sample += args.sample_every
                    pids = tree_pids(proc.pid)
                    seen.update((p, cmdline(p)) for p in pids)
                    active = soak.control_plane_pid()
                    mem: dict[str, float] = {}
                    for pid in pids:
                        k = kind_of(pid, proc.pid, active)
                        mem[k] = mem.get(k, 0.0) + rss_mb(pid)
                    for k, v in mem.items():
                        samples.setdefault(k, []).append((now - t0, v))
                    print(f"[{(now - t0) / 60:5.1f} min] requests ok {traffic.ok}, "
                          f"failed {len(traffic.failures)}; "
                          + ", ".join(f"{k} {v:.1f} MB" for k, v in sorted(mem.items())), flush=True)
                if now >= next_kill:
                    next_kill += args.kill_every
                    cp_pid = soak.control_plane_pid()
                    if cp_pid is None:
                        soak.errors.append("no control plane pid to kill")
                    else:
                        os.kill(cp_pid, signal.SIGKILL)
                        back = soak.wait_synced(10)
                        if back is None:
                            soak.errors.append(f"control plane not back and synced 10 s after kill at "
                                               f"{(now - t0) / 60:.1f} min")
                        else:
                            kills.append(back)
                            print(f"[{(now - t0) / 60:5.1f} min] control plane SIGKILLed: back and every "
                                  f"proxy SYNCED after {back:.2f} s", flush=True)
                    continue
                if now >= next_flip:
                    next_flip += args.flip_every
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        before = soak.routes_acked()
                        if soak.apply(FLIPS[flip % 2]):
                            took = soak.wait_synced(10, before)
                            if took is None:
                                soak.errors.append(f"flip {flip} not on every proxy within 10 s")
                            else:
                                flips.append(took)
                        flip += 1
                    continue
                time.sleep(0.05)
            traffic.stop.set()
            thread.join(30)
            if proc.poll() is not None:
                soak.errors.append(f"the demo exited during the run with {proc.returncode}")
            growth = {k: slope_per_10min([s for s in v if s[0] >= args.warmup])
                      for k, v in samples.items() if not k.startswith("control plane")}
            growth["demo + envoys + apps"] = slope_per_10min([
                (t, sum(v for k, series in samples.items() if not k.startswith("control plane")
                        for (tt, v) in series if tt == t))
                for t, _ in samples.get("demo", []) if t >= args.warmup])
            results = {
                "minutes": args.minutes, "requests_ok": traffic.ok, "requests_failed": len(traffic.failures),
                "failures": [f"{(t - t0):.1f}s {what}" for t, what in traffic.failures[:20]],
                "errors": soak.errors, "flips": len(flips), "kills": len(kills),
                "flip_to_synced_s": sorted(flips), "kill_to_synced_s": kills,
                "rss_growth_mb_per_10min": growth,
                "control_plane_rss_mb": {k: (min(v for _, v in s), max(v for _, v in s))
                                         for k, s in samples.items() if k.startswith("control plane")},
                "samples": samples,
            }
            print(f"\n{args.minutes:.0f} min: {traffic.ok} requests ok, {len(traffic.failures)} failed; "
                  f"{len(flips)} config flips, {len(kills)} control-plane kills; errors: {len(soak.errors)}")
            for e in soak.errors[:10]:
                print(f"  error: {e}")
            for t, what in traffic.failures[:10]:
                print(f"  failed request at {t - t0:.1f} s: {what}")
            print(f"flip -> every proxy ACKed: {fmt_ms(flips)}")
            print(f"SIGKILL -> control plane back, every proxy SYNCED: {fmt_ms(kills)}")
            print(f"RSS growth per 10 min after {args.warmup:.0f} s of warm-up:")
            for k, v in sorted(growth.items()):
                print(f"  {k:22} {v:+.2f} MB")
            for k, (lo, hi) in sorted(results["control_plane_rss_mb"].items()):
                print(f"  {k:22} RSS {lo:.1f}..{hi:.1f} MB over its lives (restarted at every kill)")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print("the demo did not stop within 30 s after SIGINT; killing")
                proc.kill()
                proc.wait(5)
            out.close()
            time.sleep(1)
            left = [p for p, argv in seen.items() if argv and cmdline(p) == argv]
            for p in left:       # leave nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            print(f"demo stopped: exit {proc.returncode}, processes left {left}")
            if args.json is not None:
                args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
