"""``mizzen proxy-status`` and ``proxy-config`` against a fake of ``/debug/syncz`` and ``/debug/config_dump``.

The config dump is built from real Envoy protobuf messages rendered with ``MessageToDict`` (what the control
plane's API does), so field spelling and shapes are the real ones.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from cli_helpers import FakeApi, run_cli
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import any_pb2, json_format, struct_pb2
from typer.testing import CliRunner

from mizzen.cli.main import app

REVIEWS = "sidecar~127.0.91.5~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
GATEWAY = "router~127.0.91.6~istio-ingressgateway-xyz.istio-system~istio-system.svc.cluster.local"
DR = "/apis/networking.istio.io/v1/namespaces/bookinfo/destination-rule/reviews"
VS = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtual-service/reviews"


def _meta(path: str) -> base_pb2.Metadata:
    md = base_pb2.Metadata()
    s = struct_pb2.Struct()
    s.update({"config": path})
    md.filter_metadata["istio"].CopyFrom(s)
    return md


def _addr(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _any(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _d(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(msg)
    return out


def _dump() -> dict[str, Any]:
    clusters = [
        cluster_pb2.Cluster(name="outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
                            type=cluster_pb2.Cluster.EDS, metadata=_meta(DR)),
        cluster_pb2.Cluster(name="outbound|9080||ratings.bookinfo.svc.cluster.local",
                            type=cluster_pb2.Cluster.EDS),
        cluster_pb2.Cluster(name="inbound|9080||", type=cluster_pb2.Cluster.STATIC),
        cluster_pb2.Cluster(name="BlackHoleCluster", type=cluster_pb2.Cluster.STATIC),
    ]
    vhost = route_components_pb2.VirtualHost(
        name="reviews.bookinfo.svc.cluster.local:9080",
        domains=["reviews.bookinfo.svc.cluster.local", "reviews", "reviews.bookinfo", "reviews:9080"],
        routes=[
            route_components_pb2.Route(match=route_components_pb2.RouteMatch(path="/exact"),
                                       metadata=_meta(VS)),
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/r/.*"))),
            route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"), metadata=_meta(VS)),
        ],
    )
    routes = [route_pb2.RouteConfiguration(name="9080", virtual_hosts=[vhost])]
    http_chain = listener_components_pb2.FilterChain(
        filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="raw_buffer",
                                                                    application_protocols=["http/1.1"]),
        filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager",
            typed_config=_any(hcm.HttpConnectionManager(stat_prefix="x",
                                                        rds=hcm.Rds(route_config_name="9080"))))],
    )
    tcp_chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy",
        typed_config=_any(tcp_proxy_pb2.TcpProxy(stat_prefix="t", cluster="inbound|9080||")))])
    listeners = [
        listener_pb2.Listener(name="127.0.91.5_15080", address=_addr("127.0.91.5", 15080),
                              filter_chains=[http_chain]),
        listener_pb2.Listener(name="127.0.91.5_9080", address=_addr("127.0.91.5", 9080),
                              filter_chains=[tcp_chain]),
    ]

    def lb(ip: str, health: int) -> endpoint_components_pb2.LbEndpoint:
        return endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=_addr(ip, 9080)), health_status=health)

    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name="outbound|9080||ratings.bookinfo.svc.cluster.local",
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            lb("127.0.92.2", health_check_pb2.HEALTHY), lb("127.0.92.1", health_check_pb2.UNKNOWN),
            lb("127.0.92.3", health_check_pb2.UNHEALTHY)])],
    )
    return {"proxy": REVIEWS, "CDS": [_d(c) for c in clusters], "EDS": [_d(cla)],
            "LDS": [_d(lst) for lst in listeners], "RDS": [_d(r) for r in routes]}


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC).isoformat().replace("+00:00", "Z")


def _type(
    status: str, sent: str | None, acked: str | None, nack: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"status": status, "sent": sent, "acked": acked, "nonce": "n1" if sent else None, "nack": nack}


def _setup(api: FakeApi) -> None:
    synced = _type("SYNCED", "a1b2c3d4e5f6", "a1b2c3d4e5f6")
    api.syncz = [
        {"proxy": REVIEWS, "connected_at": _iso(3 * 86400 + 60),
         "types": {"CDS": synced, "EDS": synced, "LDS": synced,
                   "RDS": _type("STALE", "ffff0000aaaa", "1234")}},
        {"proxy": GATEWAY, "connected_at": _iso(30),
         "types": {"CDS": synced, "EDS": synced,
                   "LDS": _type("NACKED", "deadbeef0001", None,
                                {"version": "deadbeef0001", "message": "duplicate listener 0.0.0.0_8080",
                                 "time": _iso(5)}),
                   "RDS": _type("NOT SENT", None, None)}},
    ]
    api.dumps = {REVIEWS: _dump()}


def _cells(lines: list[str]) -> list[list[str]]:
    """Split table lines into cells, checking every cell starts where its column header starts."""
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=   ))\S", lines[0])]
    rows = []
    for line in lines:
        cells = [c for c in re.split(r" {3,}", line.rstrip()) if c]
        offsets = [m.start() for m in re.finditer(r"(?:^|(?<=   ))\S", line)]
        assert offsets == starts[: len(offsets)], (line, offsets, starts)
        rows.append(cells)
    return rows


def _invoke(api: FakeApi, *args: str) -> Any:
    return CliRunner().invoke(app, ["--server", api.url, *args])


def test_proxy_status_table_and_nack_reasons(fake_api: FakeApi) -> None:
    t0 = time.monotonic()
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-status")
    assert res.exit_code == 0, res.output
    # the gateway connected 30 s before _setup; the CLI's clock has moved on by the time it took to answer
    # (more than a second on a loaded machine)
    ages = {f"{30 + s}s" for s in range(int(time.monotonic() - t0) + 1)}
    lines = res.stdout.splitlines()
    cells = _cells(lines[:3])
    assert cells[1][-1] in ages, (cells[1], ages)
    assert cells == [
        ["NAME", "CDS", "LDS", "EDS", "RDS", "MTLS", "CONNECTED"],
        ["istio-ingressgateway-xyz.istio-system", "SYNCED (a1b2c3d4)", "NACKED (deadbeef)",
         "SYNCED (a1b2c3d4)", "NOT SENT", "-", cells[1][-1]],
        ["reviews-v1-abc.bookinfo", "SYNCED (a1b2c3d4)", "SYNCED (a1b2c3d4)", "SYNCED (a1b2c3d4)",
         "STALE (ffff0000)", "-", "3d"],
    ]
    assert lines[3:] == [
        "",
        "NACKs:",
        "  istio-ingressgateway-xyz.istio-system LDS rejected version deadbeef0001: "
        "duplicate listener 0.0.0.0_8080",
    ]


def test_proxy_status_for_one_proxy_by_pod_name_prefix(fake_api: FakeApi) -> None:
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-status", "reviews-v1")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[1].startswith("reviews-v1-abc.bookinfo ") and len(lines) > 3
    assert "istio-ingressgateway" not in res.stdout
    assert f"Proxy ID: {REVIEWS}" in lines
    assert "  RDS: sent=ffff0000aaaa acked=1234 nonce=n1" in lines


def test_ambiguous_and_unknown_proxy_arguments(fake_api: FakeApi) -> None:
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-config", "clusters", "127.0.91")
    assert res.exit_code == 1
    assert res.stderr == ('error: "127.0.91" matches several proxies: '
                          "istio-ingressgateway-xyz.istio-system, reviews-v1-abc.bookinfo "
                          "(use -n NAMESPACE or a longer name)\n")
    res = _invoke(fake_api, "proxy-status", "ratings")
    assert res.exit_code == 1
    assert res.stderr.startswith('error: no proxy matches "ratings" (proxies: istio-ingressgateway')


def test_proxy_config_clusters(fake_api: FakeApi) -> None:
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-config", "clusters", "reviews-v1-abc")
    assert res.exit_code == 0, res.output
    rows = _cells(res.stdout.splitlines())
    assert rows[0] == ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    assert rows[1:] == [
        ["-", "9080", "-", "inbound", "STATIC"],
        ["BlackHoleCluster", "-", "-", "-", "STATIC"],
        ["ratings.bookinfo.svc.cluster.local", "9080", "-", "outbound", "EDS"],
        ["reviews.bookinfo.svc.cluster.local", "9080", "v1", "outbound", "EDS", "reviews.bookinfo"],
    ]
    assert fake_api.requests[-1] == ("GET", "/debug/config_dump", REVIEWS)
    res = _invoke(fake_api, "proxy-config", "clusters", "reviews", "--fqdn", "ratings", "--port", "9080")
    firsts = [line.split()[0] for line in res.stdout.splitlines()]
    assert firsts == ["SERVICE", "ratings.bookinfo.svc.cluster.local"]


def test_proxy_config_routes_listeners_endpoints(fake_api: FakeApi) -> None:
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-config", "routes", "reviews")
    assert res.exit_code == 0, res.output
    rows = _cells(res.stdout.splitlines())
    assert rows[0] == ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    vh = ["9080", "reviews.bookinfo.svc.cluster.local:9080",
          "reviews.bookinfo.svc.cluster.local, reviews + 1 more..."]
    assert rows[1:] == [
        [*vh, "/exact", "reviews.bookinfo"], [*vh, "regex /r/.*"], [*vh, "/*", "reviews.bookinfo"]]
    res = _invoke(fake_api, "proxy-config", "listeners", "reviews")
    rows = _cells(res.stdout.splitlines())
    assert rows == [
        ["ADDRESS", "PORT", "MATCH", "DESTINATION"],
        ["127.0.91.5", "15080", "Trans: raw_buffer; App: http/1.1", "Route: 9080"],
        ["127.0.91.5", "9080", "ALL", "Cluster: inbound|9080||"],
    ]
    res = _invoke(fake_api, "proxy-config", "endpoints", "reviews")
    rows = _cells(res.stdout.splitlines())
    cluster = "outbound|9080||ratings.bookinfo.svc.cluster.local"
    assert rows == [
        ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
        ["127.0.92.1:9080", "HEALTHY", "-", cluster],
        ["127.0.92.2:9080", "HEALTHY", "-", cluster],
        ["127.0.92.3:9080", "UNHEALTHY", "-", cluster],
    ]


def test_proxy_config_json_is_the_dumped_resources(fake_api: FakeApi) -> None:
    _setup(fake_api)
    for sub, key in (("clusters", "CDS"), ("routes", "RDS"), ("listeners", "LDS"), ("endpoints", "EDS")):
        res = _invoke(fake_api, "proxy-config", sub, "reviews", "-o", "json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout) == fake_api.dumps[REVIEWS][key]


def test_proxy_status_as_a_real_subprocess(fake_api: FakeApi) -> None:
    _setup(fake_api)
    proc = run_cli("proxy-status", server=fake_api.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["NAME", "CDS", "LDS", "EDS", "RDS", "MTLS", "CONNECTED"]
    assert "NACKED (deadbeef)" in proc.stdout and "duplicate listener 0.0.0.0_8080" in proc.stdout


def _without_ages(text: str) -> str:
    """Ages (``31s``, ``2m``) are computed from the clock at each call: two calls may straddle a second."""
    return re.sub(r"\b\d+[smhd]\b", "<age>", text)


def test_pc_and_ps_are_aliases(fake_api: FakeApi) -> None:
    _setup(fake_api)
    ps, status = _invoke(fake_api, "ps").stdout, _invoke(fake_api, "proxy-status").stdout
    assert _without_ages(ps) == _without_ages(status)
    assert _invoke(fake_api, "pc", "routes", "reviews").stdout == \
        _invoke(fake_api, "proxy-config", "routes", "reviews").stdout
    proc = run_cli("pc", "clusters", "reviews", "-o", "json", server=fake_api.url)
    assert proc.returncode == 0 and json.loads(proc.stdout) == fake_api.dumps[REVIEWS]["CDS"]


def test_routes_name_shows_that_route_config_or_lists_the_valid_names(fake_api: FakeApi) -> None:
    _setup(fake_api)
    res = _invoke(fake_api, "proxy-config", "routes", "reviews", "--name", "9080")
    assert res.exit_code == 0, res.output
    assert [row[0] for row in _cells(res.stdout.splitlines())] == ["NAME", "9080", "9080", "9080"]
    res = _invoke(fake_api, "proxy-config", "routes", "reviews", "--name", "9090", "-o", "json")
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ('error: no route configuration named "9090" in this proxy; its route '
                          "configurations: 9080\n")


def test_proxy_namespace_restricts_and_the_context_namespace_breaks_ties(
        fake_api: FakeApi, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("MIZZEN_CONFIG", str(tmp_path / "cli-config.yaml"))
    _setup(fake_api)
    other = REVIEWS.replace(".bookinfo~bookinfo.", ".staging~staging.")
    fake_api.syncz.append({**fake_api.syncz[0], "proxy": other})
    fake_api.dumps[other] = _dump()
    res = _invoke(fake_api, "proxy-config", "routes", "reviews-v1")
    assert res.exit_code == 1
    assert res.stderr == ('error: "reviews-v1" matches several proxies: reviews-v1-abc.bookinfo, '
                          "reviews-v1-abc.staging (use -n NAMESPACE or a longer name)\n")
    res = _invoke(fake_api, "proxy-config", "routes", "reviews-v1", "-n", "staging")
    assert res.exit_code == 0 and fake_api.requests[-1] == ("GET", "/debug/config_dump", other)
    res = _invoke(fake_api, "proxy-config", "routes", "reviews-v1", "-n", "prod")
    assert res.exit_code == 1
    assert res.stderr == 'error: no proxy matches "reviews-v1" in namespace prod (proxies: none connected)\n'
    res = _invoke(fake_api, "proxy-status", "-n", "staging")
    assert [line.split()[0] for line in res.stdout.splitlines()] == ["NAME", "reviews-v1-abc.staging"]
    assert _invoke(fake_api, "config", "set-context", "--current", "--namespace", "bookinfo").exit_code == 0
    res = _invoke(fake_api, "proxy-config", "routes", "reviews-v1")
    assert res.exit_code == 0 and fake_api.requests[-1] == ("GET", "/debug/config_dump", REVIEWS)
