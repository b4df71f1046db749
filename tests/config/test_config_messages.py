"""Hand-written invalid inputs and the exact message each one renders: file:line: Kind/name: path: reason."""

from __future__ import annotations

import pytest

from mizzen.config.loader import load_text

SUPPORTED = ("Gateway (networking.istio.io/v1), VirtualService (networking.istio.io/v1), DestinationRule "
             "(networking.istio.io/v1), ServiceEntry (networking.istio.io/v1), WorkloadEntry "
             "(networking.istio.io/v1), Sidecar (networking.istio.io/v1), Service (v1), Deployment "
             "(apps/v1), "
             "Namespace (v1), AuthorizationPolicy (security.istio.io/v1), RequestAuthentication "
             "(security.istio.io/v1), PeerAuthentication (security.istio.io/v1), Secret (v1), Telemetry "
             "(telemetry.istio.io/v1)")

REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - uri:
        prefix: /api
    route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v2
      weight: 50
"""


def vs(old: str, new: str) -> str:
    assert old in REVIEWS
    return REVIEWS.replace(old, new, 1)


CASES: list[tuple[str, str, str]] = [
    ("weight out of range",
     vs("      weight: 50\n    - destination", "      weight: 50\n    - destination").replace(
         "subset: v2\n      weight: 50", "subset: v2\n      weight: 150"),
     "reviews.yaml:20: VirtualService/reviews: spec.http[0].route[1].weight: must be 0..100"),
    ("all weights zero",
     REVIEWS.replace("weight: 50", "weight: 0"),
     "reviews.yaml:12: VirtualService/reviews: spec.http[0].route: total destination weight = 0"),
    ("bad duration",
     vs("    route:\n", "    timeout: 10 seconds\n    route:\n"),
     'reviews.yaml:12: VirtualService/reviews: spec.http[0].timeout: Invalid value: "10 seconds": must be a '
     "valid duration greater than 1ms"),
    ("duration below Istio's 1ms minimum",
     vs("    route:\n", "    retries:\n      attempts: 3\n      perTryTimeout: 500us\n    route:\n"),
     'reviews.yaml:14: VirtualService/reviews: spec.http[0].retries.perTryTimeout: Invalid value: "500us": '
     "must be a valid duration greater than 1ms"),
    ("bad regex (RE2 rejects lookbehind)",
     vs("prefix: /api", "regex: '(?<=a)b'"),
     "reviews.yaml:11: VirtualService/reviews: spec.http[0].match[0].uri.regex: invalid RE2 regex: invalid "
     "perl operator: (?<=; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"),
    ("bad port",
     vs("        subset: v1\n", "        subset: v1\n        port:\n          number: 70000\n"),
     "reviews.yaml:17: VirtualService/reviews: spec.http[0].route[0].destination.port.number: port number "
     "70000 must be in the range 1..65535"),
    ("unknown field",
     vs("    route:\n", "    rout:\n    - destination: {host: x}\n    route:\n"),
     'reviews.yaml:12: VirtualService/reviews: spec.http[0].rout: unknown field "rout"'),
    ("bad host",
     vs("  hosts:\n  - reviews\n", "  hosts:\n  - reviews_v1.default\n"),
     'reviews.yaml:7: VirtualService/reviews: spec.hosts[0]: domain name "reviews_v1.default" invalid (label '
     '"reviews_v1" invalid)'),
    ("mesh-bound wildcard host",
     vs("  hosts:\n  - reviews\n", '  hosts:\n  - "*"\n'),
     "reviews.yaml:7: VirtualService/reviews: spec.hosts[0]: wildcard host * is not allowed for virtual "
     "services bound to the mesh gateway"),
    ("conflicting match fields",
     vs("        prefix: /api\n", "        prefix: /api\n        exact: /api/v1\n"),
     "reviews.yaml:10: VirtualService/reviews: spec.http[0].match[0].uri: only one of exact, prefix, regex "
     "may "
     "be set (got exact, prefix)"),
    ("route and redirect",
     vs("    route:\n", "    redirect:\n      uri: /v2\n    route:\n"),
     "reviews.yaml:12: VirtualService/reviews: spec.http[0].redirect: HTTP route cannot contain both route "
     "and "
     "redirect"),
    ("unknown enum value",
     """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: FASTEST
""",
     'reviews.yaml:9: DestinationRule/reviews: spec.trafficPolicy.loadBalancer.simple: Unsupported value: '
     '"FASTEST": supported values: "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", '
     '"LEAST_REQUEST"'),
    ("duplicate subset name",
     """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v1
    labels:
      version: v2
""",
     "reviews.yaml:11: DestinationRule/reviews: spec.subsets[1].name: duplicate subset names: v1"),
    ("Gateway SIMPLE TLS without certificates",
     """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bookinfo.example.com"]
    tls:
      mode: SIMPLE
      privateKey: /etc/key.pem
""",
     "reviews.yaml:11: Gateway/gw: spec.servers[0].tls: SIMPLE TLS requires a server certificate "
     "(serverCertificate + privateKey, or credentialName)"),
    ("Sidecar egress host without namespace",
     """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts:
    - "istio-system/*"
    - reviews.default.svc.cluster.local
""",
     'reviews.yaml:9: Sidecar/default: spec.egress[0].hosts[1]: host must be of form namespace/dnsName (got '
     '"reviews.default.svc.cluster.local"; e.g. "./*", "istio-system/*")'),
    ("Service port names required when several",
     """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector:
    app: reviews
  ports:
  - port: 9080
    name: http
  - port: 9090
""",
     "reviews.yaml:11: Service/reviews: spec.ports[1].name: Required value (port names are required when a "
     "Service has several ports)"),
    ("Deployment selector does not match template",
     """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
spec:
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v2}
    spec:
      containers:
      - name: reviews
        image: reviews:1
""",
     "reviews.yaml:10: Deployment/reviews-v1: spec.template.metadata.labels: Invalid value: "
     "{'app': 'reviews', "
     "'version': 'v2'}: `selector` does not match template `labels` ({'app': 'reviews', 'version': 'v1'})"),
    ("YAML syntax error",
     "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels: {a: b\nspec: {}\n",
     "reviews.yaml:6: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping at "
     "line 5)"),
    ("unknown kind",
     "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata:\n  name: x\nspec: {}\n",
     f'reviews.yaml:2: VirtualServce/x: unknown kind "VirtualServce" (apiVersion "networking.istio.io/v1"); '
     f'did you mean "VirtualService"? supported kinds: {SUPPORTED}'),
    ("kind not supported yet",
     "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata:\n  name: deny\nspec: {}\n",
     "reviews.yaml:2: EnvoyFilter/deny: kind EnvoyFilter (networking.istio.io) is not "
     "supported "
     f"yet; supported kinds: {SUPPORTED}"),
    ("apiVersion not served",
     "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: x\nspec: {}\n",
     'reviews.yaml:1: VirtualService/x: apiVersion "networking.istio.io/v2" is not supported for '
     "kind VirtualService; use one of: networking.istio.io/v1, networking.istio.io/v1beta1, "
     "networking.istio.io/v1alpha3"),
    ("namespace mismatch",
     "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: prod\n"
     "spec:\n  ports:\n  - port: 80\n",
     'reviews.yaml:5: Service/x: metadata.namespace: the namespace from the provided object "prod" does not '
     "match the namespace \"default\". You must pass '--namespace=prod' to perform this operation."),
    ("bad object name",
     "apiVersion: v1\nkind: Service\nmetadata:\n  name: Reviews_V1\nspec:\n  ports:\n  - port: 80\n",
     'reviews.yaml:4: Service/Reviews_V1: metadata.name: Invalid value: "Reviews_V1": a lowercase RFC 1123 '
     "subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end "
     "with an "
     "alphanumeric character"),
    ("label value not a string",
     "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels:\n    version: 1\nspec:\n  ports:\n"
     "  - port: 80\n",
     'reviews.yaml:6: Service/x: metadata.labels.version: value must be a string (quote it: "1")'),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in CASES], ids=[c for c, _, _ in CASES])
def test_config_invalid_input_renders_exact_message(text: str, expected: str) -> None:
    result = load_text(text, "reviews.yaml", namespace="default")
    assert not result.ok
    assert not result.configs
    assert [str(e) for e in result.errors] == [expected]


def test_config_valid_reviews_baseline_has_no_issues() -> None:
    result = load_text(REVIEWS, "reviews.yaml", namespace="default")
    assert result.ok and not result.warnings
    assert result.configs[0].namespace == "default"
