"""Gateway ``tls.mode: OPTIONAL_MUTUAL`` through a real Envoy: a client without a certificate gets through,
one with a certificate from the configured CA too, and one with a certificate the CA did not sign is refused
(before, OPTIONAL_MUTUAL was served like SIMPLE and the last one got through)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from listeners_testkit import (
    bootstrap,
    configs,
    free_port,
    gateway,
    http,
    loopback,
    push_of,
    running_envoy,
    self_signed,
)

from mizzen.core.listeners import build_listeners, route_config_names

pytestmark = pytest.mark.e2e


def _ok_route(name: str) -> route_pb2.RouteConfiguration:
    r = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"))
    r.direct_response.status = 200
    vh = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[r])
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])


def _client(server_ca: Path, cert: dict[str, Path] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server_ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert["cert"]), str(cert["key"]))
    return ctx


async def test_core_gateway_optional_mutual_verifies_presented_client_certs(tmp_path: Path) -> None:
    server = self_signed(tmp_path, ["secure.example.com"])
    trusted = self_signed(tmp_path, ["trusted-client.example.com"])
    stranger = self_signed(tmp_path, ["stranger.example.com"])
    ip = loopback()
    port = free_port(ip)
    cfg = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: opt, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["secure.example.com"]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {server["cert"]}, privateKey: {server["key"]},
           caCertificates: {trusted["cert"]}}}
"""
    lds = build_listeners(gateway(ip=ip, ports={443: port}), push_of([], configs(cfg)))
    routes = {n: _ok_route(n) for n in route_config_names(lds)}
    boot = bootstrap(lds, (ip, free_port(ip)), routes)
    req = "GET / HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n"
    async with running_envoy(boot, tmp_path, (ip, port)):
        for cert in (None, trusted):
            client = _client(server["cert"], cert)
            status, _, _ = await http(ip, port, req, tls=client, sni="secure.example.com")
            assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, IndexError)):
            await http(ip, port, req, tls=_client(server["cert"], stranger), sni="secure.example.com")
