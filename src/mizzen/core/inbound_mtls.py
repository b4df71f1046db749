"""The filter chains of one inbound port under its PeerAuthentication mode (Istio's inbound mTLS chains).

- STRICT: chains matching ``transport_protocol: tls`` that terminate Istio mTLS (client certificate
  required, validated against ROOTCA); plaintext matches no chain and the connection is closed. The chain for
  Istio's ALPN values is the same as PERMISSIVE's, and a second one takes TLS with other ALPN values, so a
  PERMISSIVE <-> STRICT change leaves open mTLS connections alone (Envoy drains only chains that change).
- PERMISSIVE: both on one port, told apart by the TLS inspector: Istio mTLS (``tls`` plus one of Istio's ALPN
  values) is terminated, ``raw_buffer`` goes through in plaintext, and on TCP ports other TLS (the app's own)
  passes through untouched.
- DISABLE: one plaintext chain without a match (what a proxy without SDS always gets).

The same chains serve local mode (a listener per port on the pod IP) and REDIRECT mode (virtualInbound, where
each chain also matches its destination port; ports with a ``portLevelMtls`` mode but no service get
passthrough chains under that mode, the rest the workload's mode, as Istio builds them). The caller's
network/HTTP filters are the same in every chain: under mTLS the inbound HTTP connection manager's
``forward_client_cert_details`` (APPEND_FORWARD, set in core.filters) hands the app the caller's SPIFFE ID
in ``x-forwarded-client-cert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2

from mizzen.core.filters import TLS_TRANSPORT, pack
from mizzen.core.mtls import ISTIO_MTLS_ALPNS, server_mtls_context
from mizzen.core.peer_authn import MtlsMode, peer_policy
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = ["inbound_chains", "port_mode", "port_overrides"]

TLS = "tls"
RAW_BUFFER = "raw_buffer"


def port_mode(proxy: Proxy, push: PushContext, port: int) -> MtlsMode:
    """The mode of a workload port (0: the workload's own, for passthrough chains); DISABLE without SDS."""
    if not proxy.has_sds:
        return MtlsMode.DISABLE
    policy = peer_policy(push, proxy.namespace, proxy.labels)
    return policy.for_port(port) if port else policy.mode


def port_overrides(proxy: Proxy, push: PushContext) -> list[int]:
    """The workload ports that have a ``portLevelMtls`` mode of their own (sorted); none without SDS."""
    if not proxy.has_sds:
        return []
    return sorted(peer_policy(push, proxy.namespace, proxy.labels).ports)


def _chain(name: str, filters: Sequence[Any], transport: str = "", alpns: Sequence[str] = (),
           tls_http: bool | None = None) -> Any:
    chain = listener_components_pb2.FilterChain(name=name, filters=list(filters))
    if transport:
        chain.filter_chain_match.transport_protocol = transport
    chain.filter_chain_match.application_protocols.extend(alpns)
    if tls_http is not None:
        chain.transport_socket.name = TLS_TRANSPORT
        chain.transport_socket.typed_config.CopyFrom(pack(server_mtls_context(tls_http)))
    return chain


def inbound_chains(proxy: Proxy, push: PushContext, port: int, http: bool, filters: Sequence[Any],
                   name: str = "", destination_port: int = 0) -> list[Any]:
    """The chains for one inbound port (``port`` 0: the workload-level mode, for passthrough); every chain
    matches ``destination_port`` when given (virtualInbound)."""
    mode = port_mode(proxy, push, port)
    if mode is MtlsMode.STRICT:
        # the Istio-ALPN chain is PERMISSIVE's, byte for byte: a PERMISSIVE -> STRICT change then only removes
        # chains, and Envoy keeps the mTLS connections already open (a changed chain would be drained)
        chains = [_chain(name, filters, TLS, ISTIO_MTLS_ALPNS, tls_http=http),
                  _chain(name, filters, TLS, tls_http=http)]
    elif mode is MtlsMode.PERMISSIVE:
        chains = [_chain(name, filters, TLS, ISTIO_MTLS_ALPNS, tls_http=http),
                  _chain(name, filters, RAW_BUFFER)]
        if not http:
            chains.append(_chain(name, filters, TLS))
    else:
        chains = [_chain(name, filters)]
    if destination_port:
        for c in chains:
            c.filter_chain_match.destination_port.value = destination_port
    return chains
