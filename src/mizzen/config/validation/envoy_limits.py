"""Limits and syntax Envoy 1.40 enforces on the config Mizzen generates, where Istio's validation accepts
what Envoy would then reject (NACK): RE2 program size, the command operators allowed in header values
(``%REQ(x)%``), header name/value size, whole-label SNI wildcards, ring-hash size, direct-response body size
and Go's duration range.
Each table here was checked against the real binary (tests/config/test_config_envoy_limits.py).
"""

from __future__ import annotations

import re

import re2

__all__ = [
    "ARG_COMMANDS",
    "CIPHER_SUITES",
    "COMMANDS",
    "MAX_DIRECT_RESPONSE_BODY",
    "MAX_DURATION_S",
    "MAX_HEADER_BYTES",
    "MAX_RING_SIZE",
    "OPTIONAL_ARG_COMMANDS",
    "RE2_MAX_PROGRAM_SIZE",
    "cipher_suite_error",
    "header_value_error",
    "re2_program_size",
    "sni_error",
]

# Envoy's runtime ``re2.max_program_size.error_level`` default: a larger regex fails the whole resource.
RE2_MAX_PROGRAM_SIZE = 100
# RingHashLbConfig.minimum_ring_size: lte 8388608 (8M).
MAX_RING_SIZE = 8388608
# What Mizzen's route configurations allow (max_direct_response_body_size_bytes, as Istio: 1 MiB).
MAX_DIRECT_RESPONSE_BODY = 1024 * 1024
# HeaderValue.key and .value: max_bytes 16384 (config.core.v3.HeaderValue); a larger one fails the route.
MAX_HEADER_BYTES = 16384
# Go's time.Duration (int64 nanoseconds), which Istio parses durations into.
MAX_DURATION_S = (2**63 - 1) / 1e9

# Istio's valid cipher suites (security.ValidCipherSuites): Istio drops others with a warning; Envoy, given
# one it does not know, rejects the whole listener.
CIPHER_SUITES = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
})

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def re2_program_size(pattern: str) -> int | None:
    """RE2's program size of ``pattern`` (what Envoy compares with its limit); None if it does not compile."""
    try:
        return int(re2.compile(pattern, _RE2_OPTIONS).programsize)
    except re2.error:
        return None


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Command operators Envoy 1.40 accepts in header values without an argument (``%START_TIME%``).
COMMANDS = _words("""
ACCESS_LOG_TYPE BYTES_RECEIVED BYTES_RETRANSMITTED BYTES_SENT CONNECTION_ID CONNECTION_TERMINATION_DETAILS
CUSTOM_FLAGS DOWNSTREAM_CX_RTT DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED
DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_SENT DOWNSTREAM_DETECTED_CLOSE_TYPE DOWNSTREAM_DIRECT_LOCAL_ADDRESS
DOWNSTREAM_DIRECT_LOCAL_ADDRESS_ENDPOINT_ID DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT
DOWNSTREAM_DIRECT_LOCAL_PORT DOWNSTREAM_DIRECT_REMOTE_ADDRESS DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT
DOWNSTREAM_DIRECT_REMOTE_PORT DOWNSTREAM_HANDSHAKE_DURATION DOWNSTREAM_HEADER_BYTES_RECEIVED
DOWNSTREAM_HEADER_BYTES_SENT DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS_ENDPOINT_ID
DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_LOCAL_CLOSE_REASON DOWNSTREAM_LOCAL_DNS_SAN
DOWNSTREAM_LOCAL_EMAIL_SAN DOWNSTREAM_LOCAL_IP_SAN DOWNSTREAM_LOCAL_OTHERNAME_SAN DOWNSTREAM_LOCAL_PORT
DOWNSTREAM_LOCAL_SUBJECT DOWNSTREAM_LOCAL_URI_SAN DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CERT_V_END
DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1 DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256
DOWNSTREAM_PEER_CHAIN_SERIALS DOWNSTREAM_PEER_DNS_SAN DOWNSTREAM_PEER_EMAIL_SAN DOWNSTREAM_PEER_FINGERPRINT_1
DOWNSTREAM_PEER_FINGERPRINT_256 DOWNSTREAM_PEER_IP_SAN DOWNSTREAM_PEER_ISSUER
DOWNSTREAM_PEER_ISSUER_FINGERPRINT_256 DOWNSTREAM_PEER_ISSUER_SERIAL DOWNSTREAM_PEER_OTHERNAME_SAN
DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_SUBJECT DOWNSTREAM_PEER_URI_SAN DOWNSTREAM_REMOTE_ADDRESS
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT DOWNSTREAM_REMOTE_PORT DOWNSTREAM_TLS_CIPHER DOWNSTREAM_TLS_GROUP
DOWNSTREAM_TLS_SESSION_ID DOWNSTREAM_TLS_VERSION DOWNSTREAM_TRANSPORT_FAILURE_REASON
DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_WIRE_BYTES_SENT DURATION EMIT_TIME EMIT_TIME_LOCAL FILTER_CHAIN_NAME
GRPC_STATUS GRPC_STATUS_NUMBER HOSTNAME LOCAL_REPLY_BODY PACKETS_RETRANSMITTED PATH PROTOCOL QUERY_PARAMS
REQUESTED_SERVER_NAME REQUEST_DURATION REQUEST_HEADERS_BYTES REQUEST_TX_DURATION RESPONSE_CODE
RESPONSE_CODE_DETAILS RESPONSE_DURATION RESPONSE_FLAGS RESPONSE_FLAGS_LONG RESPONSE_HEADERS_BYTES
RESPONSE_TRAILERS_BYTES RESPONSE_TX_DURATION ROUNDTRIP_DURATION ROUTE_NAME ROUTE_RESOLUTION_COUNT
ROUTE_RESOLUTION_TIME_US START_TIME START_TIME_LOCAL STREAM_ID TRACE_ID UNIQUE_ID UPSTREAM_CLUSTER
UPSTREAM_CLUSTER_RAW UPSTREAM_CONNECTION_ID UPSTREAM_CONNECTION_IDS_ATTEMPTED
UPSTREAM_CONNECTION_POOL_READY_DURATION UPSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED
UPSTREAM_DECOMPRESSED_HEADER_BYTES_SENT UPSTREAM_DETECTED_CLOSE_TYPE UPSTREAM_HEADER_BYTES_RECEIVED
UPSTREAM_HEADER_BYTES_SENT UPSTREAM_HOST UPSTREAM_HOSTS_ATTEMPTED UPSTREAM_HOSTS_ATTEMPTED_WITHOUT_PORT
UPSTREAM_HOST_NAME UPSTREAM_HOST_NAMES_ATTEMPTED UPSTREAM_HOST_NAMES_ATTEMPTED_WITHOUT_PORT
UPSTREAM_HOST_NAME_WITHOUT_PORT UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT
UPSTREAM_LOCAL_CLOSE_REASON UPSTREAM_LOCAL_DNS_SAN UPSTREAM_LOCAL_IP_SAN UPSTREAM_LOCAL_PORT
UPSTREAM_LOCAL_URI_SAN UPSTREAM_PEER_CERT UPSTREAM_PEER_CERT_V_END UPSTREAM_PEER_CERT_V_START
UPSTREAM_PEER_DNS_SAN UPSTREAM_PEER_IP_SAN UPSTREAM_PEER_ISSUER UPSTREAM_PEER_SUBJECT UPSTREAM_PEER_URI_SAN
UPSTREAM_PROTOCOL UPSTREAM_REMOTE_ADDRESS UPSTREAM_REMOTE_ADDRESS_ENDPOINT_ID
UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT UPSTREAM_REMOTE_PORT UPSTREAM_REQUEST_ATTEMPT_COUNT UPSTREAM_SERVER_NAME
UPSTREAM_TLS_CIPHER UPSTREAM_TLS_GROUP UPSTREAM_TLS_SESSION_ID UPSTREAM_TLS_VERSION
UPSTREAM_TRANSPORT_FAILURE_REASON UPSTREAM_WIRE_BYTES_RECEIVED UPSTREAM_WIRE_BYTES_SENT VIRTUAL_CLUSTER_NAME
""")

# Of COMMANDS, those that also take an argument (a time format, an option such as ``%PATH(WQ)%``, ...).
OPTIONAL_ARG_COMMANDS = _words("""
DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT
DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_PEER_CERT_V_END DOWNSTREAM_PEER_CERT_V_START
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT EMIT_TIME EMIT_TIME_LOCAL GRPC_STATUS PATH QUERY_PARAMS
REQUESTED_SERVER_NAME RESPONSE_CODE_DETAILS START_TIME START_TIME_LOCAL UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT
UPSTREAM_PEER_CERT_V_END UPSTREAM_PEER_CERT_V_START UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT
""")

# Command operators that need an argument: ``%REQ(x-user)%``, ``%UPSTREAM_METADATA(["istio","x"])%``.
ARG_COMMANDS = _words("""
CEL CLUSTER_METADATA COMMON_DURATION DYNAMIC_METADATA ENVIRONMENT FILTER_STATE METADATA QUERY_PARAM REQ
REQUEST_HEADER RESP RESPONSE_HEADER RESPONSE_TRAILER STREAM_INFO_REQ TRAILER UPSTREAM_FILTER_STATE
UPSTREAM_METADATA
""")

# Envoy's substitution-format grammar for one command: %NAME%, %NAME(args)%, %NAME(args):maxlen%.
_COMMAND = re.compile(r"%([A-Z0-9_]+)(\([^)]*\))?(:[0-9]+)?%")


def header_value_error(value: str) -> str | None:
    """Why Envoy would refuse ``value`` as a header value to add (at most 16 KiB; ``%`` must start a command
    or be ``%%``)."""
    size = len(value.encode())
    if size > MAX_HEADER_BYTES:
        return (f"header value of {size} bytes is too long: Envoy allows at most {MAX_HEADER_BYTES} bytes "
                "(16 KiB)")
    i = 0
    while True:
        i = value.find("%", i)
        if i < 0:
            return None
        if value.startswith("%%", i):
            i += 2
            continue
        m = _COMMAND.match(value, i)
        if m is None:
            return (f"header value {value!r}: '%' at position {i} does not start an Envoy command such as "
                    "%REQ(x-user)% (write %% for a literal %)")
        name, args = m.group(1), m.group(2)
        if name in ARG_COMMANDS:
            if args is None:
                return f"header value {value!r}: Envoy command %{name}% needs an argument, e.g. %{name}(x)%"
        elif name not in COMMANDS:
            return f"header value {value!r}: %{name}% is not an Envoy command"
        elif args is not None and name not in OPTIONAL_ARG_COMMANDS:
            return f"header value {value!r}: Envoy command %{name}% takes no argument"
        i = m.end()


def cipher_suite_error(suite: str) -> str | None:
    """Why ``suite`` would break the listener (``[A|B]`` equal-preference groups are BoringSSL syntax)."""
    names = suite[1:-1].split("|") if suite.startswith("[") and suite.endswith("]") else [suite]
    bad = [n for n in names if n not in CIPHER_SUITES]
    if not bad:
        return None
    return (f'cipher suite "{bad[0]}" is not valid (Istio ignores it, but passed on, Envoy would reject the '
            "whole listener); valid: " + ", ".join(sorted(CIPHER_SUITES)))


def sni_error(host: str) -> str | None:
    """Why Envoy would refuse ``host`` as a TLS server name to match: only ``*.`` whole-label wildcards."""
    if host == "*":
        return None     # Mizzen matches every server name then (no server_names)
    if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
        return (f'SNI host "{host}" has a partial wildcard: Envoy matches server names only with a whole '
                'first label wildcard (e.g. "*.example.com")')
    return None
