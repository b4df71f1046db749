"""Seconds from `kubectl apply` of a 2-replica Deployment + Service to both pod IPs listed ready in the
real EndpointSlice, on the throwaway cluster (tools/kube/testcluster.py) with the node agent
(tools/kube/nodeagent.py) running the pods: the scheduler, the ReplicaSet and EndpointSlice controllers,
pod netns setup, volumes (TokenRequest, ConfigMap, Secret), an init container, the server's start and a
1 s readiness probe. Needs root and the cluster binaries (tools/kube/build.sh). Addresses: the cluster's
slot in 10.244.224.0/19 only."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kube"))

from kube_harness import UNAVAILABLE, nodeagent, testcluster
from test_kube_nodeagent import MANIFESTS, NS, _ready_slice_ips


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if UNAVAILABLE:
        print(f"cannot run: {UNAVAILABLE}", file=sys.stderr)
        return 1
    c = testcluster.TestCluster()
    c.start()
    times: list[float] = []
    try:
        with nodeagent.NodeAgent(c):
            for i in range(args.runs):
                ns = f"{NS}-{i}"
                c.kubectl("create", "namespace", ns)
                t0 = time.monotonic()
                c.kubectl("apply", "-f", "-", stdin=MANIFESTS.replace(f"namespace: {NS}", f"namespace: {ns}"))
                deadline = t0 + 120
                while len(_ready_slice_ips(c, ns)) < 2:
                    if time.monotonic() > deadline:
                        raise SystemExit("endpoints not ready in 120 s")
                    time.sleep(0.1)
                times.append(time.monotonic() - t0)
                print(f"run {i + 1}: apply -> 2 ready endpoints in {times[-1]:.1f} s", flush=True)
                c.kubectl("delete", "namespace", ns, "--wait=false")
    finally:
        c.stop()
    print(f"median {statistics.median(times):.1f} s, min {min(times):.1f} s, max {max(times):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
