"""IST0138 GatewayDuplicateCertificate (Istio's gateway.CertificateAnalyzer): two Gateways on the same
workloads serving the same credential, with Istio's text and level."""

from __future__ import annotations

from analysis_helpers import run

from mizzen.config.errors import Severity


def _gateway(name: str, tls: str, selector: str = "{istio: ingressgateway}") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {selector}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{name}.example.com]
    tls: {tls}
---
"""


def test_ist0138_duplicate_certificate() -> None:
    text = (_gateway("a", "{mode: SIMPLE, credentialName: shared}")
            + _gateway("b", "{mode: SIMPLE, credentialName: shared}",
                       "{istio: ingressgateway, app: istio-ingressgateway}")
            + _gateway("c", "{mode: SIMPLE, credentialName: own}")
            + _gateway("d", "{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}", "{x: y}")
            + _gateway("e", "{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}", "{x: y}"))
    found = sorted((i.name, i.text, i.severity) for i in run(text, ignore=()) if i.code == "IST0138")
    text_of = ("Duplicate certificate in multiple gateways [{}] may cause 404s if clients re-use HTTP2 "
               "connections.")
    assert found == [
        # a's selector is a subset of b's: a reports; b's is not a subset of a's
        ("a", text_of.format("istio-system/a istio-system/b"), Severity.WARNING),
        ("d", text_of.format("istio-system/d istio-system/e"), Severity.WARNING),
        ("e", text_of.format("istio-system/e istio-system/d"), Severity.WARNING),
    ]
