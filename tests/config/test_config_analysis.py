"""Analyzer-style warnings one object shows on its own (istioctl analyze codes), through ``validate``."""

from __future__ import annotations

from typing import Any

import yaml

from mizzen.config.errors import Severity
from mizzen.config.model import Config, Source


def issues(kind: str, spec: str, api: str = "networking.istio.io/v1") -> list[tuple[str, str, Severity]]:
    from mizzen.config.validation import validate

    body: dict[str, Any] = yaml.safe_load(spec)
    c = Config(kind=kind, api_version=api, name="obj", namespace="ns", spec=body, source=Source("t.yaml", 1))
    return [(i.path, i.message, i.severity) for i in validate(c)]


W = Severity.WARNING


def test_config_client_tls_without_ca_at_the_levels_istio_checks() -> None:
    """Istio's CaCertificateAnalyzer: the top-level traffic policy (IST0128) and its port-level settings
    (IST0129); insecureSkipVerify does not exempt; subsets are not checked."""
    found = issues("DestinationRule", """
host: api.example.com
trafficPolicy:
  tls: {mode: SIMPLE, insecureSkipVerify: true}
  portLevelSettings:
  - port: {number: 8443}
    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
  - port: {number: 9443}
    tls: {mode: SIMPLE, caCertificates: /ca.pem}
subsets:
- name: v2
  labels: {version: v2}
  trafficPolicy:
    tls: {mode: SIMPLE}
""")
    text = ("DestinationRule ns/obj in namespace ns has TLS mode set to {} but no caCertificates are set to "
            "validate server identity for host: api.example.com")
    assert found == [
        ("spec.trafficPolicy.tls", "[IST0128] " + text.format("SIMPLE"), W),
        ("spec.trafficPolicy.portLevelSettings[0].tls",
         "[IST0129] " + text.format("MUTUAL") + " at port number:8443", W)]


def test_config_client_tls_with_ca_or_credential_is_quiet() -> None:
    with_ca = "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca}}"
    assert issues("DestinationRule", with_ca) == []
    assert issues("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: DISABLE}}") == []


def test_config_service_entry_tcp_port_without_addresses() -> None:
    spec = """
hosts: [db.example.com]
location: MESH_EXTERNAL
resolution: DNS
ports:
- {number: 5432, name: tcp-pg, protocol: TCP}
- {number: 80, name: http, protocol: HTTP}
- {number: 6000, name: other}
"""
    found = [(p, m) for p, m, s in issues("ServiceEntry", spec) if s is W]
    assert found == [("spec.ports[0]", "[IST0134] ServiceEntry addresses are required for this protocol."),
                     ("spec.ports[2]", "[IST0134] ServiceEntry addresses are required for this protocol.")]
    with_addresses = spec.replace("resolution: DNS", "resolution: DNS\naddresses: [240.0.0.1]")
    assert issues("ServiceEntry", with_addresses) == []


def test_config_service_port_names_outside_the_convention() -> None:
    spec = """
selector: {app: web}
ports:
- {name: web, port: 8080, targetPort: 9090}
- {name: http-web, port: 8081}
- {name: grpc-web, port: 8082}
- {name: custom, port: 8083, appProtocol: http}
- {name: dns, port: 53, protocol: UDP}
- {name: mysql-main, port: 3306}
- {name: db, port: 53, targetPort: 3307}
- {name: http, port: 8084, appProtocol: foo}
- {name: h2c, port: 8085, appProtocol: kubernetes.io/h2c}
"""
    found = issues("Service", spec, api="v1")
    assert found == [
        ("spec.ports[0]", "[IST0118] Port name web (port: 8080, targetPort: 9090) doesn't follow the naming "
                          "convention of Istio port.", W),
        # appProtocol is what Istio reads when it is set
        ("spec.ports[7]", "[IST0118] Port name http (port: 8084, targetPort: 0) doesn't follow the naming "
                          "convention of Istio port.", W)]
    unnamed = issues("Service", "selector: {app: web}\nports: [{port: 9000}]", api="v1")
    assert [m for _, m, _ in unnamed] == ["[IST0118] Port name  (port: 9000, targetPort: 0) doesn't follow "
                                          "the naming convention of Istio port."]


def test_config_external_name_service_ports() -> None:
    spec = "type: ExternalName\nexternalName: db.example.com\nports: [{name: tcp, port: 5432}, " \
           "{name: db, port: 5433}, {name: tcp-db, port: 5434}]"
    found = issues("Service", spec, api="v1")
    assert [(p, m.split("]")[0] + "]") for p, m, _ in found] == [("spec.ports[0]", "[IST0150]"),
                                                                ("spec.ports[1]", "[IST0150]")]


def test_config_analyzers_do_not_run_on_objects_with_errors() -> None:
    found = issues("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: SIMPLE}, loadBalancer: "
                                      "{consistentHash: {maglev: {tableSize: 4}}}}")
    assert [s for _, _, s in found] == [Severity.ERROR]


def test_config_binds_a_local_proxy_cannot_use() -> None:
    sidecar = """
egress:
- port: {number: 9080, name: http, protocol: HTTP}
  bind: 10.1.2.3
  hosts: ["./*"]
- port: {number: 9081, name: http2, protocol: HTTP}
  bind: 127.0.10.50
  hosts: ["./*"]
ingress:
- port: {number: 8080, name: http, protocol: HTTP}
  bind: 0.0.0.0
  defaultEndpoint: 127.0.0.1:8080
"""
    found = issues("Sidecar", sidecar)
    assert found == [("spec.egress[0].bind",
                      "bind 10.1.2.3 is not a loopback address: a proxy in Mizzen's local mode (no network "
                      "namespace of its own) cannot listen on it, and Envoy then rejects the listener", W)]
    gw = ("servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], bind: '192.168.1.9'}, "
          "{port: {number: 81, name: h2, protocol: HTTP}, hosts: ['*'], bind: '::1'}]")
    assert [p for p, _, _ in issues("Gateway", gw)] == ["spec.servers[0].bind"]


def test_config_gateway_tls_version_range_no_handshake_fits() -> None:
    gw = ("servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], "
          "tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, minProtocolVersion: TLSV1_3, "
          "maxProtocolVersion: TLSV1_2}}]")
    msg = "minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2: no TLS handshake can succeed"
    assert issues("Gateway", gw) == [("spec.servers[0].tls", f"{msg} on this server", W)]
    assert issues("Gateway", gw.replace("TLSV1_2}", "TLSV1_3}")) == []
