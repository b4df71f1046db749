"""IST0109 (mesh VirtualServices sharing a host), IST0110/IST0111 (Sidecars), IST0132 (VirtualService host not
in its Gateway), IST0145 (conflicting Gateways) and MZ0001 (subset with no endpoints)."""

from __future__ import annotations

from analysis_helpers import SERVICES, brief, line_of, run

from mizzen.config.errors import Severity
from mizzen.registry.model import Workload

TWO_MESH_VS = SERVICES + """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-b}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-a}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-at-gateway}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: consumer-side, namespace: frontend}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]}]
"""


def test_analysis_mesh_virtual_services_for_one_host_name_the_oldest() -> None:
    found = run(TWO_MESH_VS)
    assert brief(found) == [
        ("IST0109", "VirtualService/reviews-b", "spec.hosts[0]", line_of(TWO_MESH_VS, "hosts: [reviews]")),
        ("IST0109", "VirtualService/reviews-a", "spec.hosts[0]",
         line_of(TWO_MESH_VS, "hosts: [reviews.bookinfo.svc.cluster.local]")),
    ]
    assert found[0].text == (
        "The VirtualServices bookinfo/reviews-b,bookinfo/reviews-a associated with mesh gateway define the "
        "same host reviews.bookinfo.svc.cluster.local which can lead to undefined behavior. This can be "
        "fixed by merging the conflicting VirtualServices into a single resource. (Mizzen's sidecars use "
        "only the oldest, bookinfo/reviews-b.)")
    assert {i.severity for i in found} == {Severity.ERROR}


def test_analysis_one_mesh_virtual_service_per_host_is_quiet() -> None:
    text = TWO_MESH_VS.replace("hosts: [reviews.bookinfo.svc.cluster.local]\n  http",
                               "hosts: [ratings]\n  http")
    assert run(text) == []


SIDECARS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default-a}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default-b}
spec:
  egress: [{hosts: ["istio-system/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-app}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-version}
spec:
  workloadSelector: {labels: {version: v2}}
  egress: [{hosts: ["./*"]}]
"""


def _pod(name: str, **labels: str) -> Workload:
    return Workload(name=name, namespace="bookinfo", address="127.0.0.9", labels=labels)


def test_analysis_sidecars_without_selector_and_overlapping_selectors() -> None:
    found = run(SIDECARS, workloads=[_pod("reviews-v1-abc", app="reviews", version="v1"),
                                     _pod("reviews-v2-abc", app="reviews", version="v2"),
                                     _pod("reviews-v2-def", app="reviews", version="v2")])
    assert brief(found) == [
        ("IST0111", "Sidecar/default-a", "spec", line_of(SIDECARS, "name: default-a") + 1),
        ("IST0111", "Sidecar/default-b", "spec", line_of(SIDECARS, "name: default-b") + 1),
        ("IST0110", "Sidecar/by-app", "spec.workloadSelector", line_of(SIDECARS, "{app: reviews}")),
        ("IST0110", "Sidecar/by-version", "spec.workloadSelector", line_of(SIDECARS, "{version: v2}")),
    ]
    assert found[0].text == ('The Sidecars [default-a default-b] in namespace "bookinfo" have no workload '
                             "selector, which can lead to undefined behavior.")
    assert found[2].text == ('The Sidecars [by-app by-version] in namespace "bookinfo" select the same '
                             'workload pod "reviews-v2-abc", which can lead to undefined behavior.')
    # no pod carries both labels: the selectors do not conflict
    assert [i.code for i in run(SIDECARS, workloads=[_pod("r1", app="reviews", version="v1")])] == [
        "IST0111", "IST0111"]


GATEWAYS = SERVICES + """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: second}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bookinfo.example.com"]
    tls: {mode: SIMPLE, credentialName: cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-port}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com", "bookinfo/shop.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress}
spec:
  hosts: [bookinfo.example.com, typo.example.org]
  gateways: [bookinfo-gateway, other-port]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [bookinfo/other-port]
  http: [{route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]}]
"""


def test_analysis_virtual_service_host_not_in_gateway_and_conflicting_gateways() -> None:
    found = run(GATEWAYS)
    assert brief(found) == [
        ("IST0145", "Gateway/bookinfo-gateway", "spec.servers", line_of(GATEWAYS, "servers:")),
        ("IST0145", "Gateway/second", "spec.servers", line_of(GATEWAYS, "servers:", 2)),
        ("IST0132", "VirtualService/ingress", "spec.hosts", line_of(GATEWAYS, "typo.example.org")),
        ("IST0132", "VirtualService/ingress", "spec.hosts", line_of(GATEWAYS, "typo.example.org")),
        ("IST0132", "VirtualService/shop", "spec.hosts", line_of(GATEWAYS, "hosts: [shop.example.com]")),
    ]
    texts = [i.text for i in found]
    assert texts[0] == ("Conflict with gateways bookinfo/second (workload selector istio=ingressgateway, "
                        "port 80, hosts [bookinfo.example.com]).")
    assert texts[2:] == [
        "one or more host [typo.example.org] defined in VirtualService bookinfo/ingress not found in Gateway "
        "bookinfo/bookinfo-gateway.",
        "one or more host [typo.example.org] defined in VirtualService bookinfo/ingress not found in Gateway "
        "bookinfo/other-port.",
        # "bookinfo/shop.example.com" is for VirtualServices in namespace bookinfo only
        "one or more host [shop.example.com] defined in VirtualService shop/shop not found in Gateway "
        "bookinfo/other-port."]
    assert [i.severity for i in found] == [Severity.ERROR] * 2 + [Severity.WARNING] * 3


def test_analysis_subset_without_endpoints_only_when_the_host_has_some() -> None:
    text = SERVICES + """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
"""
    pods = [Workload(name="reviews-v1", namespace="bookinfo", address="127.0.0.9",
                     labels={"app": "reviews", "version": "v1"})]
    found = run(text, workloads=pods)
    assert brief(found) == [("MZ0001", "DestinationRule/reviews", "spec.subsets[1]",
                             line_of(text, "name: v9"))]
    assert found[0].severity is Severity.WARNING
    assert found[0].text.startswith('Subset "v9" of host "reviews" selects no endpoints')
    assert run(text) == []   # no endpoints known for any host: nothing to say
