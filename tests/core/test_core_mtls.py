"""Pure translation of auto mTLS, DestinationRule TLS and PeerAuthentication (no Envoy): Istio's precedence,
the cluster transport sockets (SNI, SANs, ALPN), EDS tlsMode metadata, and the inbound chains per mode in
local and REDIRECT mode. The real-Envoy behaviour is in tests/security/test_security_mtls_e2e.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from listeners_testkit import configs, fqdn, push_of, service, sidecar

from mizzen.core import mtls
from mizzen.core.clusters import outbound_clusters
from mizzen.core.endpoints import build_endpoints
from mizzen.core.listeners import build_listeners
from mizzen.core.mesh import MeshConfig
from mizzen.core.peer_authn import MtlsMode, peer_policy
from mizzen.core.proxy import Meta, Proxy
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL, Endpoint, Protocol
from mizzen.security import sdsconfig
from mizzen.security.nodeagent.cache import ROOT_SECRET, WORKLOAD_SECRET

NS = "bookinfo"
REVIEWS = fqdn("reviews")
SIDECAR_LABELS = {"app": "reviews", TLS_MODE_LABEL: ISTIO_TLS_MODE}


def with_sds(p: Proxy) -> Proxy:
    return dataclasses.replace(p, metadata={Meta.SDS: "true"})


def endpoint(ip: str, sa: str = "bookinfo-reviews", labels: dict[str, str] | None = None) -> Endpoint:
    return Endpoint(REVIEWS, 9080, ip, 9080, labels=dict(SIDECAR_LABELS if labels is None else labels),
                    workload=f"reviews-{ip}", namespace=NS, service_account=sa)



def world(cfg_text: str = "", protocol: Protocol = Protocol.HTTP, eps: tuple[Endpoint, ...] | None = None,
          mesh: MeshConfig | None = None) -> Any:
    svc = service("reviews", [(9080, protocol)])
    eps = eps if eps is not None else (endpoint("127.0.0.11"), endpoint("127.0.0.12", sa="other"))
    return svc, push_of([svc], configs(cfg_text) if cfg_text else [], mesh, {(REVIEWS, 9080): eps})


def tls_ctx(socket: Any) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(ctx)
    return ctx


def sans(ctx: Any) -> list[str]:
    return [m.matcher.exact for m in
            ctx.common_tls_context.combined_validation_context.default_validation_context
            .match_typed_subject_alt_names]


def test_core_mtls_names_agree_with_the_agents_sds() -> None:
    assert (mtls.SDS_CLUSTER, mtls.WORKLOAD_SECRET, mtls.ROOT_SECRET) == (
        sdsconfig.SDS_CLUSTER, WORKLOAD_SECRET, ROOT_SECRET)


def test_core_mtls_auto_mtls_transport_socket_matches() -> None:
    svc, push = world()
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), push, svc, svc.ports[0])
    assert not c.HasField("transport_socket")
    istio, plain = c.transport_socket_matches
    assert (istio.name, dict(istio.match)) == ("tlsMode-istio", {"tlsMode": "istio"})
    assert (plain.name, dict(plain.match), plain.transport_socket.name) == (
        "tlsMode-disabled", {}, "envoy.transport_sockets.raw_buffer")
    ctx = tls_ctx(istio.transport_socket)
    assert ctx.sni == f"outbound_.9080_._.{REVIEWS}"
    assert sans(ctx) == ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
                         "spiffe://cluster.local/ns/bookinfo/sa/other"]
    assert list(ctx.common_tls_context.alpn_protocols) == ["istio", "http/1.1"]
    assert "istio-peer-exchange" not in ctx.common_tls_context.alpn_protocols
    assert ctx.common_tls_context.tls_certificate_sds_secret_configs[0].name == "default"
    vc = ctx.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    assert vc.name == "ROOTCA"
    assert vc.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name == "sds-grpc"


def test_core_mtls_service_entry_subject_alt_names_join_the_san_list() -> None:
    svc, push = world()
    se = dataclasses.replace(svc, subject_alt_names=("spiffe://cluster.local/ns/x/sa/se",))
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), push, se, svc.ports[0])
    ctx = tls_ctx(c.transport_socket_matches[0].transport_socket)
    assert "spiffe://cluster.local/ns/x/sa/se" in sans(ctx)


@pytest.mark.parametrize(("protocol", "alpn"), [(Protocol.GRPC, ["istio", "h2"]), (Protocol.TCP, ["istio"]),
                                                (Protocol.HTTP2, ["istio", "h2"])])
def test_core_mtls_alpn_follows_the_cluster_protocol(protocol: Protocol, alpn: list[str]) -> None:
    svc, push = world(protocol=protocol)
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), push, svc, svc.ports[0])
    ctx = tls_ctx(c.transport_socket_matches[0].transport_socket)
    assert list(ctx.common_tls_context.alpn_protocols) == alpn


def test_core_mtls_nothing_without_sds_or_auto_mtls_or_for_external_or_disabled_namespaces() -> None:
    svc, push = world()
    (c,) = outbound_clusters(sidecar(name="pp"), push, svc, svc.ports[0])
    assert not c.transport_socket_matches and not c.HasField("transport_socket")
    _, off = world(mesh=MeshConfig(enable_auto_mtls=False))
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), off, svc, svc.ports[0])
    assert not c.transport_socket_matches
    external = dataclasses.replace(svc, mesh_external=True)
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), push, external, svc.ports[0])
    assert not c.transport_socket_matches
    _, disabled = world("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: DISABLE}}
""")
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), disabled, svc, svc.ports[0])
    assert not c.transport_socket_matches
    # a workload-level DISABLE is not visible to clients (Istio's best-effort inference)
    _, workload = world("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}
""")
    (c,) = outbound_clusters(with_sds(sidecar(name="pp")), workload, svc, svc.ports[0])
    assert c.transport_socket_matches


def test_core_mtls_destination_rule_tls_overrides_auto_mtls() -> None:
    def cluster(tls: str) -> Any:
        svc, push = world(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec: {{host: reviews, trafficPolicy: {{tls: {tls}}}, subsets: [{{name: v1, labels: {{version: v1}}}}]}}
""")
        return outbound_clusters(with_sds(sidecar(name="pp")), push, svc, svc.ports[0])

    for c in cluster("{mode: DISABLE}"):
        assert not c.transport_socket_matches and not c.HasField("transport_socket")
    plain, subset = cluster("{mode: ISTIO_MUTUAL}")
    assert not plain.transport_socket_matches
    assert tls_ctx(plain.transport_socket).sni == f"outbound_.9080_._.{REVIEWS}"
    assert tls_ctx(subset.transport_socket).sni == f"outbound_.9080_.v1_.{REVIEWS}"
    c, _ = cluster("{mode: ISTIO_MUTUAL, sni: my.sni, subjectAltNames: ['spiffe://td/ns/x/sa/y']}")
    assert (tls_ctx(c.transport_socket).sni, sans(tls_ctx(c.transport_socket))) == (
        "my.sni", ["spiffe://td/ns/x/sa/y"])
    c, _ = cluster("{mode: SIMPLE, caCertificates: /ca.pem, subjectAltNames: [a.example.com]}")
    ctx = tls_ctx(c.transport_socket)
    assert ctx.sni == REVIEWS and ctx.common_tls_context.validation_context.trusted_ca.filename == "/ca.pem"
    vc = ctx.common_tls_context.validation_context
    assert {m.matcher.exact for m in vc.match_typed_subject_alt_names} == {"a.example.com"}
    c, _ = cluster("{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, insecureSkipVerify: true}")
    ctx = tls_ctx(c.transport_socket)
    assert ctx.common_tls_context.tls_certificates[0].certificate_chain.filename == "/c.pem"
    assert not ctx.common_tls_context.HasField("validation_context")
    c, _ = cluster("{mode: SIMPLE, credentialName: cert}")     # sidecars: only with a workloadSelector
    assert not c.HasField("transport_socket")


def test_core_mtls_port_and_subset_tls_and_a_tls_block_without_mode() -> None:
    svc, push = world("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings: [{port: {number: 9080}, tls: {mode: ISTIO_MUTUAL, sni: port.sni}}]
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: SIMPLE, sni: v1.sni}}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {tls: {sni: ignored}}}
""")
    top, v1, v2 = outbound_clusters(with_sds(sidecar(name="pp")), push, svc, svc.ports[0])
    assert tls_ctx(top.transport_socket).sni == "port.sni"          # port level beats the top level
    assert tls_ctx(v1.transport_socket).sni == "v1.sni"             # the subset's policy wins
    assert not v2.HasField("transport_socket") and not v2.transport_socket_matches   # no mode: DISABLE


def test_core_mtls_eds_marks_endpoints_with_a_sidecar() -> None:
    _svc, push = world(eps=(endpoint("127.0.0.11"), endpoint("127.0.0.12", labels={"app": "reviews"})))
    (cla,) = build_endpoints(sidecar(name="pp"), push, [f"outbound|9080||{REVIEWS}"])
    marks = {lb.endpoint.address.socket_address.address:
             dict(lb.metadata.filter_metadata["envoy.transport_socket_match"])
             for g in cla.endpoints for lb in g.lb_endpoints}
    assert marks == {"127.0.0.11": {"tlsMode": "istio"}, "127.0.0.12": {}}


PRECEDENCE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"9080": {mode: DISABLE}, "9443": {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-newer}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}
"""


def test_core_peer_authentication_precedence() -> None:
    push = push_of([], configs(PRECEDENCE))
    p = peer_policy(push, NS, {"app": "reviews"})
    assert (p.mode, p.for_port(9080), p.for_port(9443), p.for_port(1)) == (
        MtlsMode.PERMISSIVE, MtlsMode.DISABLE, MtlsMode.PERMISSIVE, MtlsMode.PERMISSIVE)
    # no workload policy: the namespace's UNSET inherits the mesh's STRICT (the root-namespace selector
    # policy applies only in the root namespace)
    assert peer_policy(push, NS, {"app": "ratings"}).mode is MtlsMode.STRICT
    assert peer_policy(push, "other", {"app": "reviews"}).mode is MtlsMode.STRICT
    assert peer_policy(push, "istio-system", {"app": "reviews"}).mode is MtlsMode.DISABLE
    assert peer_policy(push_of(), NS, {}).mode is MtlsMode.PERMISSIVE     # the default


def _inbound(mode: str, proxy_mode: str = "NONE", protocol: Protocol = Protocol.HTTP,
             sds: bool = True) -> list[Any]:
    svc = service("reviews", [(9080, protocol)])
    push = push_of([svc], configs(f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec: {{mtls: {{mode: {mode}}}}}
"""))
    p = sidecar(ip="127.0.10.1", labels=SIDECAR_LABELS, mode=proxy_mode)
    return build_listeners(with_sds(p) if sds else p, push)


def _match(chain: Any) -> tuple[str, tuple[str, ...], bool]:
    m = chain.filter_chain_match
    return m.transport_protocol, tuple(m.application_protocols), chain.HasField("transport_socket")


def test_core_inbound_chains_per_mode_in_local_mode() -> None:
    (lis,) = [x for x in _inbound("STRICT") if x.name == "127.0.10.1_9080"]
    assert [_match(c) for c in lis.filter_chains] == [("tls", mtls.ISTIO_MTLS_ALPNS, True), ("tls", (), True)]
    strict_istio_chain = lis.filter_chains[0]
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    ctx = tls_pb2.DownstreamTlsContext()
    assert lis.filter_chains[0].transport_socket.typed_config.Unpack(ctx)
    assert ctx.require_client_certificate.value is True
    assert list(ctx.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    (lis,) = [x for x in _inbound("PERMISSIVE") if x.name == "127.0.10.1_9080"]
    assert [_match(c) for c in lis.filter_chains] == [("tls", mtls.ISTIO_MTLS_ALPNS, True),
                                                      ("raw_buffer", (), False)]
    # the mTLS chain is the same message in both modes: Envoy keeps its connections across the change
    assert lis.filter_chains[0] == strict_istio_chain
    (lis,) = [x for x in _inbound("PERMISSIVE", protocol=Protocol.TCP) if x.name == "127.0.10.1_9080"]
    assert [_match(c) for c in lis.filter_chains] == [("tls", mtls.ISTIO_MTLS_ALPNS, True),
                                                      ("raw_buffer", (), False), ("tls", (), False)]
    for lis in (_inbound("DISABLE"), _inbound("STRICT", sds=False)):
        (one,) = [x for x in lis if x.name == "127.0.10.1_9080"]
        assert [_match(c) for c in one.filter_chains] == [("", (), False)] and not one.listener_filters


def test_core_inbound_chains_in_virtual_inbound() -> None:
    (vi,) = [x for x in _inbound("STRICT", "REDIRECT") if x.name == "virtualInbound"]
    by_port = [(c.filter_chain_match.destination_port.value, *_match(c)) for c in vi.filter_chains]
    alpns = mtls.ISTIO_MTLS_ALPNS
    assert by_port == [(15006, "", (), False), (9080, "tls", alpns, True), (9080, "tls", (), True),
                       (0, "tls", alpns, True), (0, "tls", (), True)]
    assert [f.name for f in vi.listener_filters] == ["envoy.filters.listener.original_dst",
                                                    "envoy.filters.listener.tls_inspector"]
    (vi,) = [x for x in _inbound("PERMISSIVE", "REDIRECT") if x.name == "virtualInbound"]
    assert [(c.filter_chain_match.destination_port.value, _match(c)[0]) for c in vi.filter_chains] == [
        (15006, ""), (9080, "tls"), (9080, "raw_buffer"), (0, "tls"), (0, "raw_buffer"), (0, "tls")]


def test_core_virtual_inbound_port_level_mode_for_a_port_without_a_service() -> None:
    svc = service("reviews", [(9080, Protocol.HTTP)])
    push = push_of([svc], configs("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {"8000": {mode: DISABLE}}
"""))
    (vi,) = [x for x in build_listeners(with_sds(sidecar(labels=SIDECAR_LABELS, mode="REDIRECT")), push)
             if x.name == "virtualInbound"]
    assert [(c.filter_chain_match.destination_port.value, *_match(c)) for c in vi.filter_chains] == [
        (15006, "", (), False), (9080, "tls", mtls.ISTIO_MTLS_ALPNS, True), (9080, "tls", (), True),
        (8000, "", (), False), (0, "tls", mtls.ISTIO_MTLS_ALPNS, True), (0, "tls", (), True)]


def test_core_mtls_identity_changes_name_services_whose_service_accounts_changed() -> None:
    svc, before = world(eps=(endpoint("127.0.0.11"),))
    same = push_of([svc], [], None, {(REVIEWS, 9080): (endpoint("127.0.0.11"), endpoint("127.0.0.12"))})
    new_sa = push_of([svc], [], None, {(REVIEWS, 9080): (endpoint("127.0.0.11"),
                                                         endpoint("127.0.0.13", "x"))})
    plain = push_of([svc], [], None, {(REVIEWS, 9080): (endpoint("127.0.0.11"),
                                                        endpoint("127.0.0.14", "y", labels={}))})
    assert mtls.identity_changes(before.registry, same.registry, [REVIEWS]) == []
    (key,) = mtls.identity_changes(before.registry, new_sa.registry, [REVIEWS])
    assert (key.kind, key.namespace, key.name) == ("Service", NS, "reviews")
    # an endpoint without a sidecar still adds its service account to the clusters' SANs (as Istio's), so
    # its new account is a change too (a plaintext workload joining once left the clusters' SANs stale)
    assert mtls.identity_changes(before.registry, plain.registry, [REVIEWS]) == [key]
