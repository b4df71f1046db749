"""HTTP peer-metadata exchange (what Istio's ``istio.metadata_exchange`` and ``x-envoy-peer-metadata`` do),
built from stock Envoy filters so that no request reaches Python.

A client proxy (sidecar outbound, gateway) adds its own labels to each request as ``x-mizzen-peer-<field>``
headers (``envoy.filters.http.header_mutation``, values fixed in the proxy's own LDS); the server sidecar
moves them into dynamic metadata ``mizzen.peer`` and strips them (``envoy.filters.http.header_to_metadata``,
``unknown`` when absent), and adds its own labels to the response, which the client moves and strips the
same way. Both filters go first in the chain, so local replies (fault aborts, RBAC denials, overflow) still
pass the response side and get ``unknown`` defaults.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2

from mizzen.core.workload_labels import PEER_FIELDS, PEER_METADATA, UNKNOWN, PeerLabels

__all__ = ["HEADER_PREFIX", "header_name", "receive_filter", "send_filter"]

HEADER_PREFIX = "x-mizzen-peer-"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
HEADER_TO_METADATA = "envoy.filters.http.header_to_metadata"


def header_name(field: str) -> str:
    return HEADER_PREFIX + field.replace("_", "-")


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def send_filter(me: PeerLabels, on_request: bool) -> hcm_pb2.HttpFilter:
    """Adds this proxy's labels to every request (client side) or response (server side), replacing any the
    app or the peer sent."""
    muts = []
    for k, v in me.fields().items():
        opt = base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=header_name(k), value=v),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
        muts.append(mutation_rules_pb2.HeaderMutation(append=opt))
    m = header_mutation_pb2.Mutations()
    (m.request_mutations if on_request else m.response_mutations).extend(muts)
    return hcm_pb2.HttpFilter(name=HEADER_MUTATION,
                              typed_config=_pack(header_mutation_pb2.HeaderMutation(mutations=m)))


def receive_filter(on_request: bool) -> hcm_pb2.HttpFilter:
    """Moves the peer's headers into dynamic metadata ``mizzen.peer`` (``unknown`` when absent) and removes
    them, from requests (server side) or responses (client side)."""
    rules = []
    for f in PEER_FIELDS:
        rules.append(h2m_pb2.Config.Rule(
            header=header_name(f),
            on_header_present=h2m_pb2.Config.KeyValuePair(metadata_namespace=PEER_METADATA, key=f),
            on_header_missing=h2m_pb2.Config.KeyValuePair(metadata_namespace=PEER_METADATA, key=f,
                                                          value=UNKNOWN),
            remove=True))
    cfg = h2m_pb2.Config()
    (cfg.request_rules if on_request else cfg.response_rules).extend(rules)
    return hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=_pack(cfg))
