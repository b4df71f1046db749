"""The fuzz run of tests/controlplane/test_cp_fuzz.py, bigger: seeded mutations of Istio's sample documents
through validate, the store and the raw API with a real sidecar and gateway Envoy connected.

    .venv/bin/python bench/fuzz.py --count 10000 --seed 1

Prints the summary (documents accepted/rejected, API answers by status, failures, node-only NACKs with
their reasons, control-plane RSS at start and end) and every failure; exits 1 if there is any failure or the
RSS grew over 1.5x its cold start. Uses 127.10.x.y addresses (tests/harness.py); stops every process it
started.

The start the 1.5x target is judged against ("its start", issue 8) is **cold**: the control plane's RSS
once both proxies are connected and synced (its first pushes made, ACKed), before any document. The RSS
after a warm-up (every one of Istio's unmutated sample documents validated, applied over the API and deleted
again: modules, validators and CRD schemas loaded on first use) is printed too, as "warmed", and the ratio to
it; it is not the target's start (a later start would hide what first use costs).

``--diagnose`` prints, at the start and the end, what may hold the memory: the xDS caches' sizes (response
bodies, delta bodies and diffs, shared nonces, the packed-resource memo), the store's object count, the gc's
object counts by type (the largest growths), the RSS before and after ``malloc_trim(0)`` (native high-water
vs. live memory) and with ``--tracemalloc`` the top allocation sites grown (slow: ~3x the run time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import gc
import json
import logging
import sys
import tracemalloc
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import rss_mb

from fuzzing import load_samples, run_fuzz
from harness import Mesh
from mizzen.config.loader import load_text


def _trim() -> float:
    """RSS after giving free heap pages back to the OS (glibc's malloc_trim); the RSS if not glibc."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def diagnose(mesh: Mesh, label: str) -> collections.Counter[str]:
    """Print what may hold the control plane's memory; returns the gc's object counts by type."""
    cp = mesh.cp
    ads = cp.ads
    before = rss_mb()
    trimmed = _trim()
    print(f"[{label}] RSS {before:.1f} MB, after malloc_trim {trimmed:.1f} MB; "
          f"store {len(cp.store)} objects; "
          f"response bodies {len(ads.bodies)} ({ads.bodies.size / 1e6:.2f} MB), delta bodies "
          f"{len(ads.delta_bodies)} ({ads.delta_bodies.size / 1e6:.2f} MB), delta diffs {len(ads.diffs)}, "
          f"shared nonces {len(ads.nonces) if ads.nonces else 0}, "
          f"packed memo {len(cp.cache._memo)}, shared type contents {len(cp.cache._fulls)}", flush=True)
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


async def warm_up(mesh: Mesh) -> int:
    """Every sample document once through validate, the API's apply and its delete; returns how many the
    API applied (all of them are deleted again)."""
    applied = 0
    async with mesh.api_client(timeout=60) as api:
        for i, doc in enumerate(load_samples()):
            text = yaml.safe_dump(doc, sort_keys=False)
            load_text(text, f"warm-{i}.yaml", None)
            body = json.dumps({"documents": [{"file": f"warm-{i}.yaml", "text": text}]}).encode()
            headers = {"content-type": "application/json"}
            r = await api.post("/apis/apply", content=body, headers=headers)
            if r.status_code == 200:
                applied += 1
                await mesh.cp.flush()
                await api.post("/apis/delete", content=body, headers=headers)
    await mesh.cp.wait_synced(timeout=30)
    return applied


async def amain(args: argparse.Namespace) -> int:
    async with Mesh() as mesh:
        await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
        await mesh.gateway()
        cold = rss_mb()
        warmed = await warm_up(mesh)
        if args.tracemalloc:
            tracemalloc.start(8)
        counts = diagnose(mesh, "start") if args.diagnose else None
        first = tracemalloc.take_snapshot() if args.tracemalloc else None
        report = await run_fuzz(mesh, args.count, args.seed)
        if counts is not None:
            grown = diagnose(mesh, "end")
            grown.subtract(counts)
            print("gc objects grown:", ", ".join(f"{t} {n:+d}" for t, n in grown.most_common(15)))
        if first is not None:
            stats = tracemalloc.take_snapshot().compare_to(first, "traceback")
            print(f"tracemalloc: {sum(s.size_diff for s in stats) / 1e6:+.1f} MB traced; top sites grown:")
            for stat in stats[:12]:
                print(f"  {stat.size_diff / 1e6:+.2f} MB {stat.count_diff:+d} blocks")
                for line in stat.traceback.format()[-6:]:
                    print(f"      {line}")
    print(f"cold RSS {cold:.0f} MB (proxies connected and synced: the start); warm-up: {warmed} sample "
          f"documents applied and deleted; warmed RSS {report.rss_start_mb:.0f} MB; end "
          f"{report.rss_end_mb:.0f} MB: {report.rss_end_mb / cold:.2f}x the start (cold), "
          f"{report.rss_end_mb / report.rss_start_mb:.2f}x warmed")
    print(report.summary())
    for line in report.node_only_nacks[: args.show]:
        print(f"  node-only NACK: {line}")
    for failure in report.failures[: args.show]:
        print(f"FAILURE: {failure}\n")
    grew = report.rss_end_mb > 1.5 * cold
    return 1 if report.failures or grew else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=20, help="failures and NACKs to print")
    ap.add_argument("--diagnose", action="store_true", help="print what holds memory at start and end")
    ap.add_argument("--tracemalloc", action="store_true", help="with --diagnose: top allocation sites grown")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
