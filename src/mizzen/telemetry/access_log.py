"""Access logs: the mesh config's ``accessLogFile`` / ``accessLogEncoding`` / ``accessLogFormat`` and the
Telemetry API's ``accessLogging`` providers, as Envoy file access loggers with Istio's default formats.

``accessLogFormat`` is a text format for TEXT; for JSON it is a JSON object of keys to command operators,
as in Istio (a bad JSON format falls back to Istio's default keys). Providers other than ``envoy`` write where
the mesh's ``accessLogFile`` points (``/dev/stdout`` when unset); a ``filter.expression`` becomes Envoy's CEL
access-log filter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as data_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from google.protobuf import any_pb2, struct_pb2

from mizzen.core.mesh import MeshConfig

__all__ = ["FILE_ACCESS_LOG", "JSON_LOG_FORMAT", "STDOUT", "TEXT_LOG_FORMAT", "cel_filter", "file_access_log",
           "mesh_access_logs"]

FILE_ACCESS_LOG = "envoy.access_loggers.file"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
STDOUT = "/dev/stdout"

# Istio's default access log formats (pilot/pkg/model/telemetry_logging.go)
TEXT_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
JSON_LOG_FORMAT: Mapping[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def _json_format(text: str) -> Mapping[str, object]:
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed:
            return parsed
    return JSON_LOG_FORMAT


def file_access_log(path: str, encoding: str = "TEXT", fmt: str = "",
                    expression: str = "") -> accesslog_pb2.AccessLog:
    """One Envoy file access log to ``path`` in Istio's TEXT or JSON format (or ``fmt``), optionally behind a
    CEL filter ``expression``."""
    sfs = substitution_format_string_pb2.SubstitutionFormatString()
    if encoding.upper() == "JSON":
        js = struct_pb2.Struct()
        js.update(dict(_json_format(fmt)))
        sfs.json_format.CopyFrom(js)
    else:
        text = fmt or TEXT_LOG_FORMAT
        sfs.text_format_source.inline_string = text if text.endswith("\n") else text + "\n"
    log = accesslog_pb2.AccessLog(name=FILE_ACCESS_LOG,
                                  typed_config=_pack(file_pb2.FileAccessLog(path=path, log_format=sfs)))
    if expression:
        log.filter.CopyFrom(cel_filter(expression))
    return log


def cel_filter(expression: str) -> accesslog_pb2.AccessLogFilter:
    """Envoy's CEL access-log filter: log only when ``expression`` is true."""
    return accesslog_pb2.AccessLogFilter(extension_filter=accesslog_pb2.ExtensionFilter(
        name=CEL_FILTER, typed_config=_pack(cel_pb2.ExpressionFilter(expression=expression))))


def mesh_access_logs(mesh: MeshConfig) -> list[accesslog_pb2.AccessLog]:
    """The mesh config's access log; none when ``accessLogFile`` is unset."""
    if not mesh.access_log_file:
        return []
    return [file_access_log(mesh.access_log_file, mesh.access_log_encoding, mesh.access_log_format)]


def provider_access_log(mesh: MeshConfig, provider: str, expression: str = "") -> accesslog_pb2.AccessLog:
    """A Telemetry ``accessLogging`` provider's log: ``envoy`` is Istio's built-in stdout log; others go where
    the mesh's ``accessLogFile`` points (stdout when unset), in the mesh's encoding and format."""
    path = STDOUT if provider == "envoy" else (mesh.access_log_file or STDOUT)
    return file_access_log(path, mesh.access_log_encoding, mesh.access_log_format, expression)


def at_tcp_end_only(log: accesslog_pb2.AccessLog) -> accesslog_pb2.AccessLog:
    """A copy of ``log`` that skips tcp_proxy's on-connect entry (the stats loggers need
    ``flush_access_log_on_connected``; Istio's TCP access log has one line per connection, at its end)."""
    out = accesslog_pb2.AccessLog()
    out.CopyFrom(log)
    skip = accesslog_pb2.AccessLogFilter(log_type_filter=accesslog_pb2.LogTypeFilter(
        types=[data_pb2.TcpUpstreamConnected], exclude=True))
    if out.HasField("filter"):
        both = accesslog_pb2.AccessLogFilter()
        both.and_filter.filters.extend([out.filter, skip])
        out.filter.CopyFrom(both)
    else:
        out.filter.CopyFrom(skip)
    return out
