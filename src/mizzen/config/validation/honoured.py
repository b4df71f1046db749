"""The other half of :mod:`.unhonoured`: CRD fields the translation (mizzen.core, mizzen.registry) acts on
(:data:`HONOURED`) and fields validation always refuses, as Istio does (:data:`REJECTED`). Together with
UNHONOURED they cover every leaf field of each kind's CRD schema; tests/config/test_config_honoured.py
walks the schemas and fails on any field in none of them. Patterns cover the field and everything under it.
"""

from __future__ import annotations

from mizzen.config.validation.unhonoured import POLICY_PATHS

__all__ = ["HONOURED", "KINDS", "REJECTED"]

KINDS = ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Sidecar",
         "PeerAuthentication", "Telemetry")

# Relative to each DestinationRule traffic policy (POLICY_PATHS): core.policy / core.cluster_policy /
# core.endpoints (locality LB) / core.http_route (consistent-hash route hash policies).
_POLICY = (
    "connectionPool.http.h2UpgradePolicy", "connectionPool.http.http1MaxPendingRequests",
    "connectionPool.http.http2MaxRequests", "connectionPool.http.idleTimeout",
    "connectionPool.http.maxConcurrentStreams", "connectionPool.http.maxRequestsPerConnection",
    "connectionPool.http.maxRetries", "connectionPool.http.useClientProtocol",
    "connectionPool.tcp",                       # connectTimeout, idleTimeout, maxConnectionDuration,
                                                # maxConnections, tcpKeepalive
    "loadBalancer.simple", "loadBalancer.warmupDurationSecs", "loadBalancer.localityLbSetting",
    "loadBalancer.consistentHash.httpCookie.name", "loadBalancer.consistentHash.httpCookie.path",
    "loadBalancer.consistentHash.httpCookie.ttl", "loadBalancer.consistentHash.httpHeaderName",
    "loadBalancer.consistentHash.httpQueryParameterName", "loadBalancer.consistentHash.useSourceIp",
    "loadBalancer.consistentHash.maglev", "loadBalancer.consistentHash.ringHash",
    "loadBalancer.consistentHash.minimumRingSize",
    "outlierDetection.baseEjectionTime", "outlierDetection.consecutive5xxErrors",
    "outlierDetection.consecutiveGatewayErrors", "outlierDetection.consecutiveLocalOriginFailures",
    "outlierDetection.interval", "outlierDetection.maxEjectionPercent", "outlierDetection.minHealthPercent",
    "outlierDetection.splitExternalLocalOriginErrors",
    # core.mtls: client TLS (DISABLE / SIMPLE / MUTUAL from files / ISTIO_MUTUAL with SDS, auto mTLS)
    "tls.mode", "tls.caCertificates", "tls.clientCertificate", "tls.privateKey", "tls.sni",
    "tls.subjectAltNames", "tls.insecureSkipVerify",
    "tls.credentialName",   # at gateways: SDS from a Secret (core.upstream_credentials); not at sidecars
)

HONOURED: dict[str, tuple[str, ...]] = {
    "Gateway": (
        "spec.selector",                          # push_context.gateways_for
        "spec.servers[*].bind", "spec.servers[*].hosts", "spec.servers[*].name",
        "spec.servers[*].port.name", "spec.servers[*].port.number", "spec.servers[*].port.protocol",
        # gateway_listeners / filters.downstream_tls_context (certificate files), gateway_routes (redirect)
        "spec.servers[*].tls.mode", "spec.servers[*].tls.httpsRedirect",
        "spec.servers[*].tls.serverCertificate", "spec.servers[*].tls.privateKey",
        "spec.servers[*].tls.credentialName",   # SDS from a Secret (core.sds, core.gateway_credentials)
        "spec.servers[*].tls.caCertificates", "spec.servers[*].tls.subjectAltNames",
        "spec.servers[*].tls.verifyCertificateHash", "spec.servers[*].tls.verifyCertificateSpki",
        "spec.servers[*].tls.cipherSuites", "spec.servers[*].tls.minProtocolVersion",
        "spec.servers[*].tls.maxProtocolVersion",
    ),
    "VirtualService": (
        "spec.hosts", "spec.gateways", "spec.exportTo",       # push_context, routes, gateway_routes
        "spec.http[*].name", "spec.http[*].match",            # http_route, http_match (all match fields)
        "spec.http[*].route", "spec.http[*].redirect.uri", "spec.http[*].redirect.authority",
        "spec.http[*].redirect.port", "spec.http[*].redirect.derivePort", "spec.http[*].redirect.scheme",
        "spec.http[*].redirect.redirectCode", "spec.http[*].directResponse", "spec.http[*].delegate",
        "spec.http[*].rewrite", "spec.http[*].timeout", "spec.http[*].retries", "spec.http[*].headers",
        "spec.http[*].mirror", "spec.http[*].mirrors", "spec.http[*].mirrorPercent",
        "spec.http[*].mirror_percent", "spec.http[*].mirrorPercentage",
        "spec.http[*].fault.abort.httpStatus", "spec.http[*].fault.abort.grpcStatus",
        "spec.http[*].fault.abort.percentage", "spec.http[*].fault.delay.fixedDelay",
        "spec.http[*].fault.delay.percent", "spec.http[*].fault.delay.percentage",
        "spec.http[*].corsPolicy",                            # http_filter_config
        # listeners (sidecar) / gateway_listeners: as Istio, gateways read only port and gateways of a match
        "spec.tcp[*].route", "spec.tcp[*].match[*].port", "spec.tcp[*].match[*].gateways",
        "spec.tcp[*].match[*].sourceLabels", "spec.tcp[*].match[*].sourceNamespace",
        "spec.tcp[*].match[*].destinationSubnets",
        "spec.tls[*].route", "spec.tls[*].match",
    ),
    "DestinationRule": (
        "spec.host", "spec.exportTo", "spec.subsets[*].name", "spec.subsets[*].labels",
        "spec.trafficPolicy.portLevelSettings[*].port",
        "spec.subsets[*].trafficPolicy.portLevelSettings[*].port",
        *(f"{base}.{part}" for base in POLICY_PATHS for part in _POLICY),
    ),
    "ServiceEntry": (
        # registry.convert: services_from_service_entry / inline_workloads
        "spec.hosts", "spec.addresses", "spec.ports", "spec.location", "spec.resolution", "spec.exportTo",
        "spec.workloadSelector",
        "spec.endpoints[*].address", "spec.endpoints[*].ports", "spec.endpoints[*].labels",
        "spec.endpoints[*].locality", "spec.endpoints[*].weight",
        "spec.endpoints[*].serviceAccount", "spec.subjectAltNames",     # core.mtls: the SAN list
    ),
    "WorkloadEntry": (
        "spec.address", "spec.ports", "spec.labels", "spec.locality", "spec.weight",   # convert
        "spec.serviceAccount",                                                         # core.mtls SANs
    ),
    "Sidecar": (
        "spec.workloadSelector",                                  # push_context.sidecar_for
        "spec.egress[*].hosts", "spec.egress[*].bind", "spec.egress[*].port.number",
        "spec.egress[*].port.name", "spec.egress[*].port.protocol",
        "spec.egress[*].captureMode",                             # DEFAULT only (others unhonoured)
        "spec.ingress[*].port.number", "spec.ingress[*].port.name", "spec.ingress[*].port.protocol",
        "spec.ingress[*].bind", "spec.ingress[*].defaultEndpoint",
        "spec.ingress[*].captureMode",                            # DEFAULT only
        "spec.outboundTrafficPolicy.mode",
    ),
    "PeerAuthentication": (
        "spec.selector", "spec.mtls", "spec.portLevelMtls",       # core.peer_authn, core.inbound_mtls
    ),
    "Telemetry": (                                                # mizzen.telemetry.api / plugin
        "spec.selector.matchLabels",
        "spec.accessLogging[*].disabled", "spec.accessLogging[*].filter.expression",
        "spec.accessLogging[*].match.mode", "spec.accessLogging[*].providers[*].name",
        "spec.metrics[*].providers[*].name", "spec.metrics[*].overrides[*].disabled",
        "spec.metrics[*].overrides[*].match.metric", "spec.metrics[*].overrides[*].match.mode",
        "spec.metrics[*].overrides[*].tagOverrides[*].operation",     # REMOVE; UPSERT's value is not
        "spec.tracing[*].randomSamplingPercentage", "spec.tracing[*].match.mode",
        "spec.tracing[*].disableSpanReporting",                       # sampling 0
    ),
}

# Fields whose every use validation refuses (Istio's own rules): pattern -> the error it gives.
REJECTED: dict[str, dict[str, str]] = {
    "Gateway": {"spec.servers[*].port.targetPort": "targetPort has no impact on Gateways"},
    "VirtualService": {
        "spec.http[*].fault.abort.http2Error": "HTTP/2 abort fault injection not supported yet",
        "spec.http[*].fault.delay.exponentialDelay": "exponentialDelay not supported yet",
    },
    "Sidecar": {
        "spec.egress[*].port.targetPort": "targetPort has no impact on Sidecars",
        "spec.ingress[*].port.targetPort": "targetPort has no impact on Sidecars",
    },
}
