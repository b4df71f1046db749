"""Helpers for the RDS tests: Config objects from YAML text/files, a bookinfo-like registry, proxies, and
lookups into generated RouteConfigurations."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.core.routes import build_routes
from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

REPO = Path(__file__).resolve().parents[2]
BOOKINFO_NET = REPO / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"
SEED = REPO / "tests" / "fixtures" / "seed"
NS = "bookinfo"


def fqdn(name: str, ns: str = NS) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def configs_from_yaml(text: str, namespace: str = NS, created: float = 0.0) -> list[Config]:
    out = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        meta = doc.get("metadata") or {}
        out.append(Config(kind=doc["kind"], api_version=doc["apiVersion"], name=meta["name"],
                          namespace=meta.get("namespace") or namespace, spec=doc.get("spec") or {},
                          labels=meta.get("labels") or {}, created=created + i))
    return out


def configs_from_file(path: Path, namespace: str = NS, created: float = 0.0) -> list[Config]:
    return configs_from_yaml(path.read_text(), namespace, created)


def http_service(name: str, ns: str = NS, ports: Iterable[int] = (9080,),
                 protocol: Protocol = Protocol.HTTP, hostname: str = "") -> Service:
    return Service(hostname=hostname or fqdn(name, ns), namespace=ns, name=name,
                   ports=tuple(ServicePort(f"http-{p}", p, protocol) for p in ports), selector={"app": name})


def bookinfo_registry(*extra: Service) -> RegistrySnapshot:
    svcs = [http_service(n) for n in ("productpage", "reviews", "ratings", "details")]
    return RegistrySnapshot(services=(*svcs, *extra))


def sidecar(ns: str = NS, labels: dict[str, str] | None = None, name: str = "productpage-v1") -> Proxy:
    return Proxy(id=node_id(ProxyType.SIDECAR, "127.0.10.1", name, ns), type=ProxyType.SIDECAR,
                 ip="127.0.10.1", namespace=ns, workload_name=name,
                 labels=labels if labels is not None else {"app": "productpage", "version": "v1"})


def gateway_proxy(ns: str = "istio-system", labels: dict[str, str] | None = None) -> Proxy:
    return Proxy(id=node_id(ProxyType.ROUTER, "127.0.10.2", "istio-ingressgateway-1", ns),
                 type=ProxyType.ROUTER, ip="127.0.10.2", namespace=ns,
                 labels=labels if labels is not None else {"istio": "ingressgateway"})


def push_of(configs: Iterable[Config], registry: RegistrySnapshot | None = None,
            mesh: MeshConfig | None = None) -> PushContext:
    return PushContext.build(ConfigSnapshot.of(configs), registry or bookinfo_registry(), mesh)


def route_config(proxy: Proxy, push: PushContext, name: str) -> route_pb2.RouteConfiguration:
    [cfg] = build_routes(proxy, push, [name])
    assert cfg.name == name
    return cfg


def vhost(cfg: route_pb2.RouteConfiguration, name: str) -> rc.VirtualHost:
    found = [v for v in cfg.virtual_hosts if v.name == name]
    assert found, f"no vhost {name}; have {[v.name for v in cfg.virtual_hosts]}"
    return found[0]


def single_route(proxy: Proxy, push: PushContext, host: str, port: int = 9080) -> rc.Route:
    vh = vhost(route_config(proxy, push, str(port)), f"{host}:{port}")
    assert len(vh.routes) == 1, vh.routes
    return vh.routes[0]


def vs_yaml(name: str, hosts: list[str], http: list[dict[str, Any]], gateways: list[str] | None = None,
            namespace: str = NS, created: float = 0.0) -> Config:
    spec: dict[str, Any] = {"hosts": hosts, "http": http}
    if gateways is not None:
        spec["gateways"] = gateways
    return Config(kind="VirtualService", api_version="networking.istio.io/v1", name=name, namespace=namespace,
                  spec=spec, created=created)
