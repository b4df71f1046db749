"""The MTLS column's reading of a proxy's listeners: STRICT (every inbound chain mutual TLS with Istio's
``default`` SDS certificate), PERMISSIVE (TLS and plaintext chains), DISABLE (plaintext only), ``-`` (no
inbound chains); outbound listeners and other TLS (gateway credentials) are not counted."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

from mizzen.security.inbound_mtls import inbound_mtls_mode


def _chain(secret: str | None, require_client: bool = True) -> listener_components_pb2.FilterChain:
    chain = listener_components_pb2.FilterChain()
    if secret is not None:
        ctx = tls_pb2.DownstreamTlsContext()
        ctx.common_tls_context.tls_certificate_sds_secret_configs.add(name=secret)
        ctx.require_client_certificate.value = require_client
        chain.transport_socket.name = "envoy.transport_sockets.tls"
        chain.transport_socket.typed_config.Pack(ctx)
    return chain


def _listener(direction: int, *chains: listener_components_pb2.FilterChain) -> listener_pb2.Listener:
    lis = listener_pb2.Listener(name="l", traffic_direction=direction)  # type: ignore[arg-type]
    lis.filter_chains.extend(chains)
    return lis


def test_modes() -> None:
    inbound, outbound = base_pb2.INBOUND, base_pb2.OUTBOUND
    assert inbound_mtls_mode([_listener(inbound, _chain("default"))]) == "STRICT"
    assert inbound_mtls_mode([_listener(inbound, _chain("default"), _chain(None))]) == "PERMISSIVE"
    assert inbound_mtls_mode([_listener(inbound, _chain(None)), _listener(outbound, _chain("default"))]) \
        == "DISABLE"
    assert inbound_mtls_mode([_listener(outbound, _chain(None))]) == "-"
    assert inbound_mtls_mode([]) == "-"
    # TLS without a client certificate, or with another certificate, is not mutual TLS with the identity
    assert inbound_mtls_mode([_listener(inbound, _chain("default", require_client=False))]) == "-"
    assert inbound_mtls_mode([_listener(inbound, _chain("kubernetes://cert"), _chain(None))]) == "DISABLE"
    # packed, as the snapshot cache holds them
    packed = any_pb2.Any()
    packed.Pack(_listener(inbound, _chain("default")))
    assert inbound_mtls_mode([packed]) == "STRICT"
