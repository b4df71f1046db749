"""HTTP peer-metadata exchange (what Istio's ``istio.metadata_exchange`` and ``x-envoy-peer-metadata`` do),
built from stock Envoy filters so that no request reaches Python.

A client proxy (sidecar outbound, gateway) adds its own labels to each request as one header,
``x-mizzen-peer-metadata``: the peer fields' values in a fixed order, escaped and joined by ``,`` (Istio's
header is a base64 serialized struct; ours is a quarter of its size, which both codecs pay per request),
fixed in the proxy's own LDS (the HTTP connection manager's early header mutation, before any filter runs:
cheaper than the ``envoy.filters.http.header_mutation`` filter, which :func:`send_filter` still builds).

The server sidecar keeps the header's string, unparsed, in the request's filter state ``mizzen.peer``
(``envoy.filters.http.set_filter_state``: ~7k instructions per request pair less than moving it into
dynamic metadata with ``header_to_metadata``), and its router strips the header before the request reaches
the app (the inbound route configuration's ``request_headers_to_remove``; the agent's bootstrap makes the
header one of Envoy's inline, O(1), request headers); an absent header leaves the
string empty, which the agent reports as ``unknown`` labels. The stats loggers put the string
(:data:`PEER_OPERATOR`) into their one packed tag and the agent decodes it when it serves Prometheus text
(:mod:`mizzen.telemetry.packed`): nothing is decoded or parsed per request. Responses carry no header: the
client reads its destination's labels from the chosen endpoint's metadata (EDS), which costs no filter, no
header and no parse on either side.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.core.v3 import extension_pb2 as core_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from google.protobuf import any_pb2

from mizzen.core import workload_labels
from mizzen.core.workload_labels import PEER_KEY, PEER_METADATA, PeerLabels

__all__ = ["HEADER", "METADATA_KEY", "PEER_OPERATOR", "decode", "decode_or_empty", "early_send", "encode",
           "escape", "receive_filter", "send_filter", "unescape"]

HEADER = "x-mizzen-peer-metadata"
METADATA_KEY = PEER_KEY
HEADER_MUTATION = "envoy.filters.http.header_mutation"
# the filter state object the server's receive filter keeps the peer's header string in (a plain string,
# Envoy's ``envoy.string`` factory), read by the stats loggers with one command operator
STATE_KEY = PEER_METADATA
EARLY_HEADER_MUTATION = "envoy.http.early_header_mutation.header_mutation"


escape, unescape = workload_labels.escape, workload_labels.unescape


def encode(fields: Mapping[str, str]) -> str:
    """The header value for ``fields``: the peer fields' values in :data:`PEER_FIELDS` order, escaped, joined
    by ``,`` (a field not given is empty; ``core.workload_labels.encode_peer``, which EDS endpoints carry
    too). Short on purpose: every byte of it is encoded and parsed by both proxies' HTTP codecs on every
    request."""
    return workload_labels.encode_peer(fields)


def decode(header: str) -> dict[str, str]:
    """The fields a header value carries; ValueError when it is not one."""
    return workload_labels.decode_peer(header)


def decode_or_empty(header: str) -> dict[str, str]:
    """The fields a header value carries; none when it is not one (only a caller outside the mesh can send
    such a header: its peer labels are then empty)."""
    try:
        return decode(header)
    except ValueError:
        return {}


# the command operator of the peer's header string the receiving side kept in the filter state
PEER_OPERATOR = f"%FILTER_STATE({STATE_KEY}:PLAIN)%"


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def early_send(me: PeerLabels) -> core_pb2.TypedExtensionConfig:
    """Adds this proxy's labels to every request, replacing any the app sent, as the HTTP connection
    manager's early header mutation (before any filter runs): what :func:`send_filter` does on requests,
    for less (no filter in the chain)."""
    mutation = early_pb2.HeaderMutation(mutations=[mutation_rules_pb2.HeaderMutation(append=_own_header(me))])
    return core_pb2.TypedExtensionConfig(name=EARLY_HEADER_MUTATION, typed_config=_pack(mutation))


def _own_header(me: PeerLabels) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=HEADER, value=encode(me.fields())),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def send_filter(me: PeerLabels, on_request: bool) -> hcm_pb2.HttpFilter:
    """Adds this proxy's labels to every request (client side) or response (server side), replacing any the
    app or the peer sent."""
    opt = _own_header(me)
    m = header_mutation_pb2.Mutations()
    (m.request_mutations if on_request else m.response_mutations).append(
        mutation_rules_pb2.HeaderMutation(append=opt))
    return hcm_pb2.HttpFilter(name=HEADER_MUTATION,
                              typed_config=_pack(header_mutation_pb2.HeaderMutation(mutations=m)))


STRING_FACTORY = "envoy.string"
SET_FILTER_STATE = "envoy.filters.http.set_filter_state"


def receive_filter() -> hcm_pb2.HttpFilter:
    """Keeps the peer's header (its string: decoding waits for a scrape) in the request's filter state
    :data:`STATE_KEY` (``envoy.filters.http.set_filter_state``); nothing when it is absent (the agent reports
    ``unknown`` labels for an empty string). It does not remove the header: the chain's router does
    (:data:`HEADER` in the inline route configuration's ``request_headers_to_remove``, cheaper than a filter),
    so the app never sees it."""
    value = value_pb2.FilterStateValue(
        object_key=STATE_KEY, factory_key=STRING_FACTORY, read_only=True, skip_if_empty=True,
        format_string=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=f"%REQ({HEADER})%"), omit_empty_values=True))
    return hcm_pb2.HttpFilter(name=SET_FILTER_STATE,
                              typed_config=_pack(set_filter_state_pb2.Config(on_request_headers=[value])))
