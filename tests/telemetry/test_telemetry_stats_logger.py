"""Pins the behaviour of Envoy's ``envoy.access_loggers.stats`` (work in progress upstream) that Istio's
metrics here rely on, with the loggers :mod:`mizzen.telemetry.metrics` builds, on a static real Envoy:

- names render as ``envoy_<stat_prefix>_<name>`` in Prometheus text (hence the agent's renaming);
- constant tag values are allowed; a command operator with no value gives an empty tag value;
- tags from dynamic metadata (header_to_metadata: one compact header kept as a string, ``unknown`` when
  absent, empty when malformed) and cluster metadata, all in one packed tag per HTTP stat that the agent's
  expansion (``istio_names``) turns into Istio's labels; RESPONSE_FLAGS ``-`` when none;
- a header filter with ``treat_missing_header_as_empty`` selects gRPC vs the rest (no content-type too);
- counters add 1 per request; histograms get one sample per request, zero durations included; sizes are
  the downstream wire bytes, headers and body (as Istio's stats filter records them);
- TCP: opened counts on ``TcpUpstreamConnected`` (``flush_access_log_on_connected``), closed and bytes at
  the end; a file access log next to them still writes one line per connection.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format
from telemetry_kit import parse, series, total

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "core"))
from listeners_testkit import free_port, loopback, running_envoy, static_cluster

from mizzen.core.filters import pack
from mizzen.core.workload_labels import peer_labels
from mizzen.telemetry import exchange
from mizzen.telemetry.access_log import at_tcp_end_only, file_access_log
from mizzen.telemetry.metrics import Reporter, ServiceLabels, http_loggers, tcp_loggers, with_stats_scope
from mizzen.telemetry.prometheus import istio_names

ME = peer_labels("reviews-v1-7f9c4d8b6c-x2x4z", "bookinfo", {"app": "reviews", "version": "v1"})


def _bootstrap(ip: str, http_port: int, tcp_port: int, admin: int, echo_port: int,
               tcp_log: Path) -> dict[str, Any]:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="t", codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    hcm.http_filters.append(exchange.receive_filter())
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(
        __import__("envoy.extensions.filters.http.router.v3.router_pb2", fromlist=["Router"]).Router())
    vh = hcm.route_config.virtual_hosts.add(name="a", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.direct_response.status = 200
    r.direct_response.body.inline_string = "hello"
    hcm.access_log.extend(http_loggers(Reporter.DESTINATION, ME, ServiceLabels("r.ns.svc", "r", "ns")))
    lis = listener_pb2.Listener(name="http")
    lis.address.socket_address.address, lis.address.socket_address.port_value = ip, http_port
    lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager",
                                        typed_config=pack(hcm))
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix="tcp", cluster="echo",
                                access_log=[*tcp_loggers(Reporter.SOURCE, ME),
                                            at_tcp_end_only(file_access_log(str(tcp_log)))])
    tp.access_log_options.flush_access_log_on_connected = True
    tl = listener_pb2.Listener(name="tcp")
    tl.address.socket_address.address, tl.address.socket_address.port_value = ip, tcp_port
    tl.filter_chains.add().filters.add(name="envoy.filters.network.tcp_proxy", typed_config=pack(tp))
    bs = bootstrap_pb2.Bootstrap()
    bs.admin.address.socket_address.address, bs.admin.address.socket_address.port_value = ip, admin
    bs.static_resources.listeners.extend([lis, tl])
    echo = static_cluster("echo", ip, echo_port)
    echo.metadata.filter_metadata["mizzen.peer"].update({"service": "echo.ns.svc", "service_name": "echo",
                                                         "service_namespace": "ns"})
    bs.static_resources.clusters.append(echo)
    bs.stats_flush_interval.FromMilliseconds(200)
    return dict(with_stats_scope(json.loads(json_format.MessageToJson(bs))))


async def _sized_request(ip: str, port: int) -> tuple[int, int]:
    """One HTTP/1.1 request over a raw socket: the bytes sent and the bytes of the response received."""
    request = (f"GET /sized HTTP/1.1\r\nhost: {ip}\r\n"
               + "".join(f"x-h{i:02}: v\r\n" for i in range(40)) + "connection: close\r\n\r\n").encode()
    r, w = await asyncio.open_connection(ip, port)
    try:
        w.write(request)
        await w.drain()
        response = await asyncio.wait_for(r.read(), 10)     # to the close
    finally:
        w.close()
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello"), response
    return len(request), len(response)


async def test_stats_logger_behaviour(tmp_path: Path) -> None:
    ip = loopback()
    http_port, tcp_port, admin, echo_port = (free_port(ip) for _ in range(4))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, ip, echo_port)
    try:
        cfg = _bootstrap(ip, http_port, tcp_port, admin, echo_port, tmp_path / "tcp-access.log")
        async with running_envoy(cfg, tmp_path, (ip, http_port)), \
                httpx.AsyncClient(trust_env=False, timeout=5) as c:
            for headers in ({}, {exchange.HEADER: exchange.encode({"workload": "productpage-v1"})},
                            {"content-type": "application/grpc",
                             exchange.HEADER: exchange.encode({"workload": "grpc-client"})},
                            # malformed, and with what could shift the packed tag's fields or break
                            # Prometheus quoting if the agent split or escaped it wrong
                            {exchange.HEADER: 'not a|peer "header\\'}):
                assert (await c.get(f"http://{ip}:{http_port}/", headers=headers)).status_code == 200
            for _ in range(2):
                r, w = await asyncio.open_connection(ip, tcp_port)
                w.write(b"ping!")
                await w.drain()
                assert await r.read(100) == b"ping!"
                w.close()
            deadline = time.monotonic() + 10
            while True:
                raw = (await c.get(f"http://{ip}:{admin}/stats/prometheus")).text
                if ("envoy_istiocustom_istio_tcp_connections_closed_total" in raw and \
                        'le="+Inf"} 4' in raw) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            # sizes are the downstream wire bytes, as Istio's stats filter records them: one request of
            # exactly known bytes (many short headers, where wire bytes and CEL's header-map size differ
            # by ~40%: `: ` and CRLF per header, the request line) and its response as read off the socket
            sized = await _sized_request(ip, http_port)
            deadline = time.monotonic() + 10
            while True:
                after = parse(istio_names((await c.get(f"http://{ip}:{admin}/stats/prometheus")).text))
                if total(after, "istio_response_bytes_count") == 5 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    finally:
        server.close()
    # Envoy's own rendering: HTTP requests are counted by the duration histogram only (the agent derives
    # istio_requests_total from its _count, istio_names)
    assert "envoy_istiocustom_istio_request_duration_milliseconds_counted_count{" in raw
    assert "envoy_istiocustom_istio_requests_total{" not in raw
    s = parse(istio_names(raw))
    http = series(s, "istio_requests_total")
    assert {(d["request_protocol"], d["source_workload"]) for d in http} == {
        ("http", "unknown"), ("http", "productpage-v1"), ("grpc", "grpc-client"), ("http", "")}
    # no header: every peer field unknown; a header that does not parse or a struct without a field: empty
    [unknown] = [d for d in http if d["source_workload"] == "unknown"]
    assert {k: v for k, v in unknown.items() if k.startswith("source_")} == {
        "source_workload": "unknown", "source_workload_namespace": "unknown", "source_app": "unknown",
        "source_version": "unknown", "source_canonical_service": "unknown",
        "source_canonical_revision": "unknown", "source_cluster": "unknown",
        "source_principal": "unknown"}
    assert [d["source_app"] for d in http if d["source_workload"] == "productpage-v1"] == [""]
    [malformed] = [d for d in http if d["source_workload"] == ""]
    assert malformed["source_app"] == "" and malformed["destination_workload"] == "reviews-v1"
    for d in http:
        assert d["destination_workload"] == "reviews-v1" and d["destination_service"] == "r.ns.svc"
        assert d["response_flags"] == "-" and d["response_code"] == "200"
        # empty for plain HTTP; a gRPC request answered without grpc-status is UNKNOWN (2)
        assert d["grpc_response_status"] == ("2" if d["request_protocol"] == "grpc" else "")
    assert total(s, "istio_requests_total") == 4
    assert total(s, "istio_request_duration_milliseconds_count") == 4     # 0 ms durations count too
    assert total(s, "istio_response_bytes_count") == 4
    # sizes are headers + body as on the wire, as Istio's: a GET has no body but
    # its headers (host, user-agent, accept, ...); the responses carry 5 bytes of body and their headers
    assert 4 * 20 < total(s, "istio_request_bytes_sum") < 4 * 400
    assert 4 * (5 + 20) < total(s, "istio_response_bytes_sum") < 4 * 400
    # Envoy's histogram sums are approximate (log-linear buckets, two significant digits): within 5%
    for metric, size in (("istio_request_bytes_sum", sized[0]), ("istio_response_bytes_sum", sized[1])):
        got = total(after, metric) - total(s, metric)
        assert abs(got - size) <= 0.05 * size, (metric, got, size)
    tcp = series(s, "istio_tcp_connections_opened_total")
    assert len(tcp) == 1 and tcp[0]["destination_service"] == "echo.ns.svc"
    assert tcp[0]["destination_workload"] == ""        # no endpoint metadata: empty
    assert tcp[0]["request_protocol"] == "tcp" and tcp[0]["reporter"] == "source"
    assert total(s, "istio_tcp_connections_opened_total") == 2
    assert total(s, "istio_tcp_connections_closed_total") == 2
    assert total(s, "istio_tcp_sent_bytes_total") == 10 and total(s, "istio_tcp_received_bytes_total") == 10
    # the access log has one line per TCP connection, not one more at connect (flush_access_log_on_connected)
    deadline = time.monotonic() + 5
    while len((tmp_path / "tcp-access.log").read_text().splitlines()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len((tmp_path / "tcp-access.log").read_text().splitlines()) == 2
