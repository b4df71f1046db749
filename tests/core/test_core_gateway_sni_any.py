"""A gateway TLS-passthrough VirtualService with ``sniHosts: ["*"]`` (valid Istio on gateways) matches every
server name: no ``server_names`` at all, since Envoy refuses a bare ``*`` there (its listener is NACKed)."""

from __future__ import annotations

from pathlib import Path

from listeners_testkit import bootstrap, by_name, configs, envoy_validate, gateway, loopback, push_of, service

from mizzen.core.listeners import build_listeners
from mizzen.registry.model import Protocol

NGINX = service("nginx", [(443, Protocol.HTTPS)], ns="default")

CFG = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any-sni, namespace: default}
spec:
  hosts: ["*"]
  gateways: [tls-gw]
  tls:
  - match: [{sniHosts: ["*"]}]
    route: [{destination: {host: nginx, port: {number: 443}}}]
"""


def test_core_gateway_wildcard_sni_matches_every_name_and_envoy_accepts_it(tmp_path: Path) -> None:
    lds = build_listeners(gateway(), push_of([NGINX], configs(CFG, "default")))
    lis = by_name(lds)["127.0.20.1_8443"]
    assert [list(c.filter_chain_match.server_names) for c in lis.filter_chains] == [[]]
    res = envoy_validate(bootstrap(lds, (loopback(), 1)), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
