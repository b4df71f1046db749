"""IST0109 (mesh VirtualServices sharing a host), IST0110/IST0111 (Sidecars), IST0132 (VirtualService host not
in its Gateway), IST0145 (conflicting Gateways) and IST0173 (subset selecting no pods)."""

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


def test_analysis_mesh_virtual_services_for_one_host_as_istio_decides() -> None:
    """Istio's ConflictingMeshGatewayHostsAnalyzer: the two public VirtualServices for reviews conflict, and
    so does the one frontend keeps to itself (exportTo ".") with them; the gateway-bound one does not. One
    message per VirtualService, at metadata.name."""
    found = run(TWO_MESH_VS)
    assert brief(found) == [
        ("IST0109", "VirtualService/reviews-b", "metadata.name", line_of(TWO_MESH_VS, "name: reviews-b")),
        ("IST0109", "VirtualService/reviews-a", "metadata.name", line_of(TWO_MESH_VS, "name: reviews-a}")),
        ("IST0109", "VirtualService/consumer-side", "metadata.name",
         line_of(TWO_MESH_VS, "name: consumer-side")),
    ]
    assert found[0].text == (
        "The VirtualServices bookinfo/reviews-a,bookinfo/reviews-b associated with mesh gateway define the "
        "same host */reviews.bookinfo.svc.cluster.local which can lead to undefined behavior. This can be "
        "fixed by merging the conflicting VirtualServices into a single resource.")
    assert found[2].text.startswith(
        "The VirtualServices bookinfo/reviews-a,bookinfo/reviews-b,frontend/consumer-side associated with "
        "mesh gateway define the same host frontend/reviews.bookinfo.svc.cluster.local ")
    assert {i.severity for i in found} == {Severity.ERROR}


def test_analysis_one_mesh_virtual_service_per_host_is_quiet() -> None:
    text = TWO_MESH_VS.replace("hosts: [reviews.bookinfo.svc.cluster.local]\n  http",
                               "hosts: [ratings]\n  http")
    text = text[:text.index("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                            "metadata: {name: consumer-side")]
    assert run(text) == []


WILDCARDS = SERVICES + """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all-example}
spec:
  hosts: ["*.example.com"]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-public}
spec:
  hosts: [api.example.com]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-private, namespace: shop}
spec:
  hosts: [api.example.com]
  exportTo: [".", bookinfo]
  http: [{route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other-private, namespace: shop}
spec:
  hosts: [other.example.org]
  exportTo: ["."]
  http: [{route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]}]
"""


def test_analysis_wildcard_overlaps_count_only_against_public_virtual_services() -> None:
    """Two public VirtualServices conflict only on the same host (a wildcard and a name it covers do not);
    one exported to named namespaces conflicts with every public one whose host matches or covers its."""
    found = run(WILDCARDS)
    assert [(i.name, i.text.split(" associated")[0]) for i in found] == [
        ("all-example", "The VirtualServices bookinfo/all-example,bookinfo/api-public,shop/api-private"),
        ("api-public", "The VirtualServices bookinfo/all-example,bookinfo/api-public,shop/api-private"),
        ("api-private", "The VirtualServices bookinfo/all-example,bookinfo/api-public,shop/api-private"),
    ]
    assert all("define the same host bookinfo/api.example.com " in i.text for i in found)
    public_only = WILDCARDS[:WILDCARDS.index("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                             "metadata: {name: api-private")]
    assert run(public_only) == []


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


def test_analysis_virtual_service_host_not_in_gateway() -> None:
    found = run(GATEWAYS)
    assert brief(found) == [
        ("IST0132", "VirtualService/ingress", "spec.hosts", line_of(GATEWAYS, "typo.example.org")),
        ("IST0132", "VirtualService/ingress", "spec.hosts", line_of(GATEWAYS, "typo.example.org")),
        ("IST0132", "VirtualService/shop", "spec.hosts", line_of(GATEWAYS, "hosts: [shop.example.com]")),
    ]
    assert [i.text for i in found] == [
        "one or more host [typo.example.org] defined in VirtualService bookinfo/ingress not found in Gateway "
        "bookinfo/bookinfo-gateway.",
        "one or more host [typo.example.org] defined in VirtualService bookinfo/ingress not found in Gateway "
        "bookinfo/other-port.",
        # "bookinfo/shop.example.com" is for VirtualServices in namespace bookinfo only
        "one or more host [shop.example.com] defined in VirtualService shop/shop not found in Gateway "
        "bookinfo/other-port."]
    assert [i.severity for i in found] == [Severity.WARNING] * 3


CONFLICTING_GATEWAYS = SERVICES + """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: second}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: third}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com", "other.example.com"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: wildcard}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-bind}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    bind: 127.0.0.2
    hosts: ["bookinfo.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-selector}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com"]
"""


def test_analysis_conflicting_gateways_once_per_gateway() -> None:
    """Istio's ConflictingGatewayAnalyzer: the same host string with the same bind on the same port, for the
    same selector. A wildcard that covers the host, another bind, or another selector is no conflict. One
    message per Gateway, naming every Gateway it conflicts with and every port where it does."""
    found = run(CONFLICTING_GATEWAYS)
    # second and third also serve the same credential (IST0138, as istioctl says too)
    assert sorted(i.name for i in found if i.code == "IST0138") == ["second", "third"]
    found = [i for i in found if i.code != "IST0138"]
    assert brief(found) == [
        ("IST0145", "Gateway/bookinfo-gateway", "spec.servers", line_of(CONFLICTING_GATEWAYS, "servers:")),
        ("IST0145", "Gateway/second", "spec.servers", line_of(CONFLICTING_GATEWAYS, "servers:", 2)),
        ("IST0145", "Gateway/third", "spec.servers", line_of(CONFLICTING_GATEWAYS, "servers:", 3)),
    ]
    assert [i.text for i in found] == [
        "Conflict with gateways bookinfo/second,bookinfo/third (workload selector istio=ingressgateway, port "
        "80, hosts bookinfo.example.com).",
        "Conflict with gateways bookinfo/bookinfo-gateway,bookinfo/third (workload selector "
        "istio=ingressgateway, port 80,8443, hosts bookinfo.example.com,*.example.com).",
        "Conflict with gateways bookinfo/bookinfo-gateway,bookinfo/second (workload selector "
        "istio=ingressgateway, port 80,8443, hosts bookinfo.example.com,other.example.com,*.example.com).",
    ]
    assert {i.severity for i in found} == {Severity.ERROR}


def test_analysis_subset_that_selects_no_pods() -> None:
    """Istio's PodNotSelectedAnalyzer (IST0173, an error): the subset's labels with the host's selector must
    pick some workload; with no workload at all every subset is reported."""
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
                     labels={"app": "reviews", "version": "v1"}),
            # a v1 pod that is not a ratings pod does not back ratings' v1
            Workload(name="other-v1", namespace="bookinfo", address="127.0.0.10",
                     labels={"app": "other", "version": "v1"})]
    found = run(text, workloads=pods, ignore=())
    assert brief(found) == [
        ("IST0173", "DestinationRule/reviews", "spec.subsets[1]", line_of(text, "name: v9")),
        ("IST0173", "DestinationRule/ratings", "spec.subsets[0]", line_of(text, "name: v1", 2)),
    ]
    assert found[0].severity is Severity.ERROR
    assert found[0].text == ("The Subset v9 defined in the DestinationRule does not select any pods. Which "
                             "may lead to 503 UH (NoHealthyUpstream).")
    assert [i.name for i in run(text, ignore=())] == ["reviews", "reviews", "ratings"]
    assert run(text, registry=False, ignore=()) == []     # workloads unknown: nothing to say
