"""Helpers for the CDS/EDS tests: Config objects from YAML text and files (parsed here, not via the config
loader), a bookinfo registry with real workloads, proxies, and lookups into generated protos."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import json_format

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.registry.registry import Registry

REPO = Path(__file__).resolve().parents[2]
ISTIO = REPO / "tests" / "fixtures" / "istio"
BOOKINFO_NET = ISTIO / "samples" / "bookinfo" / "networking"
ROUTING = ISTIO / "routing"
NS = "bookinfo"
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def fqdn(name: str, ns: str = NS) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def configs_from_yaml(text: str, namespace: str = NS) -> list[Config]:
    out = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        meta = doc.get("metadata") or {}
        out.append(Config(kind=doc["kind"], api_version=doc["apiVersion"], name=meta["name"],
                          namespace=meta.get("namespace") or namespace, spec=doc.get("spec") or {},
                          labels=meta.get("labels") or {}, annotations=meta.get("annotations") or {}))
    return out


def configs_from_file(path: Path, namespace: str = NS) -> list[Config]:
    return configs_from_yaml(path.read_text(), namespace)


HTTP_9080: Sequence[Mapping[str, Any]] = ({"port": 9080, "name": "http"},)


def kube_service(name: str, ns: str = NS, ports: Sequence[Mapping[str, Any]] = HTTP_9080,
                 selector: Mapping[str, str] | None = None) -> Config:
    spec: dict[str, Any] = {"ports": [dict(p) for p in ports], "selector": dict(selector or {"app": name})}
    return Config(kind="Service", api_version="v1", name=name, namespace=ns, spec=spec)


def dr(name: str, spec: Mapping[str, Any], ns: str = NS) -> Config:
    return Config(kind="DestinationRule", api_version="networking.istio.io/v1", name=name, namespace=ns,
                  spec=spec)


def workload(name: str, ip: str, labels: Mapping[str, str], ns: str = NS, locality: str = "",
             weight: int = 0, healthy: bool = True, ports: Mapping[str, int] | None = None) -> Workload:
    return Workload(name=name, namespace=ns, address=ip, labels=dict(labels), locality=locality,
                    weight=weight, healthy=healthy, ports=dict(ports or {}))


BOOKINFO_SERVICES = ("productpage", "details", "reviews", "ratings")


def bookinfo_configs() -> list[Config]:
    return [kube_service(n) for n in BOOKINFO_SERVICES]


def bookinfo_workloads() -> list[Workload]:
    return [
        workload("productpage-v1-a", "127.0.20.1", {"app": "productpage", "version": "v1"}),
        workload("details-v1-a", "127.0.20.2", {"app": "details", "version": "v1"}),
        workload("ratings-v1-a", "127.0.20.3", {"app": "ratings", "version": "v1"}),
        workload("reviews-v1-a", "127.0.20.4", {"app": "reviews", "version": "v1"}),
        workload("reviews-v2-a", "127.0.20.5", {"app": "reviews", "version": "v2"}),
        workload("reviews-v3-a", "127.0.20.6", {"app": "reviews", "version": "v3"}),
    ]


def push_of(configs: Iterable[Config], workloads: Iterable[Workload] = (),
            mesh: MeshConfig | None = None) -> PushContext:
    reg = Registry()
    snapshot = ConfigSnapshot.of(list(configs))
    reg.set_configs(snapshot)
    for w in workloads:
        reg.register_workload(w)
    return PushContext.build(snapshot, reg.snapshot(), mesh)


def bookinfo_push(*extra: Config, workloads: Iterable[Workload] | None = None) -> PushContext:
    return push_of([*bookinfo_configs(), *extra], bookinfo_workloads() if workloads is None else workloads)


def sidecar(labels: Mapping[str, str] | None = None, name: str = "productpage-v1-a", ns: str = NS,
            ip: str = "127.0.20.1", locality: str = "", app_host: str = "127.0.0.1") -> Proxy:
    return Proxy(id=node_id(ProxyType.SIDECAR, ip, name, ns), type=ProxyType.SIDECAR, ip=ip, namespace=ns,
                 workload_name=name, labels=dict(labels if labels is not None else
                                                 {"app": "productpage", "version": "v1"}),
                 locality=locality, app_host=app_host)


def gateway(ns: str = "istio-system") -> Proxy:
    return Proxy(id=node_id(ProxyType.ROUTER, "127.0.20.100", "ingressgateway-a", ns), type=ProxyType.ROUTER,
                 ip="127.0.20.100", namespace=ns, workload_name="ingressgateway-a",
                 labels={"istio": "ingressgateway"})


def by_name(clusters: Iterable[cluster_pb2.Cluster]) -> dict[str, cluster_pb2.Cluster]:
    return {c.name: c for c in clusters}


def http_options(c: cluster_pb2.Cluster) -> hpo_pb2.HttpProtocolOptions | None:
    if HPO not in c.typed_extension_protocol_options:
        return None
    opts = hpo_pb2.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[HPO].Unpack(opts)
    return opts


def istio_metadata(c: cluster_pb2.Cluster) -> dict[str, Any]:
    return json_format.MessageToDict(c.metadata.filter_metadata["istio"])


def addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    out = []
    for g in cla.endpoints:
        for lb in g.lb_endpoints:
            sa = lb.endpoint.address.socket_address
            out.append(f"{sa.address}:{sa.port_value}")
    return sorted(out)
