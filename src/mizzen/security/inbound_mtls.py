"""What a proxy's inbound accepts, read from the listeners it was sent (the MTLS column of ``proxy-status``
and ``get pods -o wide``): a filter chain whose DownstreamTlsContext takes the workload certificate from SDS
(Istio's ``default`` secret) and requires a client certificate is mutual TLS; a chain without a transport
socket is plaintext.

``STRICT``: every inbound chain is mTLS. ``PERMISSIVE``: both kinds (Istio's TLS-inspector split on one
port). ``DISABLE``: only plaintext. ``-``: no inbound chains (gateways, proxies without inbound ports).
Independent of how the listeners were generated: only Envoy's messages and Istio's secret name are read.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

__all__ = ["DISABLE", "NONE", "PERMISSIVE", "STRICT", "inbound_mtls_mode"]

STRICT, PERMISSIVE, DISABLE, NONE = "STRICT", "PERMISSIVE", "DISABLE", "-"
WORKLOAD_SECRET = "default"   # Istio's name for the workload certificate over SDS
_TLS_TYPE = "type.googleapis.com/" + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name


def _chain_is_mtls(chain: listener_pb2.FilterChain) -> bool | None:
    """True: mutual TLS with the workload certificate; False: plaintext; None: other TLS (not counted)."""
    if not chain.HasField("transport_socket"):
        return False
    typed = chain.transport_socket.typed_config
    if typed.type_url != _TLS_TYPE:
        return None
    ctx = tls_pb2.DownstreamTlsContext()
    typed.Unpack(ctx)
    names = {c.name for c in ctx.common_tls_context.tls_certificate_sds_secret_configs}
    if WORKLOAD_SECRET in names and ctx.require_client_certificate.value:
        return True
    return None


def inbound_mtls_mode(listeners: Iterable[listener_pb2.Listener | any_pb2.Any]) -> str:
    """STRICT, PERMISSIVE, DISABLE or ``-`` for the inbound listeners among ``listeners``."""
    mtls = plain = 0
    for item in listeners:
        lis = item
        if isinstance(item, any_pb2.Any):
            lis = listener_pb2.Listener()
            item.Unpack(lis)
        assert isinstance(lis, listener_pb2.Listener)
        if lis.traffic_direction != base_pb2.INBOUND:
            continue
        for chain in lis.filter_chains:
            kind = _chain_is_mtls(chain)
            if kind is True:
                mtls += 1
            elif kind is False:
                plain += 1
    if mtls and plain:
        return PERMISSIVE
    if mtls:
        return STRICT
    return DISABLE if plain else NONE
