"""IST0101 ReferencedResourceNotFound (gateways, hosts, subsets, DestinationRule hosts, Gateway selectors)
and IST0112, each with the object's file:line."""

from __future__ import annotations

from analysis_helpers import SERVICES, brief, gateway_pod, line_of, run

from mizzen.config.errors import Severity

VS_TYPOS = SERVICES + """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gatewy, mesh]
  http:
  - match:
    - gateways: [istio-system/other]
    route:
    - destination: {host: reviwes}
  - route:
    - destination: {host: reviews, subset: v4}
      weight: 50
    - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v1}
      weight: 50
"""


def test_analysis_typos_are_ist0101_with_file_and_line() -> None:
    found = run(VS_TYPOS)
    assert brief(found) == [
        ("IST0101", "VirtualService/reviews", "spec.gateways[0]", line_of(VS_TYPOS, "bookinfo-gatewy")),
        ("IST0101", "VirtualService/reviews", "spec.http[0].match[0].gateways[0]",
         line_of(VS_TYPOS, "istio-system/other")),
        ("IST0101", "VirtualService/reviews", "spec.http[0].route[0].destination.host",
         line_of(VS_TYPOS, "host: reviwes")),
        ("IST0101", "VirtualService/reviews", "spec.http[1].route[0].destination.subset",
         line_of(VS_TYPOS, "subset: v4")),
    ]
    texts = [i.text for i in found]
    assert texts == ['Referenced gateway not found: "bookinfo-gatewy"',
                     'Referenced gateway not found: "istio-system/other"',
                     'Referenced host not found: "reviwes"',
                     'Referenced host+subset in destinationrule not found: "reviews+v4"']
    assert all(i.severity is Severity.ERROR and i.namespace == "bookinfo" for i in found)
    first = found[0]
    assert str(first) == (f"t.yaml:{first.line}: VirtualService/reviews: spec.gateways[0]: "
                          '[IST0101] Referenced gateway not found: "bookinfo-gatewy"')
    assert first.to_dict()["code"] == "IST0101"


def test_analysis_without_registry_checks_only_config_references() -> None:
    assert [i.text for i in run(VS_TYPOS, registry=False)] == [
        'Referenced gateway not found: "bookinfo-gatewy"',
        'Referenced gateway not found: "istio-system/other"']


def test_analysis_service_entries_and_cross_namespace_rules_resolve() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: egress}
spec:
  hosts: ["*.example.com", api.other.org]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: client-side, namespace: frontend}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local, www.example.com]
  gateways: [istio-system/gw, gw.istio-system.svc.cluster.local, mesh]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route:
    - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}
  - route:
    - destination: {host: www.example.com}
      weight: 50
    - destination: {host: api.other.org}
      weight: 50
"""
    assert run(text) == []


def test_analysis_destination_rule_host_without_service() -> None:
    text = SERVICES + """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: typo}
spec:
  host: ratingz
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all-local}
spec:
  host: "*.local"
"""
    found = run(text)
    assert brief(found) == [("IST0174", "DestinationRule/typo", "spec.host", line_of(text, "ratingz"))]
    assert found[0].text == ("The host ratingz defined in the DestinationRule does not match any services "
                             "in the mesh.")
    assert found[0].severity is Severity.WARNING


def test_analysis_gateway_selector_only_when_workloads_are_known() -> None:
    text = SERVICES.rstrip("-\n")
    assert run(text) == []
    assert run(text, gateway_workloads=[gateway_pod(istio="ingressgateway", app="x")]) == []
    found = run(text, gateway_workloads=[gateway_pod(app="reviews")])
    assert brief(found) == [("IST0101", "Gateway/bookinfo-gateway", "spec.selector",
                             line_of(text, "selector: {istio"))]
    assert found[0].text == 'Referenced selector not found: "istio=ingressgateway"'


def test_analysis_gateway_route_to_multi_port_service_needs_a_port() -> None:
    text = SERVICES + """
apiVersion: v1
kind: Service
metadata: {name: multi}
spec:
  selector: {app: multi}
  ports: [{name: http, port: 80}, {name: http-admin, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /a}}]
    route:
    - destination: {host: multi}
  - match: [{uri: {prefix: /b}}]
    route:
    - destination: {host: multi, port: {number: 80}}
    mirror: {host: mirrror}
  - route:
    - destination: {host: multi, port: {number: 8081}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-side}
spec:
  hosts: [multi]
  http:
  - route:
    - destination: {host: multi}
"""
    found = run(text)
    assert brief(found) == [
        ("IST0112", "VirtualService/ingress", "spec.http[0].route[0].destination",
         line_of(text, "destination: {host: multi}")),
        ("IST0101", "VirtualService/ingress", "spec.http[1].mirror.host", line_of(text, "mirrror")),
        ("IST0101", "VirtualService/ingress", "spec.http[2].route[0].destination.port.number",
         line_of(text, "number: 8081")),
    ]
    assert [i.text for i in found[1:]] == ['Referenced mirror host not found: "mirrror"',
                                           'Referenced host:port not found: "multi:8081"']
    assert found[0].text == ('This VirtualService routes to a service "multi" that exposes multiple ports '
                             "[80 8080]. Specifying a port in the destination is required to disambiguate.")
