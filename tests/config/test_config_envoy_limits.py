"""Config Istio's validation accepts but Envoy 1.40 rejects is refused at apply: each limit is checked on
both sides of its boundary against the real Envoy binary (``envoy --mode validate``), with the protos built by
Mizzen's own translation functions, and against Mizzen's validation of the matching Istio YAML."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import re2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from mizzen.agent.binary import envoy_binary
from mizzen.config.errors import Severity
from mizzen.config.model import Config, Source
from mizzen.config.validation import validate
from mizzen.config.validation.envoy_limits import (
    ARG_COMMANDS,
    CIPHER_SUITES,
    COMMANDS,
    MAX_DIRECT_RESPONSE_BODY,
    MAX_HEADER_BYTES,
    MAX_RING_SIZE,
    OPTIONAL_ARG_COMMANDS,
    RE2_MAX_PROGRAM_SIZE,
)
from mizzen.core import filters, http_action, http_match
from mizzen.core.cluster_policy import apply_load_balancer
from mizzen.core.mesh import MeshConfig
from mizzen.core.routes import MAX_DIRECT_RESPONSE_BODY as ROUTES_MAX_BODY


def _dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def envoy_accepts(tmp_path: Path, routes: Sequence[rc.Route] = (),
                  clusters: Sequence[cluster_pb2.Cluster] = (),
                  chains: Sequence[listener_components_pb2.FilterChain] = ()) -> tuple[bool, str]:
    """``envoy --mode validate`` on a bootstrap with one listener (an HCM with ``routes``, or ``chains``)."""
    rcfg = route_pb2.RouteConfiguration(name="r", virtual_hosts=[rc.VirtualHost(name="v", domains=["*"],
                                                                                routes=list(routes))])
    rcfg.max_direct_response_body_size_bytes.value = ROUTES_MAX_BODY
    rcfg.validate_clusters.value = False
    if not chains:
        hcm = filters.build_hcm(stat_prefix="x", mesh=MeshConfig(), route_config=rcfg)
        chains = [listener_components_pb2.FilterChain(filters=[filters.hcm_filter(hcm)])]
    listener = {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                "filter_chains": [_dict(c) for c in chains],
                "listener_filters": [_dict(filters.listener_filter(filters.TLS_INSPECTOR,
                                                                   tls_inspector_pb2.TlsInspector()))]}
    boot = {"static_resources": {"listeners": [listener], "clusters": [_dict(c) for c in clusters]}}
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(boot))
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                          "-l", "critical"], capture_output=True, text=True, timeout=60)
    return res.returncode == 0, res.stdout + res.stderr


def errors(kind: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    c = Config(kind=kind, api_version="networking.istio.io/v1", name="obj", namespace="default", spec=spec,
               source=Source("t.yaml", 1))
    return [(i.path, i.message) for i in validate(c) if i.severity is Severity.ERROR]


def vs_http(rule: dict[str, Any]) -> dict[str, Any]:
    return {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], **rule}]}


def _route(match: dict[str, Any] | None = None) -> rc.Route:
    r = rc.Route(match=http_match.route_match(match))
    r.direct_response.status = 200
    return r


# --- RE2 program size --------------------------------------------------------------------------------------

@pytest.mark.parametrize("regex", ["a{96}", "a{97}", "/api/v[0-9]+/(users|groups)/[a-z0-9-]{1,32}",
                                   "/(a|b)/.*"])
def test_config_regex_program_size_matches_envoys_limit(tmp_path: Path, regex: str) -> None:
    size = re2.compile(regex).programsize
    ok, out = envoy_accepts(tmp_path, [_route({"uri": {"regex": regex}}),
                                       _route({"headers": {"x-a": {"regex": regex}}})])
    assert ok == (size <= RE2_MAX_PROGRAM_SIZE), out
    if not ok:
        assert f"RE2 program size of {size} > max program size of {RE2_MAX_PROGRAM_SIZE}" in out
    errs = errors("VirtualService", vs_http({"match": [{"uri": {"regex": regex}},
                                                       {"headers": {"x-a": {"regex": regex}}}]}))
    want = f"regex program size {size} exceeds Envoy's limit of {RE2_MAX_PROGRAM_SIZE}"
    found = [(p, m) for p, m in errs if m.startswith(want)]
    assert [p for p, _ in found] == ([] if ok else ["spec.http[0].match[0].uri.regex",
                                                    "spec.http[0].match[1].headers.x-a.regex"])


def test_config_regex_limit_applies_to_rewrites_and_cors_too() -> None:
    big = "a{97}"
    errs = errors("VirtualService", vs_http({"rewrite": {"uriRegexRewrite": {"match": big, "rewrite": "/"}},
                                             "corsPolicy": {"allowOrigins": [{"regex": big}]}}))
    assert sorted(p for p, m in errs if "program size 101" in m) == [
        "spec.http[0].corsPolicy.allowOrigins[0].regex", "spec.http[0].rewrite.uriRegexRewrite.match"]


# --- header values -----------------------------------------------------------------------------------------

ARG_SAMPLES = {"METADATA": "ROUTE:istio:x", "COMMON_DURATION": "DS_RX_BEG:DS_RX_END:ms",
               "CEL": "request.path", "GRPC_STATUS": "NUMBER", "PATH": "WQ", "QUERY_PARAMS": "ORIG",
               "REQUESTED_SERVER_NAME": "SNI_ONLY"}


def _with_headers(values: dict[str, str]) -> rc.Route:
    r = _route()
    http_action.apply_route_headers(r, http_action.header_ops({"request": {"set": values}}))
    return r


def test_config_every_known_envoy_command_is_accepted_by_both(tmp_path: Path) -> None:
    values = {f"x-{i}": f"%{n}%" for i, n in enumerate(sorted(COMMANDS))}
    values.update({f"y-{i}": f"%{n}({ARG_SAMPLES.get(n, 'x')})%"
                   for i, n in enumerate(sorted(ARG_COMMANDS | OPTIONAL_ARG_COMMANDS))})
    values.update({"z-1": "100%% sure", "z-2": "%REQ(x-user):8% and %%", "z-3": "plain"})
    ok, out = envoy_accepts(tmp_path, [_with_headers(values)])
    assert ok, out[-400:]
    assert errors("VirtualService", vs_http({"headers": {"request": {"set": values}}})) == []


@pytest.mark.parametrize(("value", "reason"), [
    ("100%", "does not start an Envoy command"), ("%FOO%", "%FOO% is not an Envoy command"),
    ("%req(x)%", "does not start an Envoy command"), ("%HOSTNAME(x)%", "takes no argument"),
    ("%REQ%", "needs an argument"),
])
def test_config_header_values_envoy_refuses_are_rejected(tmp_path: Path, value: str, reason: str) -> None:
    ok, _ = envoy_accepts(tmp_path, [_with_headers({"x-a": value})])
    assert not ok
    errs = errors("VirtualService", vs_http({"headers": {"response": {"add": {"x-a": value}}}}))
    assert [p for p, m in errs if reason in m] == ["spec.http[0].headers.response.add.x-a"]


def test_config_header_names_with_line_breaks_are_rejected(tmp_path: Path) -> None:
    ok, _ = envoy_accepts(tmp_path, [_with_headers({"x-a\nb": "v"})])
    assert not ok
    assert envoy_accepts(tmp_path, [_with_headers({"x-a b": "v"})])[0]   # Envoy itself is that lenient
    errs = errors("VirtualService", vs_http({"headers": {"request": {"set": {"x-a\nb": "v"}}}}))
    assert [m for _, m in errs] == ["invalid header name 'x-a\\nb': NUL, CR and LF are not allowed (Envoy "
                                    "would reject the route)"]


@pytest.mark.parametrize("extra", [0, 1])
def test_config_header_size_limit(tmp_path: Path, extra: int) -> None:
    """Header names and values to add are at most 16 KiB (bytes: one 'é' is two)."""
    value = "é" * (MAX_HEADER_BYTES // 2) + "a" * extra
    name = "x" * (MAX_HEADER_BYTES + extra)
    for headers, path in (({"x-a": value}, "spec.http[0].headers.request.set.x-a"),
                          ({name: "v"}, f"spec.http[0].headers.request.set.{name}")):
        ok, out = envoy_accepts(tmp_path, [_with_headers(headers)])
        assert ok == (extra == 0), out[-300:]
        errs = errors("VirtualService", vs_http({"headers": {"request": {"set": headers}}}))
        assert [p for p, m in errs if "Envoy allows at most 16384 bytes" in m] == ([] if ok else [path])


# --- SNI, ring hash, query parameters, direct responses ----------------------------------------------------

@pytest.mark.parametrize(("sni", "valid"), [("*.bar.com", True), ("*bar.com", False), ("bar.com", True)])
def test_config_sni_wildcards_match_envoys_rules(tmp_path: Path, sni: str, valid: bool) -> None:
    tcp = filters.tcp_proxy_filter("c", MeshConfig(), cluster="c")
    chain = listener_components_pb2.FilterChain(filters=[tcp])
    chain.filter_chain_match.server_names.append(sni)
    c = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC)
    ok, out = envoy_accepts(tmp_path, clusters=[c], chains=[chain])
    assert ok == valid, out
    vs = {"hosts": ["*.bar.com", "bar.com"], "gateways": ["gw"],
          "tls": [{"match": [{"sniHosts": [sni]}], "route": [{"destination": {"host": "b"}}]}]}
    assert bool([p for p, m in errors("VirtualService", vs) if "partial wildcard" in m]) == (not valid)
    gw = {"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [sni],
                       "tls": {"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k"}}]}
    assert [p for p, m in errors("Gateway", gw) if "partial wildcard" in m] == (
        [] if valid else ["spec.servers[0].hosts[0]"])
    gw["servers"][0]["tls"] = {"mode": "PASSTHROUGH"}   # server hosts are not server names then
    assert [m for _, m in errors("Gateway", gw) if "partial wildcard" in m] == []


@pytest.mark.parametrize("size", [MAX_RING_SIZE, MAX_RING_SIZE + 1])
def test_config_ring_hash_size_limit(tmp_path: Path, size: int) -> None:
    c = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC)
    apply_load_balancer(c, {"consistentHash": {"ringHash": {"minimumRingSize": size}}}, None, False)
    ok, out = envoy_accepts(tmp_path, [_route()], clusters=[c])
    assert ok == (size <= MAX_RING_SIZE), out
    dr = {"host": "a", "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x", "ringHash": {"minimumRingSize": size}}}}}
    assert errors("DestinationRule", dr) == ([] if ok else [(
        "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
        f"minimum ring size {size} exceeds Envoy's limit of {MAX_RING_SIZE}")])


def test_config_empty_query_parameter_name(tmp_path: Path) -> None:
    ok, out = envoy_accepts(tmp_path, [_route({"queryParams": {"": {"exact": "1"}}})])
    assert not ok and "QueryParameterMatcherValidationError.Name" in out
    errs = errors("VirtualService", vs_http({"match": [{"queryParams": {"": {"exact": "1"}}}]}))
    assert ("spec.http[0].match[0].queryParams[\"\"]", "query parameter name cannot be empty") in errs


@pytest.mark.parametrize("extra", [0, 1])
def test_config_direct_response_body_limit(tmp_path: Path, extra: int) -> None:
    assert MAX_DIRECT_RESPONSE_BODY == ROUTES_MAX_BODY
    body = "x" * (MAX_DIRECT_RESPONSE_BODY + extra)
    r = rc.Route(match=rc.RouteMatch(prefix="/"))
    http_action.apply_direct_response(r, {"status": 200, "body": {"string": body}})
    ok, out = envoy_accepts(tmp_path, [r])
    assert ok == (extra == 0), out[-300:]
    for form in ({"string": body}, {"bytes": base64.b64encode(body.encode()).decode()}):
        errs = errors("VirtualService", {"hosts": ["a"], "http": [{"directResponse": {"status": 200,
                                                                                      "body": form}}]})
        assert [p for p, _ in errs] == ([] if ok else ["spec.http[0].directResponse.body"])


def test_config_durations_beyond_gos_range_are_rejected() -> None:
    errs = errors("VirtualService", vs_http({"timeout": "3000000h"}))
    assert errs == [("spec.http[0].timeout", 'invalid duration "3000000h" (more than 2562047h)')]
    assert errors("VirtualService", vs_http({"timeout": "2562047h"})) == []


# --- cipher suites -----------------------------------------------------------------------------------------

def _cert(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "c.pem", tmp / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("suites", [[*sorted(CIPHER_SUITES), "[AES128-SHA|AES256-SHA]"],
                                    ["AES128-SHA", "FOO"], ["TLS_AES_128_GCM_SHA256"]])
def test_config_gateway_cipher_suites_envoy_refuses_are_rejected(tmp_path: Path, suites: list[str]) -> None:
    cert, key = _cert(tmp_path)
    tls = {"mode": "SIMPLE", "serverCertificate": str(cert), "privateKey": str(key), "cipherSuites": suites}
    tcp = filters.tcp_proxy_filter("c", MeshConfig(), cluster="c")
    chain = listener_components_pb2.FilterChain(filters=[tcp])
    chain.transport_socket.CopyFrom(filters.tls_transport_socket(filters.downstream_tls_context(tls)))
    c = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC)
    ok, out = envoy_accepts(tmp_path, clusters=[c], chains=[chain])
    gw = {"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                       "hosts": ["a.example.com"], "tls": tls}]}
    errs = [p for p, m in errors("Gateway", gw) if "is not valid (Istio ignores it" in m]
    assert ok == (errs == []), out[-300:]
    assert errs == [f"spec.servers[0].tls.cipherSuites[{i}]" for i, s in enumerate(suites)
                    if s not in CIPHER_SUITES and not s.startswith("[")]
