"""Fields Mizzen accepts (they are valid Istio) but does not act on yet: kind -> :class:`Unhonoured` entries,
each a field path pattern with the reason, optionally only for some values (``tls.mode: ISTIO_MUTUAL``).
Validation reports each present field as a warning "accepted but not yet honoured by Mizzen: <reason>".
Every other CRD field is honoured or rejected (:mod:`.honoured`); tests keep the two tables complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mizzen.config.errors import Severity
from mizzen.config.model import Config
from mizzen.config.schema import Finding, index_path, key_path

__all__ = ["MESSAGE", "PARTLY", "UNHONOURED", "Unhonoured", "pattern_tokens", "present_paths",
           "unhonoured_findings"]

MESSAGE = "accepted but not yet honoured by Mizzen"
PARTLY = "accepted but only partly honoured by Mizzen"


@dataclass(frozen=True)
class Unhonoured:
    """``pattern``: a field path, ``[*]`` for every list index or map key (the whole subtree is meant).
    ``values``: when set, only these values of the field are unhonoured (the others are honoured); a value
    ending in ``*`` is a prefix (``unix://*``).
    ``partial``: honoured in some places only (``reason`` says where not)."""

    pattern: str
    reason: str
    values: tuple[str, ...] = ()
    partial: bool = False

    def message(self, value: Any) -> str:
        if self.partial:
            return f"{PARTLY}: {self.reason}"
        if self.values:
            return f"{MESSAGE}: {value}: {self.reason}"
        return f"{MESSAGE}: {self.reason}"


# The four places a DestinationRule traffic policy can be: its own, its port-level settings, and the same
# in each subset. Entries below apply to each of them.
POLICY_PATHS = ("spec.trafficPolicy", "spec.trafficPolicy.portLevelSettings[*]",
                "spec.subsets[*].trafficPolicy", "spec.subsets[*].trafficPolicy.portLevelSettings[*]")
TOP_POLICY_PATHS = ("spec.trafficPolicy", "spec.subsets[*].trafficPolicy")

_TCP_PROXY = "applied to HTTP connection pools, not yet to TCP (tcp_proxy) connections"
_POLICY_PARTS = (
    Unhonoured("connectionPool.tcp.idleTimeout", _TCP_PROXY, partial=True),
    Unhonoured("connectionPool.tcp.maxConnectionDuration", _TCP_PROXY, partial=True),
    Unhonoured("connectionPool.http.http2KeepAlive", "HTTP/2 keepalive pings are not configured yet"),
    Unhonoured("loadBalancer.consistentHash.httpCookie.attributes",
               "cookie attributes are not passed to Envoy yet (name, path and ttl are)"),
    Unhonoured("loadBalancer.warmup", "the warmup block is not translated yet (warmupDurationSecs is)"),
    Unhonoured("loadBalancer.backendUtilization", "weighted round robin from backend utilization (ORCA) is "
                                                  "not supported yet"),
    Unhonoured("loadBalancer.zoneAwareLbSetting", "zone-aware load balancing is not supported yet "
                                                  "(localityLbSetting is)"),
    Unhonoured("outlierDetection.consecutiveErrors", "deprecated and ignored, as in Istio (use "
                                                     "consecutive5xxErrors or consecutiveGatewayErrors)"),
    Unhonoured("outlierDetection.outlierDetectionHttpErrorCodes", "custom outlier-detection status codes are "
                                                                  "not translated yet"),
    Unhonoured("tls.credentialName", "honoured at gateways (SDS from the gateway's namespace); at "
                                     "sidecars it needs a workloadSelector, which Mizzen does not support: "
                                     "sidecars skip TLS origination for this policy (plaintext)",
               partial=True),
    Unhonoured("tls.caCrl", "certificate revocation lists are not passed to Envoy yet"),
)
_TOP_POLICY_PARTS = (
    Unhonoured("tunnel", "tunnelling (HTTP CONNECT/POST) to the destination is not supported yet"),
    Unhonoured("proxyProtocol", "sending the PROXY protocol header upstream is not supported yet"),
    Unhonoured("retryBudget", "retry budgets are not translated yet (connectionPool.http.maxRetries is)"),
)

_SERVER_TLS = (
    Unhonoured("tls.mode", "not supported yet; this server is skipped",
               values=("ISTIO_MUTUAL", "AUTO_PASSTHROUGH")),
    Unhonoured("tls.credentialNames", "several credentials per server are not supported yet (use "
                                      "credentialName)"),
    Unhonoured("tls.caCertCredentialName", "not supported yet (the CA comes from credentialName's "
                                           "cacert/ca.crt key or a <credentialName>-cacert Secret)"),
    Unhonoured("tls.tlsCertificates", "several certificates per server are not supported yet (use "
                                      "serverCertificate/privateKey)"),
    Unhonoured("tls.caCrl", "certificate revocation lists are not passed to Envoy yet"),
    Unhonoured("tls.ecdhCurves", "ECDH curves are not passed to Envoy yet (Envoy's defaults apply)"),
    Unhonoured("tls.insecureSkipVerify", "not translated yet"),
)

_UNIX_ENDPOINT = "unix domain socket endpoints are not supported yet; this endpoint is left out"
_CAPTURE = "per-listener capture modes are not supported (local mode has no iptables)"

UNHONOURED: dict[str, tuple[Unhonoured, ...]] = {
    "DestinationRule": (
        *(Unhonoured(f"{base}.{u.pattern}", u.reason, u.values, u.partial) for base in POLICY_PATHS
          for u in _POLICY_PARTS),
        *(Unhonoured(f"{base}.{u.pattern}", u.reason, u.values) for base in TOP_POLICY_PATHS
          for u in _TOP_POLICY_PARTS),
        Unhonoured("spec.workloadSelector", "workload-scoped DestinationRules are not supported yet; this "
                                            "DestinationRule is ignored"),
    ),
    "VirtualService": (
        Unhonoured("spec.http[*].redirect.prefixRewrite", "redirect prefix rewriting is not translated yet "
                                                          "(use redirect.uri)"),
        Unhonoured("spec.tcp[*].match[*].sourceSubnet",
                   "source subnets are not matched yet: the rule applies to every source"),
    ),
    "Gateway": (
        Unhonoured("spec.servers[*].bind",
                   "unix domain socket listeners are not supported yet; this server is not served",
                   values=("unix://*",)),
        Unhonoured("spec.servers[*].defaultEndpoint",
                   "gateway servers forward by route; defaultEndpoint is not used"),
        *(Unhonoured(f"spec.servers[*].{u.pattern}", u.reason, u.values) for u in _SERVER_TLS),
    ),
    "Telemetry": (
        Unhonoured("spec.targetRef", "policy attachment to Gateway API gateways is not supported; use "
                                     "selector"),
        Unhonoured("spec.targetRefs", "policy attachment to Gateway API gateways is not supported; use "
                                      "selector"),
        Unhonoured("spec.metrics[*].reportingInterval", "Envoy counts when a request or connection ends"),
        Unhonoured("spec.metrics[*].overrides[*].match.customMetric", "custom metrics are not defined yet"),
        Unhonoured("spec.metrics[*].overrides[*].tagOverrides[*].value",
                   "tag values are not evaluated (CEL); only REMOVE is applied"),
        Unhonoured("spec.tracing[*].customTags", "custom span tags are not added yet"),
        Unhonoured("spec.tracing[*].disableContextPropagation", "trace context is always propagated"),
        Unhonoured("spec.tracing[*].enableIstioTags", "Istio's span tags are not added yet"),
        Unhonoured("spec.tracing[*].useRequestIdForTraceSampling", "sampling always uses the request id"),
        Unhonoured("spec.tracing[*].providers", "the tracer is the mesh's; a Telemetry sets sampling only"),
    ),
    "Sidecar": (
        Unhonoured("spec.inboundConnectionPool", "inbound connection pools are not applied yet (a "
                                                 "DestinationRule's connectionPool is)"),
        Unhonoured("spec.ingress[*].connectionPool", "inbound connection pools are not applied yet"),
        Unhonoured("spec.ingress[*].tls",
                   "TLS termination on sidecar ingress listeners is not supported yet; the listener serves "
                   "plaintext"),
        Unhonoured("spec.ingress[*].captureMode", _CAPTURE, values=("IPTABLES", "NONE")),
        Unhonoured("spec.egress[*].captureMode", _CAPTURE, values=("IPTABLES", "NONE")),
        Unhonoured("spec.egress[*].bind", "unix domain socket egress listeners are not built yet",
                   values=("unix://*",)),
        Unhonoured("spec.outboundTrafficPolicy.egressProxy", "egress proxies are not supported yet; "
                                                             "ALLOW_ANY traffic goes out directly"),
    ),
    "ServiceEntry": (
        Unhonoured("spec.endpoints[*].network", "multi-network meshes are not supported yet"),
        Unhonoured("spec.endpoints[*].address", _UNIX_ENDPOINT, values=("unix://*",)),
    ),
    "WorkloadEntry": (
        Unhonoured("spec.network", "multi-network meshes are not supported yet"),
        Unhonoured("spec.address", _UNIX_ENDPOINT, values=("unix://*",)),
    ),
}

_TOKEN = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\*|\d+)\]")


def pattern_tokens(pattern: str) -> list[str]:
    """``spec.http[*].mirrors`` -> ``["spec", "http", "[*]", "mirrors"]``."""
    return [m.group(1) if m.group(1) is not None else f"[{m.group(2)}]" for m in _TOKEN.finditer(pattern)]


def _matches(value: Any, tokens: list[str], path: str, out: list[tuple[str, Any]]) -> None:
    if not tokens:
        if value is not None:
            out.append((path, value))
        return
    head, rest = tokens[0], tokens[1:]
    if head == "[*]":
        if isinstance(value, list):
            for i, item in enumerate(value):
                _matches(item, rest, index_path(path, i), out)
        elif isinstance(value, dict):
            for k, item in value.items():
                _matches(item, rest, key_path(path, str(k)), out)
    elif head.startswith("["):
        i = int(head[1:-1])
        if isinstance(value, list) and i < len(value):
            _matches(value[i], rest, index_path(path, i), out)
    elif isinstance(value, dict) and head in value:
        _matches(value[head], rest, key_path(path, head), out)


def present_values(config: Config, pattern: str) -> list[tuple[str, Any]]:
    """(concrete path, value) of every field of ``config`` matching ``pattern``."""
    tokens = pattern_tokens(pattern)
    if not tokens or tokens[0] != "spec":
        return []
    out: list[tuple[str, Any]] = []
    _matches(dict(config.spec), tokens[1:], "spec", out)
    return out


def present_paths(config: Config, pattern: str) -> list[str]:
    """Paths of ``config`` matching ``pattern`` ("spec.http[*].mirrors" -> "spec.http[1].mirrors")."""
    return [p for p, _ in present_values(config, pattern)]


def _value_matches(want: str, value: Any) -> bool:
    text = str(value)
    return text.startswith(want[:-1]) if want.endswith("*") else text == want


def unhonoured_findings(config: Config) -> list[Finding]:
    """One warning per present unhonoured field (with a matching value, for value-specific entries)."""
    out: list[Finding] = []
    for entry in UNHONOURED.get(config.kind, ()):
        for path, value in present_values(config, entry.pattern):
            if entry.values and not any(_value_matches(v, value) for v in entry.values):
                continue
            out.append(Finding(path, entry.message(value), Severity.WARNING))
    return out
