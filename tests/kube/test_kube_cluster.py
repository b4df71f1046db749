"""The throwaway Kubernetes control plane (tools/kube/testcluster.py) is real and leaves nothing behind: a
real kube-apiserver over etcd serves Istio's CRDs from Mizzen's copy of Istio's schemas and stores a
VirtualService; the real controller-manager turns a Deployment into a ReplicaSet and a Service into an
EndpointSlice; stopping removes every process, namespace and link it made. Needs root and the binaries built
by tools/kube/build.sh (``./run test`` builds them when Go is present)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from kube_harness import SAMPLES, UNAVAILABLE, testcluster, wait_for

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def test_api_server_serves_istio_crds_and_objects(kube_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = kube_cluster
    assert cluster.kubectl("get", "--raw", "/readyz").strip() == "ok"
    cluster.kubectl("create", "namespace", "crdcheck")
    cluster.kubectl("apply", "-n", "crdcheck", "-f", str(SAMPLES / "virtual-service-reviews-80-20.yaml"))
    got = json.loads(cluster.kubectl("get", "virtualservice", "reviews", "-n", "crdcheck", "-o", "json"))
    assert got["apiVersion"].startswith("networking.istio.io/")
    weights = sorted(r["weight"] for r in got["spec"]["http"][0]["route"])
    assert weights == [20, 80]


def test_controller_manager_reconciles(kube_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = kube_cluster
    cluster.kubectl("create", "namespace", "ctrl")
    cluster.kubectl("create", "deployment", "web", "-n", "ctrl", "--image=example/web", "--replicas=2")
    cluster.kubectl("create", "service", "clusterip", "web", "-n", "ctrl", "--tcp=80:8080")

    def replicaset() -> bool:
        items = json.loads(cluster.kubectl("get", "rs", "-n", "ctrl", "-o", "json"))["items"]
        return bool(items) and items[0]["status"].get("replicas") == 2

    wait_for(replicaset, what="ReplicaSet with 2 replicas")
    pods = json.loads(cluster.kubectl("get", "pods", "-n", "ctrl", "-o", "json"))["items"]
    assert len(pods) == 2   # created by the real ReplicaSet controller (no node yet: Pending)

    def slice_exists() -> bool:
        items = json.loads(cluster.kubectl("get", "endpointslices", "-n", "ctrl", "-o", "json"))["items"]
        return any(i["metadata"]["labels"].get("kubernetes.io/service-name") == "web" for i in items)

    wait_for(slice_exists, what="EndpointSlice for web")
    svc = json.loads(cluster.kubectl("get", "svc", "web", "-n", "ctrl", "-o", "json"))
    cidr = ipaddress.ip_network(cluster.net.addr.service_cidr)
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in cidr


def test_stop_leaves_nothing() -> None:
    """... and stops every component by SIGTERM, clients before the API server before etcd, whatever order
    they were (re)started in: an API server stopped while its clients still watched it ignored SIGTERM until
    killed 10 s later (the suite's last teardown after test_kube_registry's API server restart)."""
    c = testcluster.TestCluster()
    c.start()
    # the controller-manager at work (it made the default ServiceAccount): watching the API server
    wait_for(lambda: "serviceaccount/default" in c.kubectl("get", "sa", "-n", "default", "-o", "name"),
             what="the default ServiceAccount")
    c.procs["kube-apiserver"] = c.procs.pop("kube-apiserver")   # last in the table, as respawn() leaves it
    procs = dict(c.procs)
    pids = [p.pid for p in c.procs.values()]
    netns, workdir, tag = c.net.netns, c.workdir, c.net.tag
    c.stop()
    killed = [name for name, p in procs.items() if p.returncode == -signal.SIGKILL]
    assert not killed, f"not stopped by SIGTERM: {killed}"
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not Path(f"/run/netns/{netns}").exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{tag}br" not in links and f"{tag}cph" not in links
    assert not workdir.exists()
