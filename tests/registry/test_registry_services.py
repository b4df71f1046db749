"""The service registry: Kubernetes Services (selectors, named target ports, port protocols), ServiceEntries
(static, DNS, NONE, workloadSelector), WorkloadEntries, runner workloads, and snapshot caching/versions."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.registry.convert import port_protocol, se_address
from mizzen.registry.model import Protocol, Resolution, Workload
from mizzen.registry.registry import Registry

NS = "shop"


def configs(text: str) -> ConfigSnapshot:
    out = []
    for doc in yaml.safe_load_all(text):
        meta = doc["metadata"]
        out.append(Config(kind=doc["kind"], api_version=doc["apiVersion"], name=meta["name"],
                          namespace=meta.get("namespace", NS), spec=doc.get("spec") or {},
                          labels=meta.get("labels") or {}, annotations=meta.get("annotations") or {}))
    return ConfigSnapshot.of(out)


def wl(name: str, ip: str, labels: dict[str, str], ns: str = NS, **kw: Any) -> Workload:
    return Workload(name=name, namespace=ns, address=ip, labels=labels, **kw)


def eps(reg: Registry, host: str, port: int) -> list[tuple[str, int]]:
    return [(e.address, e.port) for e in reg.snapshot().endpoints_for(host, port)]


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  clusterIP: 10.0.0.7
  ports:
  - {name: http, port: 80, targetPort: http-alt}
  - {name: grpc-api, port: 90, targetPort: 9090}
  - {name: metrics, port: 91}
---
apiVersion: v1
kind: Service
metadata: {name: db, annotations: {networking.istio.io/exportTo: "."}}
spec:
  selector: {app: db}
  ports: [{port: 3306}]
"""


def test_kube_service_ports_selector_and_target_ports() -> None:
    reg = Registry()
    reg.set_configs(configs(SERVICES))
    reg.register_workload(wl("web-1", "127.0.40.1", {"app": "web", "version": "v1"},
                             ports={"http-alt": 8080}))
    reg.register_workload(wl("web-2", "127.0.40.2", {"app": "web", "version": "v2"}))   # no "http-alt" port
    reg.register_workload(wl("web-other", "127.0.40.3", {"app": "web"}, ns="elsewhere"))
    reg.register_workload(wl("db-1", "127.0.40.4", {"app": "db"}))
    snap = reg.snapshot()
    web = snap.service("web.shop.svc.cluster.local")
    assert web is not None and web.selector == {"app": "web"} and web.addresses == ("10.0.0.7",)
    assert [(p.name, p.port, p.protocol, p.target_port) for p in web.ports] == [
        ("http", 80, Protocol.HTTP, "http-alt"), ("grpc-api", 90, Protocol.GRPC, 9090),
        ("metrics", 91, Protocol.HTTP, None)]
    host = "web.shop.svc.cluster.local"
    # named targetPort resolves through the workload's ports; a workload without that port is skipped
    assert eps(reg, host, 80) == [("127.0.40.1", 8080)]
    assert eps(reg, host, 90) == [("127.0.40.1", 9090), ("127.0.40.2", 9090)]
    assert eps(reg, host, 91) == [("127.0.40.1", 91), ("127.0.40.2", 91)]   # other namespace never selected
    e = snap.endpoints_for(host, 80)[0]
    assert e.labels == {"app": "web", "version": "v1"} and e.workload == "web-1" and e.namespace == NS
    db = snap.service("db.shop.svc.cluster.local")
    assert db is not None and db.export_to == (".",) and db.ports[0].protocol is Protocol.TCP


@pytest.mark.parametrize(("port", "name", "declared", "transport", "want"), [
    (80, "http", None, "TCP", Protocol.HTTP),
    (80, "http-foo", None, "TCP", Protocol.HTTP),
    (80, "HTTP2-x", None, "TCP", Protocol.HTTP2),
    (80, "grpc-web", None, "TCP", Protocol.GRPC_WEB),
    (80, "grpc-webapp", None, "TCP", Protocol.GRPC_WEB),
    (443, "https-secure", None, "TCP", Protocol.HTTPS),
    (443, "tls", None, "TCP", Protocol.TLS),
    (6379, "redis", None, "TCP", Protocol.REDIS),
    (27017, "mongo-db", None, "TCP", Protocol.MONGO),
    (3306, "mysql", None, "TCP", Protocol.MYSQL),
    (80, "web", "kubernetes.io/h2c", "TCP", Protocol.HTTP2),
    (80, "tcp-x", "grpc", "TCP", Protocol.GRPC),          # appProtocol wins over the name
    (80, "", None, "TCP", Protocol.HTTP),                 # unnamed: Mizzen's stand-in for sniffing
    (80, "foo", None, "TCP", Protocol.HTTP),
    (3306, "", None, "TCP", Protocol.TCP),                # well-known ports are never sniffed
    (53, "dns", None, "UDP", Protocol.UDP),
])
def test_port_protocol(port: int, name: str, declared: str | None, transport: str, want: Protocol) -> None:
    assert port_protocol(port, name, declared, transport) is want


SERVICE_ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-se}
spec:
  hosts: [api.internal, api2.internal]
  location: MESH_INTERNAL
  addresses: [240.0.0.1]
  ports: [{number: 81, name: http, protocol: HTTP}, {number: 82, name: tcp, protocol: TCP, targetPort: 9082}]
  resolution: STATIC
  exportTo: ["."]
  endpoints:
  - {address: 127.0.41.1, ports: {http: 7072}, labels: {version: v1}, locality: us-east/a, weight: 5}
  - {address: 127.0.41.2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-se}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-ep-se}
spec:
  hosts: [mirror.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: a.mirror.example}, {address: b.mirror.example, ports: {tls: 8443}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-se}
spec:
  hosts: [vm.shop.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1}
spec:
  address: 127.0.41.9
  labels: {app: vm, version: v2}
  ports: {http: 19080}
  serviceAccount: vm-sa
  locality: eu/z1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none-se}
spec:
  hosts: ["*.wild.example"]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: NONE
"""


def test_service_entries() -> None:
    reg = Registry()
    reg.set_configs(configs(SERVICE_ENTRIES))
    reg.register_workload(wl("vm-runner", "127.0.41.10", {"app": "vm"}))
    reg.register_workload(wl("vm-elsewhere", "127.0.41.11", {"app": "vm"}, ns="other"))
    snap = reg.snapshot()
    for host in ("api.internal", "api2.internal"):
        s = snap.service(host)
        assert s is not None and s.origin == "ServiceEntry" and s.name == "static-se"
        assert s.resolution is Resolution.STATIC and not s.mesh_external
        assert s.addresses == ("240.0.0.1",) and s.export_to == (".",)
    assert eps(reg, "api.internal", 81) == [("127.0.41.1", 7072), ("127.0.41.2", 81)]
    assert eps(reg, "api2.internal", 82) == [("127.0.41.1", 9082), ("127.0.41.2", 9082)]
    first = snap.endpoints_for("api.internal", 81)[0]
    assert (first.labels, first.locality, first.weight) == ({"version": "v1"}, "us-east/a", 5)
    dns = snap.service("httpbin.org")
    assert dns is not None and dns.mesh_external and dns.resolution is Resolution.DNS
    assert eps(reg, "httpbin.org", 80) == [("httpbin.org", 80)]
    assert eps(reg, "mirror.example", 443) == [("a.mirror.example", 443), ("b.mirror.example", 8443)]
    # workloadSelector: WorkloadEntries and registered workloads in the SE's namespace
    assert eps(reg, "vm.shop.svc.cluster.local", 9080) == [("127.0.41.10", 9080), ("127.0.41.9", 19080)]
    vm = next(e for e in snap.endpoints_for("vm.shop.svc.cluster.local", 9080) if e.workload == "vm-1")
    assert (vm.service_account, vm.locality, vm.labels["version"]) == ("vm-sa", "eu/z1", "v2")
    none = snap.service("*.wild.example")
    assert none is not None and none.resolution is Resolution.NONE
    assert eps(reg, "*.wild.example", 8080) == []
    assert {w.name for w in snap.workloads} == {"vm-1", "vm-runner", "vm-elsewhere"}


def test_kube_service_selects_workload_entries() -> None:
    text = SERVICES + """---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-vm}
spec: {address: 127.0.42.1, labels: {app: web}, ports: {http-alt: 18080}}
"""
    reg = Registry()
    reg.set_configs(configs(text))
    assert eps(reg, "web.shop.svc.cluster.local", 80) == [("127.0.42.1", 18080)]


def test_remove_workload_and_snapshot_versions() -> None:
    reg = Registry()
    empty = reg.snapshot()
    assert reg.snapshot() is empty   # cached until something changes
    reg.set_configs(configs(SERVICES))
    s1 = reg.snapshot()
    assert s1.version != empty.version
    reg.register_workload(wl("web-1", "127.0.40.1", {"app": "web"}, ports={"http-alt": 8080}))
    s2 = reg.snapshot()
    assert s2 is not s1 and s2.version != s1.version
    assert reg.snapshot() is s2
    reg.set_configs(configs(SERVICES))   # equal content: the cached snapshot stays
    assert reg.snapshot() is s2
    assert eps(reg, "web.shop.svc.cluster.local", 80) == [("127.0.40.1", 8080)]
    assert [w.name for w in reg.workloads()] == ["web-1"]
    # replacing with an identical workload keeps the content version
    reg.register_workload(wl("web-1", "127.0.40.1", {"app": "web"}, ports={"http-alt": 8080}))
    assert reg.snapshot().version == s2.version
    # equal content in a different registry: equal version
    other = Registry()
    other.register_workload(wl("web-1", "127.0.40.1", {"app": "web"}, ports={"http-alt": 8080}))
    other.set_configs(configs(SERVICES))
    assert other.snapshot().version == s2.version
    assert reg.remove_workload(NS, "web-1") == {"web.shop.svc.cluster.local"}   # endpoints changed there
    assert reg.remove_workload(NS, "web-1") is None
    s3 = reg.snapshot()
    assert s3.version == s1.version
    assert eps(reg, "web.shop.svc.cluster.local", 80) == []
    # a label change changes the version and the endpoints
    reg.register_workload(wl("web-1", "127.0.40.1", {"app": "web", "version": "v9"},
                             ports={"http-alt": 8080}))
    assert reg.snapshot().version not in (s1.version, s2.version)


def test_external_name_and_headless_services() -> None:
    reg = Registry()
    reg.set_configs(configs("""
apiVersion: v1
kind: Service
metadata: {name: search}
spec:
  type: ExternalName
  externalName: search.example.com
  ports: [{name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: db-headless}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp-pg, port: 5432}]
"""))
    reg.register_workload(wl("db-0", "127.0.43.1", {"app": "db"}))
    snap = reg.snapshot()
    search = snap.service("search.shop.svc.cluster.local")
    assert search is not None and search.resolution is Resolution.DNS and search.mesh_external
    assert search.selector is None and search.ports[0].protocol is Protocol.HTTPS
    assert eps(reg, "search.shop.svc.cluster.local", 443) == [("search.example.com", 443)]
    headless = snap.service("db-headless.shop.svc.cluster.local")
    assert headless is not None and headless.addresses == () and headless.resolution is Resolution.STATIC
    assert eps(reg, "db-headless.shop.svc.cluster.local", 5432) == [("127.0.43.1", 5432)]


@pytest.mark.parametrize(("written", "stored"), [
    ("240.0.0.1/32", "240.0.0.1"),       # Istio turns a single-host CIDR into the plain IP
    ("2001:db8::1/128", "2001:db8::1"),
    ("240.0.0.1", "240.0.0.1"),
    ("10.1.0.0/16", "10.1.0.0/16"),      # a real range stays as written
    ("not-an-ip", "not-an-ip"),
])
def test_service_entry_address_single_host_cidr(written: str, stored: str) -> None:
    assert se_address(written) == stored
    reg = Registry()
    reg.set_configs(configs(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: se}}
spec:
  hosts: [db.example]
  addresses: ["{written}"]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: NONE
"""))
    svc = reg.snapshot().service("db.example")
    assert svc is not None and svc.addresses == (stored,)


WE_BEHIND_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080}
  - {name: http-admin, port: 9090, targetPort: 19090}
  - {name: grpc, port: 7070, targetPort: grpc-port}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-mapped}
spec:
  address: 127.0.42.1
  labels: {app: ratings}
  ports: {http: 8080, http-admin: 8090, grpc-port: 17070}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-plain}
spec:
  address: 127.0.42.2
  labels: {app: ratings}
"""


def test_workload_entry_ports_behind_a_kubernetes_service() -> None:
    """Istio: a WorkloadEntry's ports map is keyed by service port name (overriding a numeric targetPort);
    a named targetPort must be in it (else the entry is skipped for that port). Pods keep the targetPort."""
    reg = Registry()
    reg.set_configs(configs(WE_BEHIND_SERVICE))
    pod_ports = {"http": 5555, "grpc-port": 7777}
    reg.register_workload(wl("pod-1", "127.0.42.3", {"app": "ratings"}, ports=pod_ports))
    host = f"ratings.{NS}.svc.cluster.local"
    assert eps(reg, host, 9080) == [("127.0.42.1", 8080), ("127.0.42.2", 9080), ("127.0.42.3", 9080)]
    assert eps(reg, host, 9090) == [("127.0.42.1", 8090), ("127.0.42.2", 19090), ("127.0.42.3", 19090)]
    assert eps(reg, host, 7070) == [("127.0.42.1", 17070), ("127.0.42.3", 7777)]


def test_incremental_workload_changes_equal_a_full_rebuild() -> None:
    """register/remove update the cached snapshot for the selecting services only; the result (endpoints,
    workloads, version) is what a rebuild from scratch gives, and the changed hostnames are reported."""
    reg = Registry()
    reg.set_configs(configs(SERVICES))
    reg.register_workload(wl("web-1", "127.0.40.1", {"app": "web"}, ports={"http-alt": 8080}))
    reg.snapshot()
    changed = reg.register_workload(wl("web-2", "127.0.40.2", {"app": "web"}, ports={"http-alt": 8080}))
    assert changed == {"web.shop.svc.cluster.local"}
    assert reg.register_workload(wl("lonely", "127.0.40.3", {"app": "nobody"})) == frozenset()
    relabelled = reg.register_workload(wl("web-1", "127.0.40.1", {"app": "other"}, ports={"http-alt": 8080}))
    assert relabelled == {"web.shop.svc.cluster.local"}   # web-1 left web's endpoints
    incremental = reg.snapshot()
    fresh = Registry()
    fresh.set_configs(configs(SERVICES))
    for w in reg.workloads():
        fresh.register_workload(w)
    rebuilt = fresh.snapshot()
    assert dict(incremental.endpoints) == dict(rebuilt.endpoints)
    assert incremental.workloads == rebuilt.workloads and incremental.version == rebuilt.version
    assert eps(reg, "web.shop.svc.cluster.local", 80) == [("127.0.40.2", 8080)]
