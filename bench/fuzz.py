"""The fuzz run of tests/controlplane/test_cp_fuzz.py, bigger: seeded mutations of Istio's sample documents
through validate, the store and the raw API with a real sidecar and gateway Envoy connected.

    .venv/bin/python bench/fuzz.py --count 10000 --seed 1

Prints the summary (documents accepted/rejected, API answers by status, failures, node-only NACKs with
their reasons, control-plane RSS at start and end) and every failure; exits 1 if there is any failure or the
RSS grew over 1.5x. Uses 127.10.x.y addresses (tests/harness.py); stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzing import run_fuzz
from harness import Mesh


async def amain(args: argparse.Namespace) -> int:
    async with Mesh() as mesh:
        await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
        await mesh.gateway()
        report = await run_fuzz(mesh, args.count, args.seed)
    print(report.summary())
    for line in report.node_only_nacks[: args.show]:
        print(f"  node-only NACK: {line}")
    for failure in report.failures[: args.show]:
        print(f"FAILURE: {failure}\n")
    grew = report.rss_end_mb > 1.5 * report.rss_start_mb
    return 1 if report.failures or grew else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=20, help="failures and NACKs to print")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
