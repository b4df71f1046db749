"""RDS for gateways: the seed's bookinfo gateway (redirect /yunwei, rewrite / -> /productpage), section 5's
three VirtualServices merged on one host, server host/namespace binding, httpsRedirect, HTTPS route names and
the 404 behaviour for unknown hosts."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from routes_testkit import (
    NS,
    SEED,
    bookinfo_registry,
    configs_from_file,
    configs_from_yaml,
    fqdn,
    gateway_proxy,
    http_service,
    push_of,
    route_config,
    vhost,
)

from mizzen.core.push_context import PushContext
from mizzen.core.routes import build_routes

PRODUCTPAGE = fqdn("productpage")


def test_seed_bookinfo_gateway_redirect_and_rewrite() -> None:
    configs = configs_from_file(SEED / "bookinfo-gateway.yaml") + \
        [c for c in configs_from_file(SEED / "bookinfo-vs-redirect-rewrite.yaml", created=10)]
    # the redirect/rewrite file is an edit of the same VS: keep only the edited one
    configs = [c for c in configs if not (c.kind == "VirtualService" and c.created < 10)]
    cfg = route_config(gateway_proxy(), push_of(configs), "http.8080")
    assert cfg.ignore_port_in_host_matching
    [vh] = cfg.virtual_hosts
    assert vh.name == "bookinfo.kubeasy.com:80"
    assert list(vh.domains) == ["bookinfo.kubeasy.com", "bookinfo.kubeasy.com:*"]
    yunwei, root, *pages = vh.routes
    assert yunwei.match.prefix == "/yunwei"
    assert yunwei.redirect.host_redirect == "blog.csdn.net"
    assert yunwei.redirect.path_redirect == "/weixin_43279138?type=blog"
    assert yunwei.redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    assert root.match.path == "/" and root.route.prefix_rewrite == "/productpage"
    assert root.route.cluster == f"outbound|9080||{PRODUCTPAGE}"
    assert [(p.match.path or p.match.prefix) for p in pages] == \
        ["/productpage", "/static", "/login", "/logout", "/api/v1/products"]
    assert all(p.route.cluster == f"outbound|9080||{PRODUCTPAGE}" for p in pages)
    assert root.metadata.filter_metadata["istio"]["config"] == \
        f"/apis/networking.istio.io/v1/namespaces/{NS}/virtual-service/bookinfo"


def _demo_push() -> PushContext:
    reg = bookinfo_registry(http_service("order", ports=(80,)), http_service("demo-receive", ports=(8080,)),
                            http_service("demo-ui", ports=(80,)))
    # demo-ui (the catch-all) is the oldest, yet its route must come last
    configs = configs_from_file(SEED / "demo-gateway.yaml")
    configs += configs_from_file(SEED / "demo-ui-vs.yaml", created=1)
    configs += configs_from_file(SEED / "demo-order-vs.yaml", created=2)
    configs += configs_from_file(SEED / "demo-receive-vs.yaml", created=3)
    return push_of(configs, reg)


def test_seed_section5_virtual_services_merge_on_one_host() -> None:
    cfg = route_config(gateway_proxy(), _demo_push(), "http.8080")
    [vh] = cfg.virtual_hosts
    assert vh.name == "demo.test.com:80"
    orders, receive, ui = vh.routes
    assert orders.match.prefix == "/orders" and orders.route.cluster == f"outbound|80||{fqdn('order')}"
    assert receive.match.prefix == "/receiveapi/" and receive.route.prefix_rewrite == "/"
    assert receive.route.cluster == f"outbound|8080||{fqdn('demo-receive')}"
    assert ui.match.prefix == "/" and ui.route.cluster == f"outbound|80||{fqdn('demo-ui')}"


def test_gateway_without_matching_virtual_service_has_404_vhost_only() -> None:
    push = push_of(configs_from_file(SEED / "demo-gateway.yaml"))
    [vh] = route_config(gateway_proxy(), push, "http.8080").virtual_hosts
    assert vh.name == "blackhole:80" and list(vh.domains) == ["*"] and not vh.routes
    # a gateway that does not select this proxy contributes nothing
    other = route_config(gateway_proxy(labels={"istio": "egressgateway"}), push, "http.8080")
    assert not other.virtual_hosts


GW_MULTI = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo/a.example.com", "other/b.example.com", "*/*.wild.org"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: bookinfo}
spec:
  hosts: ["a.example.com", "b.example.com", "c.other.org"]
  gateways: ["istio-system/gw"]
  http:
  - match:
    - uri: {prefix: /x}
      gateways: ["istio-system/gw"]
    - uri: {prefix: /mesh-only}
      gateways: ["mesh"]
    route:
    - destination: {host: productpage, port: {number: 9080}}
"""


def test_server_host_namespaces_https_redirect_and_https_route_names() -> None:
    push = push_of(configs_from_yaml(GW_MULTI))
    http = route_config(gateway_proxy(), push, "http.8080")
    names = [v.name for v in http.virtual_hosts]
    # b.example.com is bound only for VSs in namespace "other": httpsRedirect still gives it a TLS-only vhost
    assert names == ["*.wild.org:80", "a.example.com:80", "b.example.com:80"]
    a = vhost(http, "a.example.com:80")
    assert a.require_tls == rc.VirtualHost.ALL
    assert [r.match.prefix for r in a.routes] == ["/x"]
    assert list(a.domains) == ["a.example.com", "a.example.com:*"]
    for name in ("b.example.com:80", "*.wild.org:80"):
        assert vhost(http, name).require_tls == rc.VirtualHost.ALL and not vhost(http, name).routes
    assert list(vhost(http, "*.wild.org:80").domains) == ["*.wild.org"]

    https_name = "https.443.https.istio-system/gw"
    [https] = build_routes(gateway_proxy(), push, [https_name])
    assert [v.name for v in https.virtual_hosts] == \
        ["a.example.com:443", "b.example.com:443", "c.other.org:443"]
    assert all(v.require_tls == rc.VirtualHost.NONE for v in https.virtual_hosts)
    # Istio's own naming (gw name then namespace) selects the same server
    [istio_named] = build_routes(gateway_proxy(), push, ["https.443.https.gw.istio-system"])
    assert [v.name for v in istio_named.virtual_hosts] == [v.name for v in https.virtual_hosts]


def test_gateway_merges_rules_of_several_virtual_services_in_order() -> None:
    text = GW_MULTI.split("---")[0] + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first, namespace: bookinfo}
spec:
  hosts: ["a.example.com"]
  gateways: ["istio-system/gw"]
  http:
  - match: [{uri: {prefix: /one}}]
    route: [{destination: {host: productpage}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second, namespace: bookinfo}
spec:
  hosts: ["a.example.com"]
  gateways: ["istio-system/gw"]
  http:
  - match: [{uri: {prefix: /two}}]
    route: [{destination: {host: details}}]
"""
    cfg = route_config(gateway_proxy(), push_of(configs_from_yaml(text)), "https.443.https.istio-system/gw")
    routes = vhost(cfg, "a.example.com:443").routes
    assert [r.match.prefix for r in routes] == ["/one", "/two", "/"]
    assert routes[2].route.cluster == f"outbound|9080||{fqdn('reviews')}"
