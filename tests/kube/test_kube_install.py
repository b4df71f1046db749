"""``mizzen install`` on the real test cluster: istioctl's progress lines; ``istiod`` comes up as a pod that
the node agent runs (``mizzen controlplane --in-cluster``, the API server from its service account); a
VirtualService applied with kubectl reaches that control plane (its ``/debug/configz``); ``verify-install``
passes; ``uninstall --purge`` leaves nothing labelled by the install (and ``verify-install`` then fails with
the list); the CRDs the cluster already had are used, not adopted, so they stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_harness import UNAVAILABLE, nodeagent, wait_for

from mizzen.kube.install.apply import KINDS
from mizzen.kube.install.manifests import OWNER, OWNER_LABEL

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

MIZZEN = str(Path(sys.executable).parent / "mizzen")
NS = "install-check"
VS = textwrap.dedent(f"""\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: reviews-route, namespace: {NS}}}
    spec:
      hosts: [reviews]
      http: [{{route: [{{destination: {{host: reviews, subset: v2}}}}]}}]
    """)


@pytest.fixture(scope="module")
def node(kube_cluster: Any) -> Iterator[Any]:
    # kube-proxy in the pods' namespaces: the gateway reaches istiod by its Service's ClusterIP
    with nodeagent.NodeAgent(kube_cluster, "mizzen-node-install", kube_proxy=True) as n:
        yield n


def mizzen(cluster: Any, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MIZZEN, *args, "--kubeconfig", str(cluster.kubeconfig)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"}, check=False)


def owned(cluster: Any) -> list[str]:
    """Every object left with the install's label (all kinds the installer creates)."""
    kinds = ",".join(f"{k.plural}.{k.group_version.split('/')[0]}" if "/" in k.group_version else k.plural
                     for k in KINDS.values())
    out = cluster.kubectl("get", kinds, "-A", "-l", f"{OWNER_LABEL}={OWNER}", "-o", "name")
    return out.split()


def pod_log(node: Any, selector: str) -> str:
    key, _, value = selector.partition("=")
    for run in list(node.pods.values()):
        if (run.pod["metadata"].get("labels") or {}).get(key) == value:
            return "\n".join(p.read_text(errors="replace")[-3000:] for p in (run.dir / "logs").glob("*.log"))
    return "(no such pod)"


def test_install_verify_uninstall(kube_cluster: Any, node: Any) -> None:
    c = kube_cluster
    crds_before = c.kubectl("get", "crd", "-o", "name").split()
    started = time.monotonic()
    r = mizzen(c, "install", "-y", "--set", "meshConfig.accessLogFile=/dev/stdout")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["✔ Istio core installed", "✔ Istiod installed",
                                     "✔ Ingress gateways installed", "✔ Installation complete"]
    install_s = time.monotonic() - started
    try:
        (pod,) = json.loads(c.kubectl("get", "pods", "-n", "istio-system", "-l", "app=istiod", "-o",
                                      "json"))["items"]
        run = node.pod_by_name("istio-system", pod["metadata"]["name"])
        assert run is not None and pod["status"]["phase"] == "Running"
        # the control plane reads the cluster: a VirtualService applied with kubectl reaches its config
        c.kubectl("create", "namespace", NS)
        c.kubectl("apply", "-f", "-", stdin=VS)
        token = (run.dir / "volumes" / "local-certs" / "token").read_text().strip()

        def get(path: str) -> Any:
            req = urllib.request.Request(f"http://{run.ip}:15014{path}",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())

        def configz() -> list[Any]:
            return [i for i in get("/debug/configz")["items"] if i["metadata"]["name"] == "reviews-route"]

        # the ingress gateway's agent connected to istiod through the istiod Service (ClusterIP, port 15010)
        def synced() -> list[Any]:
            return [e for e in get("/debug/syncz") if "istio-ingressgateway" in str(e.get("proxy"))]

        try:
            wait_for(synced, timeout=60, what="the ingress gateway in istiod's /debug/syncz")
        except AssertionError as e:
            logs = pod_log(node, "app=istio-ingressgateway")
            raise AssertionError(f"{e}; the gateway's log: {logs}") from None
        (vs,) = wait_for(configz, timeout=30, what="the VirtualService in istiod's /debug/configz")
        assert "v2" in json.dumps(vs)
        # its mesh config came from the install's ConfigMap
        mesh = c.kubectl("get", "configmap", "istio", "-n", "istio-system", "-o", "jsonpath={.data.mesh}")
        assert "accessLogFile: /dev/stdout" in mesh
        # and the injector's ConfigMap, which kube-inject --kubeconfig reads (as the webhook does)
        pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}]}"
        k = subprocess.run([MIZZEN, "kube-inject", "-f", "-", "--kubeconfig", str(c.kubeconfig)],
                           input=pod_yaml, capture_output=True, text=True, timeout=60)
        assert k.returncode == 0, k.stderr
        assert [x["name"] for x in yaml.safe_load(k.stdout)["spec"]["containers"]] == ["a", "istio-proxy"]

        v = mizzen(c, "verify-install")
        assert v.returncode == 0, v.stdout + v.stderr
        assert "are present and their Deployments are ready" in v.stdout
    finally:
        c.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
        u = mizzen(c, "uninstall", "--purge", "-y")
    assert u.returncode == 0, u.stdout + u.stderr
    assert u.stdout.splitlines()[-1].startswith("✔ Uninstall complete")
    assert owned(c) == []
    assert "istio-system" not in c.kubectl("get", "namespaces", "-o", "name")
    assert c.kubectl("get", "crd", "-o", "name").split() == crds_before   # the cluster's CRDs stay
    wait_for(lambda: node.pod_by_name("istio-system", pod["metadata"]["name"]) is None, timeout=30,
             what="the istiod pod stopped")
    v = mizzen(c, "verify-install")
    assert v.returncode == 1
    assert "✘ Deployment istio-system/istiod: not found" in v.stderr
    assert v.stderr.strip().splitlines()[-1].startswith("error: ") and "checks failed" in v.stderr
    print(f"install took {install_s:.1f} s")
