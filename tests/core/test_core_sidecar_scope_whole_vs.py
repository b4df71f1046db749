"""A Sidecar that imports one host of a multi-host VirtualService brings the whole VirtualService, as Istio
does: Istio's SidecarScope imports a VirtualService when any of its hosts is imported, and then adds the
services the VirtualService routes to (virtualServiceDestinations), so every host of it is served with its
routes, and its destinations have clusters."""

from __future__ import annotations

from typing import Any

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.registry.registry import build_snapshot
from mizzen.simulate import SimRequest, simulate
from mizzen.xds.resources import CLUSTER

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {selector: {app: other}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: shop}
spec:
  hosts: [ratings, reviews]
  http:
  - match: [{headers: {x-to: {exact: reviews}}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: ratings}}]
    headers: {response: {set: {x-vs: both}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  egress:
  - hosts: ["shop/ratings.shop.svc.cluster.local"]
"""
VS = "namespaces/shop/virtual-service/both"


def _resources() -> tuple[Proxy, Any]:
    loaded = load_text(CONFIG, "c.yaml")
    assert not loaded.errors, [str(e) for e in loaded.errors]
    snapshot = ConfigSnapshot.of(loaded.configs)
    workloads = [Workload(name=f"{app}-0", namespace="shop", address=ip, labels={"app": app},
                          ports={"http": 9080})
                 for app, ip in (("ratings", "127.0.30.1"), ("reviews", "127.0.30.2"),
                                 ("other", "127.0.30.3"))]
    registry = build_snapshot(snapshot, workloads)
    proxy = Proxy(id=node_id(ProxyType.SIDECAR, "127.0.30.9", "client-0", "client"), type=ProxyType.SIDECAR,
                  ip="127.0.30.9", namespace="client", workload_name="client-0", labels={"app": "client"},
                  http_proxy_port=15080)
    return proxy, generate(proxy, PushContext.build(snapshot, registry))


def test_the_other_host_of_an_imported_virtual_service_is_routed_by_it() -> None:
    proxy, res = _resources()
    # the imported host: the VS's default route
    r = simulate(res, SimRequest("http://ratings.shop.svc.cluster.local:9080/"), proxy.id)
    assert r["status"] == "route" and r["route"]["virtual_service"].endswith(VS), r["why"]
    # the VS's other host, not in the Sidecar's egress hosts: served by the same VS, not passed through
    r = simulate(res, SimRequest("http://reviews.shop.svc.cluster.local:9080/"), proxy.id)
    assert r["status"] == "route", r["why"]
    assert r["route"]["virtual_service"].endswith(VS)
    assert r["destinations"][0]["cluster"] == "outbound|9080||ratings.shop.svc.cluster.local"
    # and its destinations have clusters, with endpoints
    r = simulate(res, SimRequest("http://ratings.shop.svc.cluster.local:9080/",
                                 headers=[("x-to", "reviews")]), proxy.id)
    dest = r["destinations"][0]
    assert dest["cluster"] == "outbound|9080||reviews.shop.svc.cluster.local"
    assert "missing" not in dest and [e["address"] for e in dest["endpoints"]] == ["127.0.30.2:9080"]


def test_services_outside_the_egress_hosts_and_the_virtual_service_stay_out() -> None:
    proxy, res = _resources()
    clusters = set(res.of(CLUSTER))
    assert "outbound|9080||other.shop.svc.cluster.local" not in clusters
    r = simulate(res, SimRequest("http://other.shop.svc.cluster.local:9080/"), proxy.id)
    assert r["status"] != "route" or r["destinations"][0]["cluster"] == "PassthroughCluster"
