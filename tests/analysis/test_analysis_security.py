"""Security analyzers: IST0127 for an AuthorizationPolicy / RequestAuthentication selecting no workload,
IST0101 for a source namespace the mesh does not know and for a CUSTOM provider missing from mesh config."""

from __future__ import annotations

from analysis_helpers import SERVICES, run

from mizzen.registry.model import Workload

PODS = [Workload(name="reviews-v1-1", namespace="bookinfo", address="127.0.0.9", labels={"app": "reviews"})]
POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nobody}
spec:
  selector: {matchLabels: {app: nobody}}
  rules: [{from: [{source: {namespaces: [bookinfo, ghost, "gh*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: ghost}}
  jwtRules: [{issuer: x, jwksUri: "http://nowhere.example/jwks.json"},
             {issuer: y, jwksUri: "http://reviews:9080/jwks.json"}]
"""


def test_security_findings() -> None:
    found = {(i.code, i.name, i.path): i.message.split("] ", 1)[-1]
             for i in run(SERVICES + POLICIES, workloads=PODS)}
    assert found[("IST0127", "nobody", "spec.selector")] == (
        "No matching workloads for this resource with the following labels: app=nobody")
    assert found[("IST0127", "jwt", "spec.selector")].endswith("app=ghost")
    assert ("IST0127", "reviews", "spec.selector") not in found
    assert found[("IST0101", "nobody", "spec.rules[0].from[0].source.namespaces[1]")] == (
        'Referenced namespace not found: "ghost"')
    assert not any(k[2].endswith("namespaces[0]") or k[2].endswith("namespaces[2]") for k in found)
    assert "opa" in found[("IST0101", "reviews", "spec.provider.name")]
    assert found[("IST0101", "jwt", "spec.jwtRules[0].jwksUri")].startswith(
        'Referenced host not found: "nowhere.example"')
    assert ("IST0101", "jwt", "spec.jwtRules[1].jwksUri") not in found   # reviews is a mesh service


def test_no_workload_findings_without_workloads() -> None:
    found = {(i.code, i.name) for i in run(SERVICES + POLICIES, registry=False)}
    assert ("IST0127", "nobody") not in found and ("IST0101", "nobody") not in found
