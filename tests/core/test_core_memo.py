"""The push-scoped memo: alike proxies share generated messages, and every proxy property a config can make
matter (namespace, labels under sourceLabels, DestinationRule namespace) still separates them."""

from __future__ import annotations

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy, ProxyType
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry
from mizzen.xds.resources import CLUSTER, ENDPOINT, ROUTE

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def push_of(text: str) -> PushContext:
    result = load_text(text, "memo.yaml")
    assert result.ok, result.errors
    reg = Registry()
    snap = ConfigSnapshot.of(result.configs)
    reg.set_configs(snap)
    for v in ("v1", "v2"):
        reg.register_workload(Workload(name=f"reviews-{v}", namespace="bookinfo", address=f"10.0.0.{v[1]}",
                                       labels={"app": "reviews", "version": v}))
    return PushContext.build(snap, reg.snapshot())


def sidecar(ip: str, namespace: str, **labels: str) -> Proxy:
    return Proxy(id=f"sidecar~{ip}~p{ip}.{namespace}~{namespace}.svc.cluster.local", type=ProxyType.SIDECAR,
                 ip=ip, namespace=namespace, labels=labels, http_proxy_port=15080)


def test_alike_proxies_share_messages() -> None:
    push = push_of(BASE)
    a = generate(sidecar("10.1.0.1", "bookinfo", app="productpage"), push)
    b = generate(sidecar("10.1.0.2", "bookinfo", app="details"), push)
    name = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
    assert a.of(CLUSTER)[name] is b.of(CLUSTER)[name]
    assert a.of(ENDPOINT)[name] is b.of(ENDPOINT)[name]
    assert a.of(ROUTE)["http_proxy"] is b.of(ROUTE)["http_proxy"]
    # inbound and listeners are the proxy's own
    assert set(a.of(CLUSTER)) == set(b.of(CLUSTER))


def test_source_labels_separate_route_configs() -> None:
    push = push_of(BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    pp = generate(sidecar("10.1.0.1", "bookinfo", app="productpage"), push).of(ROUTE)["http_proxy"]
    other = generate(sidecar("10.1.0.2", "bookinfo", app="details"), push).of(ROUTE)["http_proxy"]
    assert pp is not other

    def clusters(rc: object) -> list[str]:
        return [r.route.cluster for vh in rc.virtual_hosts for r in vh.routes  # type: ignore[attr-defined]
                if "reviews" in vh.name]
    # for productpage the sourceLabels rule matches everything, so the later rule is unreachable (dropped)
    assert clusters(pp) == ["outbound|9080|v2|reviews.bookinfo.svc.cluster.local"]
    assert clusters(other) == ["outbound|9080|v1|reviews.bookinfo.svc.cluster.local"]


def test_namespace_separates_destination_rule_effects() -> None:
    push = push_of(BASE + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-from-test, namespace: test}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
""")
    name = "outbound|9080||reviews.bookinfo.svc.cluster.local"
    in_bookinfo = generate(sidecar("10.1.0.1", "bookinfo"), push).of(CLUSTER)[name]
    in_test = generate(sidecar("10.1.0.2", "test"), push).of(CLUSTER)[name]
    assert in_bookinfo is not in_test
    assert in_test.lb_policy != in_bookinfo.lb_policy       # the client namespace's DR wins for test
