"""The aggregate registry: Kubernetes Services with their EndpointSlice endpoints (Istio's health rules, port
names, merged with selected WorkloadEntries), ServiceEntries, and Istio's rule when both define a host
(Kubernetes wins, else the oldest); incremental endpoint updates equal a full rebuild."""

from __future__ import annotations

import dataclasses

from envoy.config.core.v3 import health_check_pb2
from test_registry_services import NS, configs, wl

from mizzen.config.model import ConfigSnapshot
from mizzen.core.endpoints import lb_endpoint
from mizzen.registry.model import SliceEndpoint, SliceHealth
from mizzen.registry.registry import Registry, build_snapshot

HOST = f"web.{NS}.svc.cluster.local"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, labels: LABELS}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: 9090}]
"""


def svc(labels: str = "{}") -> ConfigSnapshot:
    return configs(SERVICE.replace("LABELS", labels))


def sep(ip: str, port_name: str = "http", port: int = 8080, health: SliceHealth = SliceHealth.HEALTHY,
        **kw: object) -> SliceEndpoint:
    return SliceEndpoint(address=ip, port_name=port_name, port=port, health=health, pod=f"web-{ip[-1]}",
                         namespace=NS, labels={"app": "web"}, **kw)  # type: ignore[arg-type]


def addresses(reg: Registry, port: int = 80) -> list[str]:
    return [e.address for e in reg.snapshot().endpoints_for(HOST, port)]


def test_slice_ports_by_name_and_istio_health_rules() -> None:
    reg = Registry()
    reg.set_configs(svc())
    changed = reg.set_service_endpoints(NS, "web", [
        sep("10.1.0.1"), sep("10.1.0.1", "grpc", 9090), sep("10.1.0.2", health=SliceHealth.UNHEALTHY),
        sep("10.1.0.3", health=SliceHealth.TERMINATING), sep("10.1.0.4", health=SliceHealth.DRAINING),
        sep("10.1.0.5", "other", 7000)])
    assert changed == {HOST}
    assert addresses(reg) == ["10.1.0.1"]     # unhealthy and terminating never sent; draining: not here
    (grpc,) = reg.snapshot().endpoints_for(HOST, 90)
    assert (grpc.address, grpc.port, grpc.workload) == ("10.1.0.1", 9090, "web-1")
    # unchanged input: nothing changed, no push
    assert reg.set_service_endpoints(NS, "web", [
        sep("10.1.0.1"), sep("10.1.0.1", "grpc", 9090), sep("10.1.0.2", health=SliceHealth.UNHEALTHY),
        sep("10.1.0.3", health=SliceHealth.TERMINATING), sep("10.1.0.4", health=SliceHealth.DRAINING),
        sep("10.1.0.5", "other", 7000)]) == frozenset()


def test_draining_only_for_persistent_session_services() -> None:
    reg = Registry()
    reg.set_configs(svc('{istio.io/persistent-session: "sticky"}'))
    reg.set_service_endpoints(NS, "web", [sep("10.1.0.1"), sep("10.1.0.4", health=SliceHealth.DRAINING)])
    by_ip = {e.address: e for e in reg.snapshot().endpoints_for(HOST, 80)}
    assert set(by_ip) == {"10.1.0.1", "10.1.0.4"}
    assert lb_endpoint(by_ip["10.1.0.4"]).health_status == health_check_pb2.DRAINING
    assert lb_endpoint(by_ip["10.1.0.1"]).health_status == health_check_pb2.HEALTHY


def test_unnamed_single_port_and_workload_entries_merge_once() -> None:
    reg = Registry()
    reg.set_configs(configs("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm}
spec: {address: 10.9.0.1, labels: {app: web}}
"""))
    reg.set_service_endpoints(NS, "web", [sep("10.1.0.1", ""), sep("10.9.0.1", "")])
    assert addresses(reg) == ["10.1.0.1", "10.9.0.1"]   # the VM once, though both list it


def test_incremental_updates_equal_a_full_build() -> None:
    reg = Registry()
    reg.set_configs(svc())
    reg.register_workload(wl("local-1", "10.2.0.1", {"app": "web"}))
    reg.snapshot()                                      # cached: later changes are incremental
    for step in ([sep("10.1.0.1")], [sep("10.1.0.1"), sep("10.1.0.2")], [sep("10.1.0.2")], []):
        reg.set_service_endpoints(NS, "web", step)
        inc = reg.snapshot()
        full = build_snapshot(svc(), reg.workloads(), slices=reg.service_endpoints())
        assert inc.endpoints == full.endpoints and inc.version == full.version
    assert addresses(reg) == ["10.2.0.1"]


def test_slices_before_their_service_are_used_when_it_arrives() -> None:
    reg = Registry()
    reg.set_service_endpoints(NS, "web", [sep("10.1.0.1")])
    assert addresses(reg) == []
    reg.set_configs(svc())
    assert addresses(reg) == ["10.1.0.1"]


SHARED_HOST = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: squatter}
spec:
  hosts: [web.shop.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.66.0.1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
"""


def test_kubernetes_service_wins_its_host_over_a_service_entry() -> None:
    snap = configs(SHARED_HOST)
    # the ServiceEntry is older, still the Kubernetes Service wins (no squatting on its name)
    older = [c.with_created(1.0 if c.kind == "ServiceEntry" else 2.0)
             for c in (*snap.list("ServiceEntry"), *snap.list("Service"))]
    reg = Registry()
    reg.set_configs(ConfigSnapshot.of(older))
    (only,) = [s for s in reg.snapshot().services if s.hostname == HOST]
    assert only.origin == "Service"
    assert addresses(reg) == []                         # the loser's endpoints are not used


def test_oldest_service_entry_wins_a_shared_host_in_a_namespace() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: NAME}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"""
    a = configs(text.replace("NAME", "b-newer")).list("ServiceEntry")[0]
    b = configs(text.replace("NAME", "a-older")).list("ServiceEntry")[0]
    reg = Registry()
    reg.set_configs(ConfigSnapshot.of([a.with_created(20.0), b.with_created(10.0)]))
    (only,) = [s for s in reg.snapshot().services if s.hostname == "api.example.com"]
    assert only.name == "a-older"
    other_ns = dataclasses.replace(a, namespace="elsewhere").with_created(30.0)
    reg.set_configs(ConfigSnapshot.of([a.with_created(20.0), b.with_created(10.0), other_ns]))
    assert sorted(s.namespace for s in reg.snapshot().services if s.hostname == "api.example.com") == [
        "elsewhere", NS]


def test_service_entries_select_kubernetes_pods_services_do_not() -> None:
    reg = Registry()
    snap = configs(SERVICE.replace("LABELS", "{}") + """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-internal}
spec:
  hosts: [web.internal]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: web}}
""")
    reg.set_configs(snap)
    reg.snapshot()
    pod = wl("web-1", "10.1.0.1", {"app": "web"}, kube_pod=True)
    assert reg.register_workload(pod) == {"web.internal"}      # the Service lists its Pods by slices only
    assert addresses(reg) == []
    assert [(e.address, e.port) for e in reg.snapshot().endpoints_for("web.internal", 80)] == [
        ("10.1.0.1", 8080)]
    full = build_snapshot(snap, reg.workloads())       # the same rule in a full build
    assert full.endpoints == reg.snapshot().endpoints
    assert reg.remove_workload(NS, "web-1") == {"web.internal"}
