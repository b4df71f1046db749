"""The pieces of a scoped push, without sockets: PushRequest merging, which generators a change runs
(config.kinds' read_by), which proxies it affects (core.scope, Istio's ConfigAffectsProxy), what the memo
keeps across pushes, and a generator for another type plugging into the table."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigKey, ConfigSnapshot
from mizzen.core import generate as gen
from mizzen.core.proxy import Proxy, ProxyType
from mizzen.core.push_context import PushContext
from mizzen.core.push_request import PushRequest, WorkloadKey
from mizzen.core.scope import config_affects_proxy, scope_key
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: scoped}
spec: {ports: [{port: 9080, name: http}], selector: {app: local}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: scoped}
spec:
  egress: [{hosts: ["./*"]}]
"""
EXTRA = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: bookinfo}
spec: {host: reviews, exportTo: ["."]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: delegate, namespace: bookinfo}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: bookinfo}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec: {jwtRules: [{issuer: x}]}
"""


def push_of(text: str) -> PushContext:
    result = load_text(text, "scope.yaml")
    assert result.ok, result.errors
    reg = Registry()
    snap = ConfigSnapshot.of(result.configs)
    reg.set_configs(snap)
    reg.register_workload(Workload("reviews-1", "bookinfo", "10.0.0.1", {"app": "reviews", "version": "v1"}))
    return PushContext.build(snap, reg.snapshot())


def proxy(namespace: str, ptype: ProxyType = ProxyType.SIDECAR, ip: str = "10.1.0.1") -> Proxy:
    kind = "router" if ptype is ProxyType.ROUTER else "sidecar"
    return Proxy(id=f"{kind}~{ip}~p.{namespace}~{namespace}.svc.cluster.local", type=ptype, ip=ip,
                 namespace=namespace, labels={"istio": "ingressgateway"} if kind == "router" else {})


def test_merge_unions_keys_and_full_wins() -> None:
    a = PushRequest.config_change([ConfigKey("VirtualService", "ns", "a")], ["a"], start=2.0)
    b = PushRequest.endpoint_change({"h.ns.svc.cluster.local"}, [WorkloadKey("ns", "w", "10.0.0.9")],
                                    ["w"], start=1.0)
    m = a.merge(b)
    assert m.full and m.configs == {ConfigKey("VirtualService", "ns", "a")}
    assert m.services == {"h.ns.svc.cluster.local"} and m.workloads == {WorkloadKey("ns", "w", "10.0.0.9")}
    assert m.reasons == {"a", "w"} and m.start == 1.0
    assert not b.merge(b).full                                   # endpoint changes stay EDS-only
    everything = m.merge(PushRequest.everything())
    assert everything.all_configs and everything.services == m.services   # "all configs" absorbs keys


def test_generators_run_for_the_kinds_they_read() -> None:
    assert gen.types_reading({"VirtualService"}) == {LISTENER, ROUTE}
    sds = {SECRET} & set(gen.GENERATORS)   # the SDS generator (registered where the control plane starts)
    assert gen.types_reading({"DestinationRule"}) == {CLUSTER, ENDPOINT, ROUTE} | sds
    assert gen.types_reading({"Deployment", "Namespace"}) == set()
    assert gen.types_reading({"Sidecar"}) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    assert "VirtualService" in gen.GENERATORS[ROUTE].reads and "VirtualService" not in gen.GENERATORS[
        CLUSTER].reads


def test_config_affects_only_proxies_whose_scope_includes_it() -> None:
    before = push_of(MESH)
    after = push_of(MESH + "---" + EXTRA)
    seer, scoped, other = proxy("bookinfo"), proxy("scoped"), proxy("elsewhere")
    gateway = proxy("istio-system", ProxyType.ROUTER)

    def affected(kind: str, name: str, ns: str = "bookinfo") -> set[str]:
        key = ConfigKey(kind, ns, name)
        return {p.namespace for p in (seer, scoped, other, gateway)
                if config_affects_proxy(p, before, after, key)}

    assert affected("DestinationRule", "reviews") == {"bookinfo", "elsewhere", "istio-system"}
    assert affected("DestinationRule", "private") == {"bookinfo"}                # exportTo: "."
    assert affected("VirtualService", "reviews") == {"bookinfo", "elsewhere"}     # mesh VS: sidecars
    assert affected("VirtualService", "edge") == {"istio-system"}                  # gateway-bound only
    assert affected("VirtualService", "delegate") == {"bookinfo", "scoped", "elsewhere", "istio-system"}
    assert affected("Sidecar", "default", "scoped") == {"scoped"}
    assert affected("Service", "reviews") == {"bookinfo", "elsewhere", "istio-system"}   # not past ./*
    assert affected("Service", "local", "scoped") == {"bookinfo", "elsewhere", "istio-system", "scoped"}
    assert affected("Deployment", "reviews") == set()
    # a deleted object is judged as it was
    assert config_affects_proxy(scoped, after, before, ConfigKey("Sidecar", "scoped", "default"))
    # security policies: the proxy's namespace and the root namespace only (security.authz's selection)
    assert affected("AuthorizationPolicy", "deny") == {"bookinfo"}
    assert affected("RequestAuthentication", "jwt", "istio-system") == {"bookinfo", "scoped", "elsewhere",
                                                                        "istio-system"}


def test_scope_key_groups_proxies_that_get_the_same_answers() -> None:
    # the push asks config_affects_proxy once per scope key: proxies with equal keys must agree on every
    # object, and a Sidecar that selects one workload must split its namespace
    selective = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: narrow, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: narrow}}
  egress: [{hosts: ["./*"]}]
"""
    before = push_of(MESH + selective)
    after = push_of(MESH + selective + "---" + EXTRA)
    plain_a, plain_b = proxy("bookinfo", ip="10.1.0.1"), proxy("bookinfo", ip="10.1.0.2")
    narrow = Proxy(id="sidecar~10.1.0.3~n.bookinfo~bookinfo.svc.cluster.local", type=ProxyType.SIDECAR,
                   ip="10.1.0.3", namespace="bookinfo", labels={"app": "narrow"})
    scoped = proxy("scoped", ip="10.1.0.4")
    keys = {p.ip: (scope_key(p, before), scope_key(p, after)) for p in (plain_a, plain_b, narrow, scoped)}
    assert keys["10.1.0.1"] == keys["10.1.0.2"]
    assert len({keys["10.1.0.1"], keys["10.1.0.3"], keys[scoped.ip]}) == 3
    for key in (ConfigKey("VirtualService", "bookinfo", "reviews"),
                ConfigKey("Service", "bookinfo", "reviews"), ConfigKey("Service", "scoped", "local")):
        assert config_affects_proxy(plain_a, before, after, key) == config_affects_proxy(
            plain_b, before, after, key)
    # a Service elsewhere is past the narrow proxy's egress ("./*") but not the plain ones'
    service = ConfigKey("Service", "scoped", "local")
    assert config_affects_proxy(plain_a, before, after, service)
    assert not config_affects_proxy(narrow, before, after, service)


def test_config_snapshot_get_finds_every_object() -> None:
    snap = push_of(MESH + "---" + EXTRA).configs
    for c in snap:
        assert snap.get(c.kind, c.namespace, c.name) is c
    assert snap.get("VirtualService", "bookinfo", "missing") is None
    assert snap.get("Sidecar", "bookinfo", "default") is None   # the namespace is part of the key


def test_carry_memo_keeps_what_a_change_cannot_have_touched() -> None:
    memo: dict[Hashable, object] = {
        ("CDS", "a.ns.svc.cluster.local", "ns", 80, None): 1,
        ("CDS", "b.ns.svc.cluster.local", "ns", 80, None): 2,
        ("EDS", "a.ns.svc.cluster.local", "outbound|80||a", None, None): 3,
        ("CDS*", "k"): 4, ("EDS*", "k"): 5,
        ("RDS", "80", "k"): 6, ("uses", "VirtualService", "sourceLabels"): 7, ("scope", "x"): 8,
        ("index", "services"): 9,
    }
    vs = gen.carry_memo(memo, gen.types_reading({"VirtualService"}), {"VirtualService"}, set())
    assert set(vs.values()) == {1, 2, 3, 4, 5}     # routes and the VS scan go; per-push lookups never stay
    eds = gen.carry_memo(memo, set(), set(), {"a.ns.svc.cluster.local"})
    assert set(eds.values()) == {2, 6, 7}          # a's clusters and assignments, and whole outputs go
    assert gen.carry_memo(memo, gen.types_reading({"Sidecar"}), {"Sidecar"}, set()) == {
        ("uses", "VirtualService", "sourceLabels"): 7}


@pytest.fixture
def secret_generator() -> Iterator[None]:
    class Secrets:
        type_url = SECRET
        short = "SDS"
        reads: frozenset[str] = frozenset()
        names_from = (CLUSTER, lambda cds: sorted(n for n in cds if n.startswith("outbound|")))

        def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
            return proxy.id

        def generate(self, proxy: Proxy, push: PushContext,
                     names: Sequence[str] | None) -> Mapping[str, Message]:
            return {f"cert:{n}": secret_pb2.Secret(name=f"cert:{n}") for n in names or ()}

    gen.register(Secrets())
    try:
        yield
    finally:
        del gen.GENERATORS[SECRET]


def test_a_generator_for_another_type_plugs_into_the_table(secret_generator: None) -> None:
    push = push_of(MESH)
    rs = gen.generate(proxy("bookinfo"), push)
    assert set(rs.by_type) == {CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET}
    assert "cert:outbound|9080||reviews.bookinfo.svc.cluster.local" in rs.of(SECRET)
    only = gen.generate(proxy("bookinfo"), push, [SECRET])   # named after CDS: CDS is built, not returned
    assert set(only.by_type) == {SECRET} and only.of(SECRET) == rs.of(SECRET)
