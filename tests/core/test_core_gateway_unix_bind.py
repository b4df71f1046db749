"""A Gateway server bound to a unix domain socket (valid Istio) is skipped with a warning instead of becoming
a listener Envoy would reject (a ``unix://`` socket address); the gateway's other servers still listen."""

from __future__ import annotations

from pathlib import Path

from listeners_testkit import bootstrap, configs, envoy_validate, gateway, loopback, push_of

from mizzen.core.listeners import build_listeners_with_warnings

CFG = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: uds, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 0, name: uds, protocol: HTTP}
    bind: unix:///var/run/gw.sock
    hosts: ["*"]
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


def test_core_gateway_unix_bind_is_skipped_and_envoy_accepts_the_rest(tmp_path: Path) -> None:
    lds, warnings = build_listeners_with_warnings(gateway(ports={80: 18080}), push_of([], configs(CFG)))
    assert [lis.name for lis in lds] == ["127.0.20.1_18080"]
    assert any("server 0" in w and "unix domain socket bind" in w for w in warnings), warnings
    res = envoy_validate(bootstrap(lds, (loopback(), 1)), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
