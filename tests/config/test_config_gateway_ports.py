"""Gateway servers Mizzen cannot serve together on one port are warned about at apply, and exactly those are
the servers the gateway listener builder (mizzen.core.gateway_listeners) then skips."""

from __future__ import annotations

from typing import Any

import yaml

from mizzen.config.errors import Severity
from mizzen.config.model import Config, ConfigSnapshot, Source
from mizzen.config.validation import validate
from mizzen.core.listeners import build_listeners_with_warnings
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import RegistrySnapshot

TLS = "tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"


def gateway_cfg(servers: str) -> Config:
    spec: dict[str, Any] = yaml.safe_load(f"selector: {{istio: ingressgateway}}\nservers:\n{servers}")
    return Config(kind="Gateway", api_version="networking.istio.io/v1", name="gw", namespace="istio-system",
                  spec=spec, source=Source("gw.yaml", 1))


def warned(cfg: Config) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate(cfg) if i.severity is Severity.WARNING]


def skipped_by_translation(cfg: Config) -> list[str]:
    proxy = Proxy(id=node_id(ProxyType.ROUTER, "127.0.20.9", "gw-1", "istio-system"), type=ProxyType.ROUTER,
                  ip="127.0.20.9", namespace="istio-system", labels={"istio": "ingressgateway"})
    push = PushContext.build(ConfigSnapshot.of([cfg]), RegistrySnapshot())
    return build_listeners_with_warnings(proxy, push)[1]


def test_config_http_and_tls_servers_on_one_port() -> None:
    cfg = gateway_cfg(f"""
- port: {{number: 9443, name: http, protocol: HTTP}}
  hosts: ["a.example.com"]
- port: {{number: 9443, name: https, protocol: HTTPS}}
  hosts: ["b.example.com"]
  {TLS}
""")
    assert warned(cfg) == [("spec.servers[1].port",
                            "port 9443 already has a plain HTTP server (#0); plain HTTP and TLS/TCP servers "
                            "cannot share a port: this server is not served")]
    skipped = skipped_by_translation(cfg)
    assert any("server 1 (port 9443)" in w and "cannot mix" in w for w in skipped), skipped


def test_config_tls_servers_with_the_same_server_name() -> None:
    cfg = gateway_cfg(f"""
- port: {{number: 443, name: https-a, protocol: HTTPS}}
  hosts: ["a.example.com", "b.example.com"]
  {TLS}
- port: {{number: 443, name: https-b, protocol: HTTPS}}
  hosts: ["ns1/b.example.com", "c.example.com"]
  {TLS}
- port: {{number: 443, name: https-c, protocol: HTTPS}}
  hosts: ["a.example.com"]
  {TLS}
""")
    assert warned(cfg) == [
        ("spec.servers[1].hosts[0]",
         'host "b.example.com" on port 443 is already matched by server #0; Envoy cannot choose between '
         "them: "
         "this one is not served"),
        ("spec.servers[2].hosts[0]",
         'host "a.example.com" on port 443 is already matched by server #0; Envoy cannot choose between '
         "them: "
         "this one is not served")]
    skipped = skipped_by_translation(cfg)
    assert any("server 1 (port 443): duplicate SNI hosts ['b.example.com']" in w for w in skipped), skipped
    assert any("server 2 (port 443)" in w for w in skipped), skipped


def test_config_two_tcp_servers_on_one_port() -> None:
    cfg = gateway_cfg("""
- port: {number: 3306, name: tcp-a, protocol: TCP}
  hosts: ["*"]
- port: {number: 3306, name: tcp-b, protocol: TCP}
  hosts: ["*"]
""")
    assert warned(cfg) == [("spec.servers[1]",
                            "every server name on port 3306 is already matched by server #0; Envoy cannot "
                            "choose between them: this one is not served")]


def test_config_servers_that_can_share_a_port_are_quiet() -> None:
    cfg = gateway_cfg(f"""
- port: {{number: 80, name: http, protocol: HTTP}}
  hosts: ["a.example.com"]
- port: {{number: 80, name: http2, protocol: HTTP2}}
  hosts: ["a.example.com"]
- port: {{number: 443, name: https-a, protocol: HTTPS}}
  hosts: ["a.example.com"]
  {TLS}
- port: {{number: 443, name: https-b, protocol: HTTPS}}
  hosts: ["b.example.com"]
  {TLS}
- port: {{number: 443, name: tls-p, protocol: TLS}}
  hosts: ["c.example.com"]
  tls: {{mode: PASSTHROUGH}}
- port: {{number: 443, name: https-other-bind, protocol: HTTPS}}
  hosts: ["a.example.com"]
  bind: 127.0.0.2
  {TLS}
""")
    assert warned(cfg) == []


def test_config_unset_tls_mode_is_explained_and_matches_the_translation() -> None:
    with_certs = gateway_cfg("""
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["a.example.com"]
  tls: {serverCertificate: /c.pem, privateKey: /k.pem}
""")
    assert warned(with_certs) == [("spec.servers[0].tls",
                                   "tls.mode is unset: Istio takes it as PASSTHROUGH and ignores the "
                                   "certificates; Mizzen terminates TLS with them (SIMPLE). Set the mode "
                                   "explicitly")]
    proxy = Proxy(id=node_id(ProxyType.ROUTER, "127.0.20.9", "gw-1", "istio-system"), type=ProxyType.ROUTER,
                  ip="127.0.20.9", namespace="istio-system", labels={"istio": "ingressgateway"})
    [lis] = build_listeners_with_warnings(proxy, PushContext.build(ConfigSnapshot.of([with_certs]),
                                                                   RegistrySnapshot()))[0]
    assert lis.filter_chains[0].HasField("transport_socket")     # terminated, as the warning says
    without = gateway_cfg("""
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["a.example.com"]
  tls: {}
""")
    assert [m for _, m in warned(without)] == [
        "tls.mode is unset: Istio takes it as PASSTHROUGH, Mizzen as SIMPLE, which without "
        "serverCertificate/privateKey is not served. Set mode: PASSTHROUGH"]
    assert any("skipped" in w for w in skipped_by_translation(without))
