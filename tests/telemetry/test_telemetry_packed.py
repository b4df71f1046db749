"""The HTTP metrics' packed tag (``mizzen.telemetry.packed``) and the compact peer header
(``mizzen.telemetry.exchange``), without Envoy: what the loggers ask Envoy to format, formatted here the way
Envoy does (each command operator replaced by its value), and expanded back into Istio's labels the way the
agent serves them. ``test_telemetry_stats_logger.py`` does the same through a real Envoy.
"""

from __future__ import annotations

import re

import pytest
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from telemetry_kit import parse

from mizzen.core.workload_labels import PEER_FIELDS, encode_service, peer_labels
from mizzen.telemetry import exchange, packed
from mizzen.telemetry.metrics import COUNTED_DURATION, Reporter, ServiceLabels, http_loggers
from mizzen.telemetry.prometheus import istio_names

ME = peer_labels("reviews-v1-7f9c4d8b6c-x2x4z", "bookinfo", {"app": "reviews", "version": "v1"})
PEER = peer_labels("productpage-v1-6b746f74dc-9stqn", "bookinfo", {"app": "productpage", "version": "v1"})


def _format(value_format: str, values: dict[str, str]) -> str:
    """Envoy's rendering of a tag's value_format: each %OPERATOR% replaced (unknown ones -> empty)."""
    return re.sub(r"%([A-Z_]+(?:\([^)]*\))?)%", lambda m: values.get(m[1], ""), value_format)


def _prom_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _tag(reporter: Reporter, grpc: bool = False, removed: frozenset[str] = frozenset()) -> str:
    loggers = http_loggers(reporter, ME, ServiceLabels("reviews.bookinfo.svc.cluster.local", "reviews",
                                                       "bookinfo"), removed=removed)
    assert len(loggers) == 2          # gRPC and the rest; no CEL variants per request
    cfg = stats_pb2.Config.FromString(loggers[int(grpc)].typed_config.value)
    stats = [*cfg.counters, *cfg.histograms]
    # istio_requests_total is the duration histogram's count (the agent derives it): three stats, no counter
    assert not cfg.counters and {s.stat.name for s in stats} == {
        COUNTED_DURATION, "istio_request_bytes", "istio_response_bytes"}
    assert all(len(s.stat.tags) == 1 for s in stats)
    assert len({s.stat.tags[0].value_format for s in stats}) == 1
    [tag] = stats[0].stat.tags
    assert tag.name == packed.TAG
    return tag.value_format


def _scrape(*series: tuple[str, float]) -> list[tuple[str, dict[str, str], float]]:
    text = "# TYPE envoy_istiocustom_istio_requests_total counter\n" + "".join(
        f'envoy_istiocustom_istio_requests_total{{{packed.TAG}="{_prom_escape(v)}"}} {n:g}\n'
        for v, n in series)
    return parse(istio_names(text))


def test_server_labels_round_trip_in_istio_order() -> None:
    values = {"RESPONSE_CODE": "503", "RESPONSE_FLAGS": "UO", "GRPC_STATUS_NUMBER": "",
              "DOWNSTREAM_PEER_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/productpage",
              "DOWNSTREAM_LOCAL_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/reviews",
              "FILTER_STATE(mizzen.peer:PLAIN)": exchange.encode(PEER.fields())}
    [(name, labels, n)] = _scrape((_format(_tag(Reporter.DESTINATION), values), 3))
    assert (name, n) == ("istio_requests_total", 3)
    assert list(labels) == [k for k in packed.ISTIO_LABEL_ORDER if k in labels] and len(labels) == 25
    assert labels == {
        "reporter": "destination", "source_workload": "productpage-v1",
        "source_canonical_service": "productpage",
        "source_canonical_revision": "v1", "source_workload_namespace": "bookinfo",
        "source_principal": "spiffe://cluster.local/ns/bookinfo/sa/productpage", "source_app": "productpage",
        "source_version": "v1", "source_cluster": "Kubernetes", "destination_workload": "reviews-v1",
        "destination_workload_namespace": "bookinfo",
        "destination_principal": "spiffe://cluster.local/ns/bookinfo/sa/reviews",
        "destination_app": "reviews",
        "destination_version": "v1", "destination_service": "reviews.bookinfo.svc.cluster.local",
        "destination_service_name": "reviews", "destination_service_namespace": "bookinfo",
        "destination_canonical_service": "reviews", "destination_canonical_revision": "v1",
        "destination_cluster": "Kubernetes", "request_protocol": "http", "response_code": "503",
        "grpc_response_status": "", "response_flags": "UO", "connection_security_policy": "mutual_tls"}


def test_plaintext_and_no_certificates_are_none_and_unknown() -> None:
    values = {"RESPONSE_CODE": "200", "RESPONSE_FLAGS": "-", "GRPC_STATUS_NUMBER": "0",
              "FILTER_STATE(mizzen.peer:PLAIN)": exchange.encode(PEER.fields())}
    [(_, server, _)] = _scrape((_format(_tag(Reporter.DESTINATION, grpc=True), values), 1))
    assert (server["connection_security_policy"], server["source_principal"],
            server["destination_principal"]) == ("none", "unknown", "unknown")
    assert (server["request_protocol"], server["grpc_response_status"]) == ("grpc", "0")
    endpoint = {"UPSTREAM_METADATA(mizzen.peer:peer)": exchange.encode(PEER.fields())}    # EDS metadata
    [(_, client, _)] = _scrape((_format(_tag(Reporter.SOURCE), values | endpoint | {
        "UPSTREAM_PEER_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/reviews"}), 1))
    assert (client["reporter"], client["source_workload"], client["destination_workload"]) == (
        "source", "reviews-v1", "productpage-v1")
    assert (client["connection_security_policy"], client["source_principal"],
            client["destination_principal"]) == ("unknown", "unknown", "spiffe://cluster.local/ns/bookinfo/sa/reviews")
    assert client["destination_service"] == ""          # no cluster metadata: empty, as a tag of its own
    # a local reply (no endpoint chosen): the destination's labels are unknown
    [(_, local, _)] = _scrape((_format(_tag(Reporter.SOURCE), {"RESPONSE_CODE": "503"}), 1))
    dest = {k: v for k, v in local.items() if k.startswith("destination_")}
    assert {k: v for k, v in dest.items() if not k.startswith("destination_service")} == {
        f"destination_{f}": "unknown" for f in [*PEER_FIELDS, "principal"]}


def test_hostile_peer_header_shifts_nothing_and_never_duplicates_a_series() -> None:
    tag = _tag(Reporter.DESTINATION)
    base = {"RESPONSE_CODE": "200", "RESPONSE_FLAGS": "-"}
    hostile = ['a|b|c"d\\e\nf', "x,y", "not a header"]
    peer = "FILTER_STATE(mizzen.peer:PLAIN)"
    got = _scrape(*((_format(tag, base | {peer: h}), 2) for h in hostile),
                  (_format(tag, base | {peer: exchange.encode(PEER.fields())}), 5))
    # the three malformed headers expand alike (empty peer labels): one series, their counts added
    assert sorted((labels["source_workload"], n) for _, labels, n in got) == [("", 6), ("productpage-v1", 5)]
    for _, labels, _ in got:
        assert (labels["response_code"], labels["response_flags"]) == ("200", "-")
        assert labels["destination_workload"] == "reviews-v1"


def test_removed_labels_are_not_reported() -> None:
    removed = frozenset({"source_app", "destination_principal", "connection_security_policy", "reporter"})
    values = {"FILTER_STATE(mizzen.peer:PLAIN)": exchange.encode(PEER.fields())}
    [(_, labels, _)] = _scrape((_format(_tag(Reporter.DESTINATION, removed=removed), values), 1))
    assert not removed & set(labels) and len(labels) == 21
    assert labels["source_version"] == "v1" and labels["source_principal"] == "unknown"


def test_other_lines_and_histogram_buckets_are_kept() -> None:
    tag = _format(_tag(Reporter.DESTINATION), {"RESPONSE_CODE": "200"})
    text = (f'envoy_server_live 1\nenvoy_istiocustom_istio_request_bytes_bucket{{{packed.TAG}="{tag}",'
            f'le="0.5"}} 4\nenvoy_istiocustom_istio_request_bytes_sum{{{packed.TAG}="{tag}"}} 12.5\n'
            f'x{{{packed.TAG}="not packed"}} 1\n')
    out = istio_names(text)
    assert out.startswith("envoy_server_live 1\nistio_request_bytes_bucket{reporter=\"destination\",")
    [bucket, total] = [s for s in parse(out) if s[0].startswith("istio_request_bytes")]
    assert bucket[1]["le"] == "0.5" and bucket[2] == 4 and bucket[1]["response_code"] == "200"
    assert total[2] == 12.5 and "le" not in total[1]
    assert f'x{{{packed.TAG}="not packed"}} 1' in out


@pytest.mark.parametrize("value", ["productpage-v1", "", "v1.2_b", "a,b|c;d=e%f~g h", "é/ü:ß"])
def test_peer_header_round_trips_and_stays_short(value: str) -> None:
    fields = {f: value for f in PEER_FIELDS}
    header = exchange.encode(fields)
    assert exchange.decode(header) == fields
    assert re.fullmatch(r"[A-Za-z0-9._~,-]*", header)      # a plain header value, no format-string %
    assert len(exchange.encode(PEER.fields())) < 70        # Istio's base64 struct is ~260 bytes
    with pytest.raises(ValueError):
        exchange.decode("only,three,fields")
    assert exchange.decode_or_empty("not a header") == {}


def test_each_operator_is_formatted_once_and_plain_http_has_no_grpc_status_operator() -> None:
    # per-request cost: every operator in the tag is formatted by each of the four stats on every request
    server, client = _tag(Reporter.DESTINATION), _tag(Reporter.SOURCE)
    for tag in (server, client, _tag(Reporter.DESTINATION, grpc=True)):
        ops = re.findall(r"%[A-Z_]+(?:\([^)]*\))?%", tag)
        assert len(ops) == len(set(ops)), tag
    assert server.count("%DOWNSTREAM_PEER_URI_SAN%") == 1      # source_principal and the mTLS policy
    assert "GRPC_STATUS" not in server and "GRPC_STATUS" not in client
    assert "%GRPC_STATUS_NUMBER%" in _tag(Reporter.SOURCE, grpc=True)
    # a plain HTTP response that carries a grpc-status header still reports an empty status, as Istio's
    values = {"RESPONSE_CODE": "200", "GRPC_STATUS_NUMBER": "14", "DOWNSTREAM_PEER_URI_SAN": "spiffe://x/a",
              "DOWNSTREAM_LOCAL_URI_SAN": "spiffe://x/b"}
    [(_, labels, _)] = _scrape((_format(server, values), 1))
    assert labels["grpc_response_status"] == ""
    assert (labels["source_principal"], labels["connection_security_policy"]) == (
        "spiffe://x/a", "mutual_tls")
    # removing one of the labels that share a value keeps the other
    removed = _tag(Reporter.DESTINATION, removed=frozenset({"source_principal"}))
    [(_, labels, _)] = _scrape((_format(removed, values), 1))
    assert "source_principal" not in labels and labels["connection_security_policy"] == "mutual_tls"


def test_client_service_labels_are_one_cluster_metadata_string() -> None:
    client = _tag(Reporter.SOURCE)
    assert client.count("%CLUSTER_METADATA(") == 1
    svc = encode_service("reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo")
    [(_, labels, _)] = _scrape((_format(client, {"CLUSTER_METADATA(mizzen.peer:svc)": svc}), 1))
    assert (labels["destination_service"], labels["destination_service_name"],
            labels["destination_service_namespace"]) == ("reviews.bookinfo.svc.cluster.local", "reviews",
                                                         "bookinfo")
    removed = _tag(Reporter.SOURCE, removed=frozenset({"destination_service_name"}))
    [(_, labels, _)] = _scrape((_format(removed, {"CLUSTER_METADATA(mizzen.peer:svc)": svc}), 1))
    assert "destination_service_name" not in labels and labels["destination_service_namespace"] == "bookinfo"
