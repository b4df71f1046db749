"""Mesh config ``extensionProviders`` -> Envoy ``ext_authz`` filters (Istio's ``builder/extauthz.go``):
``envoyExtAuthzHttp`` (HTTP chains only) and ``envoyExtAuthzGrpc`` (HTTP and TCP chains). The provider's
``service`` must be a service of the mesh (a Kubernetes Service or ServiceEntry); its outbound cluster
``outbound|<port>||<host>`` carries the checks. The filter runs only for requests a CUSTOM rule matched:
``filter_enabled_metadata`` reads the shadow result the RBAC filter before it wrote.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_authz_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as tcp_authz_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2

from mizzen.config.durations import parse_duration
from mizzen.core import names
from mizzen.core.mesh import ExtensionProvider
from mizzen.core.push_context import PushContext
from mizzen.security.authz import matchers as m

__all__ = ["EXT_AUTHZ_PREFIX", "ProviderError", "enabled_metadata", "http_filter", "tcp_filter"]

EXT_AUTHZ_PREFIX = "istio-ext-authz"
SHADOW_PREFIX = "istio_ext_authz_"


class ProviderError(Exception):
    """A CUSTOM policy's provider is unknown or its service is not in the mesh."""


def find(push: PushContext, name: str) -> ExtensionProvider:
    for p in push.mesh.extension_providers:
        if p.name == name:
            return p
    raise ProviderError(f"available providers are {sorted(p.name for p in push.mesh.extension_providers)} "
                        f"but found {name!r}")


def _cluster(push: PushContext, p: ExtensionProvider, namespace: str) -> tuple[str, str]:
    body = p.body
    service = str(body.get("service", ""))
    host = service.split("/", 1)[1] if "/" in service else service
    host = push.resolve_host(host, namespace)
    port = int(body.get("port", 0))
    if push.service(host) is None:
        raise ProviderError(f"could not find service {service!r} of provider {p.name!r} in the mesh")
    return names.outbound_cluster(port, "", host), host


def _timeout(body: dict[str, Any]) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    seconds = parse_duration(str(body["timeout"])) if body.get("timeout") else None
    d.FromNanoseconds(int((0.6 if seconds is None else seconds) * 1e9))   # Istio's default 600ms
    return d


def _status(body: dict[str, Any]) -> http_status_pb2.HttpStatus:
    return http_status_pb2.HttpStatus(code=int(body.get("statusOnError") or 403))


def enabled_metadata(rbac_filter: str, provider: str) -> metadata_pb2.MetadataMatcher:
    """Run ext_authz only when a CUSTOM rule for ``provider`` matched (the RBAC shadow result)."""
    return metadata_pb2.MetadataMatcher(
        filter=rbac_filter,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=f"{SHADOW_PREFIX}shadow_effective_policy_id")],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(
            prefix=f"{EXT_AUTHZ_PREFIX}-{provider}-")))


def _list(values: Any) -> list[string_pb2.StringMatcher]:
    return [m.string_matcher(str(v), ignore_case=True) for v in (values or ())]


def http_filter(push: PushContext, p: ExtensionProvider, namespace: str, rbac_filter: str) -> Any:
    body = p.body
    cluster, host = _cluster(push, p, namespace)
    cfg = http_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.ApiVersion.V3,
        failure_mode_allow=bool(body.get("failOpen", False)),
        status_on_error=_status(body),
        filter_enabled_metadata=enabled_metadata(rbac_filter, p.name),
    )
    if body.get("includeRequestBodyInCheck"):
        b = dict(body["includeRequestBodyInCheck"])
        cfg.with_request_body.max_request_bytes = int(b.get("maxRequestBytes", 0))
        cfg.with_request_body.allow_partial_message = bool(b.get("allowPartialMessage", False))
        cfg.with_request_body.pack_as_bytes = bool(b.get("packAsBytes", False))
    if p.kind == "envoyExtAuthzGrpc":
        cfg.grpc_service.CopyFrom(grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=host),
            timeout=_timeout(body)))
        return cfg
    port = int(body.get("port", 0))
    http = cfg.http_service
    http.server_uri.CopyFrom(http_uri_pb2.HttpUri(uri=f"http://{host}:{port}", cluster=cluster,
                                                  timeout=_timeout(body)))
    if body.get("pathPrefix"):
        http.path_prefix = str(body["pathPrefix"])
    allowed = _list(body.get("includeRequestHeadersInCheck") or body.get("includeHeadersInCheck"))
    if allowed:
        cfg.allowed_headers.patterns.extend(allowed)
    for k, v in dict(body.get("includeAdditionalHeadersInCheck") or ()).items():
        http.authorization_request.headers_to_add.add(key=str(k), value=str(v))
    up = _list(body.get("headersToUpstreamOnAllow"))
    if up:
        http.authorization_response.allowed_upstream_headers.patterns.extend(up)
    down = _list(body.get("headersToDownstreamOnDeny"))
    if down:
        http.authorization_response.allowed_client_headers.patterns.extend(down)
    down_allow = _list(body.get("headersToDownstreamOnAllow"))
    if down_allow:
        http.authorization_response.allowed_client_headers_on_success.patterns.extend(down_allow)
    return cfg


def tcp_filter(push: PushContext, p: ExtensionProvider, namespace: str, rbac_filter: str) -> Any | None:
    """The network ext_authz filter (gRPC providers only; an HTTP provider is ignored on TCP, as Istio)."""
    if p.kind != "envoyExtAuthzGrpc":
        return None
    body = p.body
    cluster, host = _cluster(push, p, namespace)
    return tcp_authz_pb2.ExtAuthz(
        stat_prefix="tcp.", transport_api_version=config_source_pb2.ApiVersion.V3,
        failure_mode_allow=bool(body.get("failOpen", False)),
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=host),
            timeout=_timeout(body)),
        filter_enabled_metadata=enabled_metadata(rbac_filter, p.name))
