"""``mizzen controlplane --kubeconfig``: a control plane reading its config from a real API server drives a
real Envoy — a VirtualService and DestinationRule applied with kubectl route requests, an update changes the
route, a delete restores the default; config is refused through Mizzen's own API while the cluster is the
source."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from harness import Mesh, eventually

pytestmark = pytest.mark.e2e

SERVICE_AND_RULES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: SUBSET}}]}]
"""


def apply(cluster: Any, ns: str, text: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=textwrap.dedent(text))


async def test_kubectl_apply_reaches_envoy(kube_cluster: Any) -> None:
    ns = "cp-kube"
    kube_cluster.kubectl("create", "namespace", ns)
    apply(kube_cluster, ns, SERVICE_AND_RULES.replace("SUBSET", "v1"))
    async with Mesh(kubeconfig=kube_cluster.kubeconfig) as mesh:
        assert mesh.cp.store.get("VirtualService", ns, "reviews") is not None   # listed before xDS served
        await mesh.backend("reviews", "v1", namespace=ns)
        await mesh.backend("reviews", "v2", namespace=ns)
        client = await mesh.sidecar(ns, "productpage-v1", {"app": "productpage", "version": "v1"})

        async def versions() -> set[str]:
            async with mesh.client_via(client) as http:
                return {(await http.get("http://reviews:9080/")).json()["version"] for _ in range(6)}

        async def only(version: str) -> set[str]:
            got = await versions()
            assert got == {version}, got
            return got

        await eventually(lambda: only("v1"), timeout=20)
        apply(kube_cluster, ns, SERVICE_AND_RULES.replace("SUBSET", "v2"))
        await eventually(lambda: only("v2"), timeout=20)

        async with mesh.api_client() as api:
            r = await api.post("/apis/apply", json={"yaml": SERVICE_AND_RULES, "namespace": ns})
            assert r.status_code == 409 and "kubectl" in r.text, r.text

        kube_cluster.kubectl("delete", "-n", ns, "virtualservice", "reviews")

        async def both() -> set[str]:
            got: set[str] = set()
            for _ in range(4):
                got |= await versions()
            assert got == {"v1", "v2"}, got
            return got

        await eventually(both, timeout=20)
