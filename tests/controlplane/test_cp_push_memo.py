"""The push loop's memo carried across pushes never changes what a proxy gets: after every change in a
sequence (VirtualServices with HTTP and TCP routes, Sidecar, Telemetry, AuthorizationPolicy,
PeerAuthentication, DestinationRule, Gateway, workloads joining, a proxy reconnecting with new labels), each
connected proxy's cached resources (content-hash versions per type) equal what a fresh generation without
any memo gives. Proxies: local-mode sidecars with and without a Sidecar resource, a REDIRECT-mode sidecar
and a gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mizzen import telemetry
from mizzen.config.loader import load_text
from mizzen.config.model import Config, ConfigKey, ConfigSnapshot
from mizzen.controlplane.push import Pusher
from mizzen.core.generate import generate
from mizzen.core.mesh import MeshConfig
from mizzen.core.mtls import identity_changes
from mizzen.core.proxy import Meta, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.core.push_request import PushRequest, WorkloadKey
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry
from mizzen.security import authz
from mizzen.tracing import register_plugin as register_tracing
from mizzen.xds.cache import SnapshotCache

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: bookinfo}
spec: {ports: [{port: 5432, name: tcp-db}], selector: {app: db}}
---
apiVersion: v1
kind: Service
metadata: {name: named, namespace: bookinfo}
spec: {ports: [{port: 80, name: http, targetPort: web}], selector: {app: named}}
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
  egress:
  - {port: {number: 5432, protocol: TCP, name: tcp}, bind: 127.0.0.9, hosts: ["bookinfo/*"]}
  - {hosts: ["./*", "bookinfo/*"]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""

# (name, YAML applied at this step); each step keeps the previous ones
STEPS = [
    ("vs http", """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [mesh, gw]
  http: [{route: [{destination: {host: reviews}, weight: 70}, {destination: {host: reviews}, weight: 30}]}]
"""),
    ("vs tcp", """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: bookinfo}
spec:
  hosts: [db]
  tcp: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]
"""),
    ("telemetry", """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: REQUEST_SIZE}, disabled: true}]}]
"""),
    ("authz", """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: bookinfo}
spec: {selector: {matchLabels: {app: reviews}}, action: DENY, rules: [{to: [{operation: {paths: [/x]}}]}]}
"""),
    ("peer authn", """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: bookinfo}
spec: {mtls: {mode: STRICT}}
"""),
    ("destination rule", """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}
"""),
    ("vs http again", """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [mesh, gw]
  http: [{match: [{uri: {prefix: /v}}], route: [{destination: {host: reviews}}]}]
"""),
    ("sidecar", """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: scoped}
spec:
  egress: [{hosts: ["./*", "bookinfo/reviews.bookinfo.svc.cluster.local"]}]
"""),
    ("gateway", """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["reviews.example.com"]}]
"""),
]

# (name, namespace, labels, interception mode, gateway)
PROXIES = [
    ("reviews-1", "bookinfo", {"app": "reviews", "version": "v1"}, "NONE", False),
    ("reviews-2", "bookinfo", {"app": "reviews", "version": "v2"}, "NONE", False),
    ("db-1", "bookinfo", {"app": "db"}, "REDIRECT", False),
    ("local-1", "scoped", {"app": "local"}, "NONE", False),
    ("gateway-1", "bookinfo", {"istio": "ingressgateway"}, "NONE", True),
]


# the workloads joining have sidecars (their endpoints' tlsMode): their service accounts are clusters' SANs
NAMED = {"app": "named", "security.istio.io/tlsMode": "istio"}


@pytest.fixture
def plugins_on() -> Iterator[None]:
    """The listener plugins a control plane registers (telemetry only while it runs, as there)."""
    register_tracing()
    authz.register()
    telemetry.acquire()
    try:
        yield
    finally:
        telemetry.release()


def parse(text: str) -> list[Config]:
    result = load_text(text, "memo.yaml")
    assert result.ok, result.errors
    return list(result.configs)


def metadata(ns: str, labels: dict[str, str], mode: str, name: str) -> dict[str, object]:
    return {Meta.NAMESPACE: ns, Meta.LABELS: labels, Meta.WORKLOAD_NAME: name, Meta.INTERCEPTION_MODE: mode,
            Meta.HTTP_PROXY_PORT: "15080", Meta.SDS: "true"}


class World:
    def __init__(self) -> None:
        self.configs: dict[ConfigKey, Config] = {c.key: c for c in parse(BASE)}
        self.registry = Registry()
        self.snapshot = ConfigSnapshot.of(self.configs.values())
        self.registry.set_configs(self.snapshot)
        self.mesh = MeshConfig()
        self.cache = SnapshotCache()
        self.pusher = Pusher(self.cache, lambda: self.snapshot, self.registry.snapshot, self.mesh)

    def apply(self, text: str) -> PushRequest:
        changed = parse(text)
        self.configs.update({c.key: c for c in changed})
        self.snapshot = ConfigSnapshot.of(self.configs.values())
        self.registry.set_configs(self.snapshot)
        return PushRequest.config_change([c.key for c in changed], ["test"])

    def assert_fresh(self, step: str) -> None:
        """Every connected proxy's cached versions equal a generation from a memo-less PushContext."""
        fresh = SnapshotCache()
        push = PushContext.build(self.snapshot, self.registry.snapshot(), self.mesh)
        for nid, proxy in self.pusher.proxies.items():
            fresh.set_snapshot(nid, generate(proxy, push))
            got, want = self.cache.get(nid), fresh.get(nid)
            assert got is not None and want is not None
            differ = [t for t in want.types if got.version(t) != want.version(t)]
            assert not differ, f"{step}: {nid} differs from a fresh generation: types {differ}"


async def test_carried_memo_gives_what_a_fresh_generation_gives(plugins_on: None) -> None:
    w = World()
    ips = {}
    for i, (name, ns, labels, _mode, _gateway) in enumerate(PROXIES):
        ip = ips[name] = f"10.9.0.{i + 1}"
        w.registry.register_workload(Workload(name=name, namespace=ns, address=ip, labels=labels))
    await w.pusher.push(None)
    for name, ns, labels, mode, gateway in PROXIES:
        typ = ProxyType.ROUTER if gateway else ProxyType.SIDECAR
        w.pusher.connect(node_id(typ, ips[name], name, ns), metadata(ns, labels, mode, name))
    w.assert_fresh("connected")
    lds_before = {n: w.cache.get(n).version("type.googleapis.com/envoy.config.listener.v3.Listener")  # type: ignore[union-attr]
                  for n in w.pusher.proxies}
    for step, text in STEPS:
        await w.pusher.push(w.apply(text))
        w.assert_fresh(step)
        if step == "vs http":   # the gateway's listeners follow its VirtualServices; sidecars' do not change
            assert lds_before == {n: w.cache.get(n).version(  # type: ignore[union-attr]
                "type.googleapis.com/envoy.config.listener.v3.Listener") for n in w.pusher.proxies}
    # a proxy reconnects with other labels under the same node id: its listeners are not the memoized ones
    await w.pusher.push(w.apply(STEPS[0][1]))
    nid = node_id(ProxyType.SIDECAR, ips["reviews-1"], "reviews-1", "bookinfo")
    assert [k for k in w.pusher.current().memo if isinstance(k, tuple) and len(k) > 1 and k[1] == nid]
    w.pusher.connect(nid, metadata("bookinfo", {"app": "db"}, "NONE", "reviews-1"))
    w.assert_fresh("reconnected with new labels")
    await w.pusher.push(w.apply(STEPS[0][1]))
    w.assert_fresh("after the reconnect")
    # a disconnected proxy's memoized listeners are not carried into the next push
    w.pusher.disconnect(nid)
    push = await w.pusher.push(w.apply(STEPS[0][1]))
    assert not [k for k in push.memo if isinstance(k, tuple) and len(k) > 1 and k[1] == nid]
    # a proxy whose workload registers after it connected, with the named port its Service targets: an
    # endpoint push (its own workload: everything again) gives it the inbound listener it lacked
    new = node_id(ProxyType.SIDECAR, "10.9.0.9", "named-1", "bookinfo")
    w.pusher.connect(new, metadata("bookinfo", {"app": "named"}, "NONE", "named-1"))
    await w.pusher.push(w.apply(STEPS[0][1]))
    before = w.registry.snapshot()
    services = w.registry.register_workload(Workload(name="named-1", namespace="bookinfo", address="10.9.0.9",
                                                     labels=NAMED, ports={"web": 8080}))
    request = PushRequest.endpoint_change(services, [WorkloadKey("bookinfo", "named-1", "10.9.0.9")])
    keys = identity_changes(before, w.registry.snapshot(), services)   # as the control plane's request
    assert keys   # a sidecar's service account new to the service: clusters' SANs change too
    await w.pusher.push(request.merge(PushRequest.config_change(keys)))
    w.assert_fresh("workload joined")
    # another one of the same service account: an EDS-only push, yet its own listeners must follow
    second = node_id(ProxyType.SIDECAR, "10.9.0.10", "named-2", "bookinfo")
    w.pusher.connect(second, metadata("bookinfo", {"app": "named"}, "NONE", "named-2"))
    await w.pusher.push(w.apply(STEPS[0][1]))
    before = w.registry.snapshot()
    services = w.registry.register_workload(Workload(
        name="named-2", namespace="bookinfo", address="10.9.0.10", labels=NAMED,
        ports={"web": 8080}))
    assert not identity_changes(before, w.registry.snapshot(), services)
    await w.pusher.push(PushRequest.endpoint_change(services,
                                                    [WorkloadKey("bookinfo", "named-2", "10.9.0.10")]))
    w.assert_fresh("second workload joined")
