"""The throwaway Kubernetes control plane (tools/kube/testcluster.py) is real and leaves nothing behind: a
real kube-apiserver over etcd serves Istio's CRDs from Mizzen's copy of Istio's schemas and stores a
VirtualService; the real controller-manager turns a Deployment into a ReplicaSet and a Service into an
EndpointSlice; stopping removes every process, namespace and link it made. Needs root and the binaries built
by tools/kube/build.sh (``./run test`` builds them when Go is present)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "src" / "mizzen" / "config" / "schemas" / "crd-all.gen.yaml"


def _load_harness() -> ModuleType:
    path = ROOT / "tools" / "kube" / "testcluster.py"
    spec = importlib.util.spec_from_file_location("mizzen_testcluster", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


tc = _load_harness()
reason = tc.unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    c = tc.TestCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _wait(fn, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"condition not met in {timeout} s (last: {last!r})")


def test_api_server_serves_istio_crds_and_objects(cluster) -> None:  # type: ignore[no-untyped-def]
    assert cluster.kubectl("get", "--raw", "/readyz").strip() == "ok"
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS), timeout=120)
    cluster.kubectl("wait", "--for=condition=Established", "crd/virtualservices.networking.istio.io",
                    "crd/destinationrules.networking.istio.io", "--timeout=60s")
    cluster.kubectl("create", "namespace", "bookinfo")
    vs = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking" / \
        "virtual-service-reviews-80-20.yaml"
    cluster.kubectl("apply", "-n", "bookinfo", "-f", str(vs))
    got = json.loads(cluster.kubectl("get", "virtualservice", "reviews", "-n", "bookinfo", "-o", "json"))
    assert got["apiVersion"].startswith("networking.istio.io/")
    weights = sorted(r["weight"] for r in got["spec"]["http"][0]["route"])
    assert weights == [20, 80]


def test_controller_manager_reconciles(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("create", "namespace", "ctrl")
    cluster.kubectl("create", "deployment", "web", "-n", "ctrl", "--image=example/web", "--replicas=2")
    cluster.kubectl("create", "service", "clusterip", "web", "-n", "ctrl", "--tcp=80:8080")

    def replicaset() -> bool:
        items = json.loads(cluster.kubectl("get", "rs", "-n", "ctrl", "-o", "json"))["items"]
        return bool(items) and items[0]["status"].get("replicas") == 2

    _wait(replicaset)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", "ctrl", "-o", "json"))["items"]
    assert len(pods) == 2   # created by the real ReplicaSet controller (no node yet: Pending)

    def slice_exists() -> bool:
        items = json.loads(cluster.kubectl("get", "endpointslices", "-n", "ctrl", "-o", "json"))["items"]
        return any(i["metadata"]["labels"].get("kubernetes.io/service-name") == "web" for i in items)

    _wait(slice_exists)
    svc = json.loads(cluster.kubectl("get", "svc", "web", "-n", "ctrl", "-o", "json"))
    cidr = ipaddress.ip_network(cluster.net.addr.service_cidr)
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in cidr


def test_stop_leaves_nothing() -> None:
    c = tc.TestCluster()
    c.start()
    pids = [p.pid for p in c.procs.values()]
    netns, workdir, tag = c.net.netns, c.workdir, c.net.tag
    c.stop()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not Path(f"/run/netns/{netns}").exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{tag}br" not in links and f"{tag}cph" not in links
    assert not workdir.exists()
