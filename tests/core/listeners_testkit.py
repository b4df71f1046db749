"""Helpers for the LDS tests: Config objects from YAML, services, proxies, proto unpacking, a bootstrap that
embeds generated listeners for ``envoy --mode validate`` (RDS swapped for inline routes, static clusters for
every referenced cluster), and an Envoy process runner bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from mizzen.agent.binary import envoy_binary
from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core import filters
from mizzen.core.listeners import socket_address
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Endpoint, Protocol, RegistrySnapshot, Service, ServicePort
from mizzen.telemetry.metrics import with_stats_scope

NS = "bookinfo"


def fqdn(name: str, ns: str = NS) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def configs(text: str, namespace: str = NS) -> list[Config]:
    out = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        meta = doc.get("metadata") or {}
        out.append(
            Config(
                kind=doc["kind"],
                api_version=doc["apiVersion"],
                name=meta["name"],
                namespace=meta.get("namespace") or namespace,
                spec=doc.get("spec") or {},
                created=float(i),
            )
        )
    return out


def service(
    name: str,
    ports: Iterable[tuple[int, Protocol] | tuple[int, Protocol, int]],
    ns: str = NS,
    selector: Mapping[str, str] | None = None,
    addresses: tuple[str, ...] = (),
    hostname: str = "",
) -> Service:
    sps = []
    for p in ports:
        target = p[2] if len(p) == 3 else None
        sps.append(ServicePort(f"{p[1].value.lower()}-{p[0]}", p[0], p[1], target))
    return Service(
        hostname=hostname or fqdn(name, ns),
        namespace=ns,
        name=name,
        ports=tuple(sps),
        selector=dict(selector) if selector is not None else {"app": name},
        addresses=addresses,
    )


def push_of(
    services: Iterable[Service] = (),
    cfgs: Iterable[Config] = (),
    mesh: MeshConfig | None = None,
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]] | None = None,
) -> PushContext:
    reg = RegistrySnapshot(services=tuple(services), endpoints=dict(endpoints or {}))
    return PushContext.build(ConfigSnapshot.of(cfgs), reg, mesh)


def sidecar(
    ip: str = "127.0.10.1",
    labels: Mapping[str, str] | None = None,
    ns: str = NS,
    mode: str = "NONE",
    http_proxy_port: int = 0,
    name: str = "reviews-v1",
) -> Proxy:
    return Proxy(
        id=node_id(ProxyType.SIDECAR, ip, name, ns),
        type=ProxyType.SIDECAR,
        ip=ip,
        namespace=ns,
        workload_name=name,
        labels=dict(labels or {"app": "reviews", "version": "v1"}),
        interception_mode=mode,
        http_proxy_port=http_proxy_port,
    )


def gateway(ip: str = "127.0.20.1", ports: Mapping[int, int] | None = None) -> Proxy:
    kw: dict[str, Any] = {} if ports is None else {"gateway_ports": dict(ports)}
    return Proxy(
        id=node_id(ProxyType.ROUTER, ip, "istio-ingressgateway-1", "istio-system"),
        type=ProxyType.ROUTER,
        ip=ip,
        namespace="istio-system",
        labels={"istio": "ingressgateway", "app": "istio-ingressgateway"},
        **kw,
    )


def by_name(listeners: Iterable[Any]) -> dict[str, Any]:
    return {lis.name: lis for lis in listeners}


def hcm_of(f: Any) -> Any:
    assert f.name == filters.HCM, f.name
    out = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(out)
    return out


def tcp_of(f: Any) -> Any:
    assert f.name == filters.TCP_PROXY, f.name
    out = tcp_proxy_pb2.TcpProxy()
    assert f.typed_config.Unpack(out)
    return out


def tls_of(chain: Any) -> Any:
    out = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(out)
    return out


# --- bootstrap for envoy ------------------------------------------------------------------------------------
def referenced_clusters(listeners: Iterable[Any], routes: Iterable[Any] = ()) -> set[str]:
    found: set[str] = set()

    def from_route_config(rc: Any) -> None:
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                if r.route.cluster:
                    found.add(r.route.cluster)
                found.update(w.name for w in r.route.weighted_clusters.clusters)

    for rc in routes:
        from_route_config(rc)
    for lis in listeners:
        chains = [
            *lis.filter_chains,
            *([lis.default_filter_chain] if lis.HasField("default_filter_chain") else []),
        ]
        for chain in chains:
            for f in chain.filters:
                if f.name == filters.TCP_PROXY:
                    tp = tcp_of(f)
                    if tp.cluster:
                        found.add(tp.cluster)
                    found.update(w.name for w in tp.weighted_clusters.clusters)
                elif f.name == filters.HCM:
                    h = hcm_of(f)
                    if h.HasField("route_config"):
                        from_route_config(h.route_config)
    return found


def inline_routes(listeners: Iterable[Any], routes: Mapping[str, Any] | None = None) -> list[Any]:
    """Copies of the listeners with each RDS reference replaced by ``routes[name]`` (or an empty config)."""
    out = []
    for lis in listeners:
        lis2 = listener_pb2.Listener()
        lis2.CopyFrom(lis)
        chains = [
            *lis2.filter_chains,
            *([lis2.default_filter_chain] if lis2.HasField("default_filter_chain") else []),
        ]
        for chain in chains:
            for f in chain.filters:
                if f.name != filters.HCM:
                    continue
                h = hcm_of(f)
                if h.HasField("rds"):
                    name = h.rds.route_config_name
                    rc = (routes or {}).get(name) or route_pb2.RouteConfiguration(name=name)
                    h.route_config.CopyFrom(rc)
                    f.typed_config.Pack(h)
        out.append(lis2)
    return out


def static_cluster(name: str, host: str = "127.0.0.1", port: int = 9) -> Any:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.seconds = 1
    la = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb = endpoint_components_pb2.LbEndpoint()
    lb.endpoint.address.CopyFrom(socket_address(host, port))
    la.endpoints.add().lb_endpoints.append(lb)
    c.load_assignment.CopyFrom(la)
    return c


def bootstrap(
    listeners: Iterable[Any],
    admin: tuple[str, int],
    routes: Mapping[str, Any] | None = None,
    upstreams: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    lis = inline_routes(listeners, routes)
    bs = bootstrap_pb2.Bootstrap()
    bs.node.id = "test~127.0.0.1~t.ns~ns.svc.cluster.local"
    bs.node.cluster = "test"
    bs.admin.address.CopyFrom(socket_address(*admin))
    bs.static_resources.listeners.extend(lis)
    names = referenced_clusters(lis) | set(upstreams or {})
    for name in sorted(names):
        host, port = (upstreams or {}).get(name, ("127.0.0.1", 9))
        bs.static_resources.clusters.append(static_cluster(name, host, port))
    # the telemetry plugin's stats loggers carry a field newer than our protobufs, lost in JSON: restored
    return dict(with_stats_scope(json.loads(json_format.MessageToJson(bs))))


def envoy_validate(config: Mapping[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "envoy-validate.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "--disable-hot-restart", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- running envoy ------------------------------------------------------------------------------------------
def loopback() -> str:
    """A random loopback address, so parallel tests of other engineers do not clash with ours."""
    return f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(2, 250)}"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


async def wait_port(ip: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection(ip, port)
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{ip}:{port} not listening after {timeout}s")


@contextlib.asynccontextmanager
async def running_envoy(config: Mapping[str, Any], tmp: Path, wait: tuple[str, int]) -> AsyncIterator[Path]:
    """Start Envoy on ``config``; yield its log path once ``wait`` accepts connections; kill it after."""
    cfg = tmp / "envoy.json"
    cfg.write_text(json.dumps(config))
    log = tmp / "envoy.log"
    with log.open("w") as logf:
        proc = await asyncio.create_subprocess_exec(
            str(envoy_binary()),
            "-c",
            str(cfg),
            "--disable-hot-restart",
            "-l",
            "warning",
            "--concurrency",
            "1",
            "--file-flush-interval-msec",
            "100",
            stdout=logf,
            stderr=logf,
            env={**os.environ},
        )
    try:
        try:
            await wait_port(*wait)
        except TimeoutError:
            raise AssertionError(f"envoy did not start:\n{log.read_text()[-4000:]}") from None
        yield log
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


def self_signed(tmp: Path, hosts: list[str]) -> dict[str, Path]:
    """A self-signed certificate (also usable as its own CA) for ``hosts``: {"cert": path, "key": path}."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = {"cert": tmp / f"{hosts[0]}.crt", "key": tmp / f"{hosts[0]}.key"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def http(
    ip: str, port: int, raw: str, tls: ssl.SSLContext | None = None, sni: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        r, w = await asyncio.open_connection(ip, port, ssl=tls, server_hostname=sni)
        w.write(raw.encode())
        await w.drain()
        data = await r.read()
        w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        return int(lines[0].split()[1]), headers, body

    return await asyncio.wait_for(go(), 10)
