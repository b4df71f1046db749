"""LDS for gateways: HTTP servers (port mapping), HTTPS SIMPLE/MUTUAL from certificate files, TLS passthrough
SNI chains, TCP servers, credentialName warnings, and the route names the route builder must serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from listeners_testkit import by_name, configs, gateway, hcm_of, push_of, self_signed, service, tcp_of, tls_of

from mizzen.core import filters
from mizzen.core.gateway_listeners import gateway_servers, servers_for_route
from mizzen.core.listeners import build_listeners, generation_warnings, route_config_names
from mizzen.registry.model import Protocol

PRODUCTPAGE = service("productpage", [(9080, Protocol.HTTP)])
NGINX = service("nginx", [(443, Protocol.HTTPS)], ns="default")
MYSQL = service("mysql", [(3306, Protocol.TCP)], ns="default")

HTTP_GW = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo.kubeasy.com"]
  - port: {number: 80, name: http2, protocol: HTTP}
    hosts: ["bookinfo/other.example.com"]
"""


def test_http_servers_share_one_listener_on_mapped_port() -> None:
    push = push_of([PRODUCTPAGE], configs(HTTP_GW))
    lds = build_listeners(gateway(ip="127.0.20.1"), push)
    assert [lis.name for lis in lds] == ["127.0.20.1_8080"]
    lis = lds[0]
    assert lis.address.socket_address.port_value == 8080
    assert len(lis.filter_chains) == 1
    hcm = hcm_of(lis.filter_chains[0].filters[0])
    assert hcm.rds.route_config_name == "http.8080"
    assert hcm.use_remote_address.value
    assert hcm.forward_client_cert_details == hcm.SANITIZE_SET
    assert hcm.server_name == "istio-envoy"
    assert [f.name for f in hcm.http_filters] == [filters.FAULT, filters.CORS, filters.ROUTER]
    assert not lis.listener_filters
    assert route_config_names(lds) == ["http.8080"]
    assert [s.index for s in servers_for_route(gateway(), push, "http.8080")] == [0, 1]


def test_gateway_port_override_and_unselected_gateway() -> None:
    other = HTTP_GW.replace("bookinfo-gateway", "other").replace("ingressgateway", "egressgateway")
    push = push_of([PRODUCTPAGE], configs(HTTP_GW + "---" + other))
    lds = build_listeners(gateway(ports={80: 18080}), push)
    assert [lis.name for lis in lds] == ["127.0.20.1_18080"]
    assert route_config_names(lds) == ["http.18080"]


def _https_gateway(cert: Path, key: Path, mode: str = "SIMPLE", extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-bookinfo, protocol: HTTPS}}
    hosts: ["bookinfo/bookinfo.example.com"]
    tls:
      mode: {mode}
      serverCertificate: {cert}
      privateKey: {key}
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
{extra}
  - port: {{number: 443, name: https-star, protocol: HTTPS}}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
"""


def test_https_simple_server_chain(tls_files: dict[str, Path]) -> None:
    gw = _https_gateway(tls_files["cert"], tls_files["key"])
    lds = build_listeners(gateway(), push_of([PRODUCTPAGE], configs(gw)))
    assert [lis.name for lis in lds] == ["127.0.20.1_8443"]
    lis = lds[0]
    assert [f.name for f in lis.listener_filters] == [filters.TLS_INSPECTOR]
    first, star = lis.filter_chains
    assert list(first.filter_chain_match.server_names) == ["bookinfo.example.com"]
    assert list(star.filter_chain_match.server_names) == []
    ctx = tls_of(first)
    common = ctx.common_tls_context
    assert common.tls_certificates[0].certificate_chain.filename == str(tls_files["cert"])
    assert common.tls_certificates[0].private_key.filename == str(tls_files["key"])
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert common.tls_params.tls_minimum_protocol_version == common.tls_params.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == common.tls_params.TLSv1_3
    assert list(common.tls_params.cipher_suites) == ["ECDHE-RSA-AES128-GCM-SHA256"]
    assert not ctx.require_client_certificate.value
    names = [hcm_of(c.filters[0]).rds.route_config_name for c in lis.filter_chains]
    assert names == [
        "https.8443.https-bookinfo.secure.istio-system",
        "https.8443.https-star.secure.istio-system",
    ]
    assert route_config_names(lds) == sorted(names)
    assert hcm_of(first.filters[0]).use_remote_address.value


def test_https_mutual_requires_client_cert(tls_files: dict[str, Path]) -> None:
    extra = f"      caCertificates: {tls_files['cert']}\n      subjectAltNames: [client.example.com]"
    gw = _https_gateway(tls_files["cert"], tls_files["key"], mode="MUTUAL", extra=extra)
    lis = build_listeners(gateway(), push_of([PRODUCTPAGE], configs(gw)))[0]
    ctx = tls_of(lis.filter_chains[0])
    assert ctx.require_client_certificate.value
    vc = ctx.common_tls_context.validation_context
    assert vc.trusted_ca.filename == str(tls_files["cert"])
    assert {m.matcher.exact for m in vc.match_typed_subject_alt_names} == {"client.example.com"}


def test_credential_name_is_skipped_with_warning(tls_files: dict[str, Path]) -> None:
    gw = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: sds, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["a.example.com"]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""
    proxy, push = gateway(), push_of([PRODUCTPAGE], configs(gw))
    assert [lis.name for lis in build_listeners(proxy, push)] == ["127.0.20.1_8080"]
    warnings = generation_warnings(proxy, push)
    assert any("credentialName" in w and "istio-system/sds" in w for w in warnings), warnings


PASSTHROUGH = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["nginx.example.com", "other.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nginx, namespace: default}
spec:
  hosts: ["nginx.example.com"]
  gateways: [tls-gw]
  tls:
  - match: [{port: 443, sniHosts: [nginx.example.com]}]
    route: [{destination: {host: nginx, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other, namespace: default}
spec:
  hosts: ["other.example.com"]
  gateways: [default/tls-gw]
  tls:
  - match: [{sniHosts: [other.example.com]}]
    route:
    - destination: {host: nginx, subset: v1}
      weight: 50
    - destination: {host: nginx, subset: v2}
      weight: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unbound, namespace: default}
spec:
  hosts: ["nginx.example.com"]
  tls:
  - match: [{sniHosts: [nginx.example.com]}]
    route: [{destination: {host: nginx}}]
"""


def test_tls_passthrough_sni_chains() -> None:
    lds = build_listeners(gateway(), push_of([NGINX], configs(PASSTHROUGH, "default")))
    lis = by_name(lds)["127.0.20.1_8443"]
    assert [f.name for f in lis.listener_filters] == [filters.TLS_INSPECTOR]
    got = {tuple(c.filter_chain_match.server_names): tcp_of(c.filters[0]) for c in lis.filter_chains}
    assert set(got) == {("nginx.example.com",), ("other.example.com",)}
    assert got[("nginx.example.com",)].cluster == "outbound|443||nginx.default.svc.cluster.local"
    weighted = got[("other.example.com",)].weighted_clusters.clusters
    assert [(w.name, w.weight) for w in weighted] == [
        ("outbound|443|v1|nginx.default.svc.cluster.local", 50),
        ("outbound|443|v2|nginx.default.svc.cluster.local", 50),
    ]
    assert not any(c.HasField("transport_socket") for c in lis.filter_chains)
    assert route_config_names(lds) == []


def test_tcp_server_routes_from_vs() -> None:
    cfg = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: default}
spec:
  hosts: ["*"]
  gateways: [tcp-gw]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: mysql.default.svc.cluster.local, port: {number: 3306}}}]
"""
    lis = build_listeners(gateway(), push_of([MYSQL], configs(cfg, "default")))[0]
    assert lis.name == "127.0.20.1_31400"
    assert tcp_of(lis.filter_chains[0].filters[0]).cluster == "outbound|3306||mysql.default.svc.cluster.local"


def test_tcp_server_without_route_is_dropped_and_http_tls_mix_warns() -> None:
    cfg = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mix, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9000, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9100, name: tcp2, protocol: TCP}
    hosts: ["*"]
"""
    proxy, push = gateway(), push_of([MYSQL], configs(cfg, "default"))
    assert [lis.name for lis in build_listeners(proxy, push)] == ["127.0.20.1_9000"]
    warnings = generation_warnings(proxy, push)
    assert any("cannot mix" in w for w in warnings)
    assert any("port 9100" in w and "tcp route" in w for w in warnings)
    assert [s.listen_port for s in gateway_servers(proxy, push)] == [9000, 9000, 9100]


def test_duplicate_sni_hosts_dropped(tls_files: dict[str, Path]) -> None:
    gw = _https_gateway(tls_files["cert"], tls_files["key"]).replace(
        'hosts: ["*"]', 'hosts: ["bookinfo.example.com"]'
    )
    proxy, push = gateway(), push_of([PRODUCTPAGE], configs(gw))
    lis = build_listeners(proxy, push)[0]
    assert len(lis.filter_chains) == 1
    assert any("duplicate SNI" in w for w in generation_warnings(proxy, push))


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    return self_signed(tmp_path, ["bookinfo.example.com"])
