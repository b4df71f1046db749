"""Gateway-side analyzers: IST0132 (a VirtualService bound to a Gateway none of whose server hosts it
matches), IST0145 (Gateways selecting the same workloads with the same host on the same port), IST0162 (a
server port the gateway's Service does not expose), IST0101/IST0161 (a ``credentialName`` Secret missing or
without a usable certificate) and IST0138 (two Gateways on the same workloads serving the same certificate).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config import credentials
from mizzen.config.model import Config
from mizzen.core.hosts import hosts_intersect
from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

__all__ = ["conflicting_gateways", "gateway_credentials", "gateway_ports_on_services",
           "secret_has_certificate", "virtual_service_hosts_in_gateway"]


def _server_hosts(gw: Config, vs_namespace: str) -> Iterator[str]:
    """The server hosts of ``gw`` a VirtualService in ``vs_namespace`` may bind (``ns/host`` honoured)."""
    for server in gw.spec.get("servers") or ():
        for h in (server or {}).get("hosts") or ():
            ns, sep, host = str(h).rpartition("/")
            if not sep or ns == "*" or ns == vs_namespace or (ns == "." and gw.namespace == vs_namespace):
                yield host


def virtual_service_hosts_in_gateway(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for vs in ctx.configs.list("VirtualService"):
        vs_hosts = [str(h) for h in vs.spec.get("hosts") or ()]
        for ref in vs.spec.get("gateways") or ():
            full = resolve_gateway_ref(str(ref), vs.namespace)
            if full == MESH_GATEWAY:
                continue
            ns, _, name = full.partition("/")
            gw = ctx.configs.get("Gateway", ns, name)
            if gw is None:
                continue   # IST0101
            server_hosts = list(_server_hosts(gw, vs.namespace))
            missing = [h for h in vs_hosts
                       if not any(hosts_intersect(h, s) or hosts_intersect(ctx.resolve(h, vs.namespace), s)
                                  for s in server_hosts)]
            if missing:
                out.append(issue_for(
                    "IST0132", vs, "spec.hosts",
                    f"one or more host [{' '.join(missing)}] defined in VirtualService "
                    f"{vs.namespace}/{vs.name} not found in Gateway {gw.namespace}/{gw.name}."))
    return out


def _selector_text(selector: Mapping[str, Any]) -> str:
    """Kubernetes' label selector string: ``k=v`` pairs sorted by key, comma-separated."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _selector_of(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",") if "=" in pair)


def conflicting_gateways(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0145 (Istio's ConflictingGatewayAnalyzer): Gateways with the same selector (or selectors one
    contains and some known workload matches both) that declare the same host with the same bind on the same
    port. Reported once per Gateway, naming every Gateway it conflicts with."""
    gateways = list(ctx.configs.list("Gateway"))
    # (selector, port) -> gateway "ns/name" -> host -> bind (the last server with that port, as Istio)
    index: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
    for gw in gateways:
        sel = _selector_text(gw.spec.get("selector") or {})
        for server in gw.spec.get("servers") or ():
            port = int(((server or {}).get("port") or {}).get("number") or 0)
            bind = str((server or {}).get("bind") or "")
            index.setdefault((sel, port), {})[f"{gw.namespace}/{gw.name}"] = \
                {str(h): bind for h in (server or {}).get("hosts") or ()}
    out: list[AnalysisIssue] = []
    for gw in gateways:
        name = f"{gw.namespace}/{gw.name}"
        sel = _selector_text(gw.spec.get("selector") or {})
        same = [key for key in index if key[0] == sel or ((key[0] in sel or sel in key[0]) and any(
            labels_match(_selector_of(key[0]), w.labels) and labels_match(_selector_of(sel), w.labels)
            for w in ctx.gateway_workloads or ()))]
        others: set[str] = set()
        ports: list[str] = []
        hosts: list[str] = []
        for server in gw.spec.get("servers") or ():
            port = int(((server or {}).get("port") or {}).get("number") or 0)
            bind = str((server or {}).get("bind") or "")
            server_hosts = [str(h) for h in (server or {}).get("hosts") or ()]
            hit = {other for key in same if key[1] == port for other, known in index[key].items()
                   if other != name and any(known.get(h) == bind for h in server_hosts)}
            if hit:
                others |= hit
                ports.append(str(port))
                hosts.extend(h for h in server_hosts if h not in hosts)
        if others:
            out.append(issue_for(
                "IST0145", gw, "spec.servers",
                f"Conflict with gateways {','.join(sorted(others))} (workload selector {sel}, port "
                f"{','.join(dict.fromkeys(ports))}, hosts {','.join(hosts)})."))
    return out


def gateway_ports_on_services(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0162 (Istio's IngressGatewayPortAnalyzer): a Gateway server port that the Kubernetes Service in
    front of the gateway's workloads neither exposes nor targets. Mizzen's local gateways have no Service
    (their port map plays its part), so only gateways with a Service selecting their workloads are checked."""
    out: list[AnalysisIssue] = []
    services = list(ctx.configs.list("Service"))
    for gw in ctx.configs.list("Gateway"):
        target_ports: set[int] = set()
        mapped: set[int] = set()
        fronted = False
        for pod in ctx.gateway_pods(gw):
            for svc in services:
                selector = svc.spec.get("selector") or {}
                if svc.namespace != pod.namespace or not selector or not labels_match(selector, pod.labels):
                    continue
                fronted = True
                for p in svc.spec.get("ports") or ():
                    if str(p.get("protocol") or "TCP") != "TCP" or not isinstance(p.get("port"), int):
                        continue
                    tp = p.get("targetPort")
                    if isinstance(tp, int) and tp:
                        target_ports.add(tp)
                        mapped.add(int(p["port"]))
                    else:
                        target_ports.add(int(p["port"]))
        if not fronted:
            continue
        sel = _selector_text(gw.spec.get("selector") or {})
        for i, server in enumerate(gw.spec.get("servers") or ()):
            port = ((server or {}).get("port") or {}).get("number")
            if isinstance(port, int) and port not in target_ports and port not in mapped:
                out.append(issue_for(
                    "IST0162", gw, f"spec.servers[{i}].port",
                    f"The gateway is listening on a target port (port {port}) that is not defined in the "
                    f"Service associated with its workload instances (Pod selector {sel}). If you need to "
                    "access the gateway port through the gateway Service, it will not be available."))
    return out


def gateway_credentials(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0101 / IST0161 (Istio's SecretAnalyzer): a server's ``credentialName`` names a Secret in the
    namespace of the gateway's workloads; a missing one is IST0101, one without a usable PEM certificate
    (``tls.crt``/``tls.key``, or ``cert``/``key``) IST0161. Only when the gateway workloads are known."""
    if ctx.gateway_workloads is None:
        return []
    out: list[AnalysisIssue] = []
    for gw in ctx.configs.list("Gateway"):
        pods = ctx.gateway_pods(gw)
        if not pods:
            continue   # IST0101 selector (references.gateway_selectors)
        ns = pods[0].namespace
        for i, server in enumerate(gw.spec.get("servers") or ()):
            cn = str(((server or {}).get("tls") or {}).get("credentialName") or "")
            if not cn:
                continue
            secret = ctx.configs.get("Secret", ns, cn)
            path = f"spec.servers[{i}].tls.credentialName"
            if secret is None:
                out.append(issue_for("IST0101", gw, path, f'Referenced credentialName not found: "{cn}"'))
            elif not secret_has_certificate(secret):
                out.append(issue_for(
                    "IST0161", gw, path,
                    f"The credential referenced by the Gateway {gw.name} in namespace {ns} is invalid, which "
                    "can cause the traffic not to work as expected."))
    return out


def secret_has_certificate(secret: Config) -> bool:
    """Istio's ExtractCertInfo + ValidateCertificate: a certificate and a key under ``tls.crt``/``tls.key``
    (or ``cert``/``key``), the certificate valid PEM X.509."""
    try:
        credentials.leaf_certificate(credentials.cert_info(credentials.secret_data(secret)).cert)
    except credentials.CredentialError:
        return False
    return True


def _selector_subset(x: Mapping[str, Any], y: Mapping[str, Any]) -> bool:
    """Istio's selectorSubset: every label of ``x`` is in ``y`` with the same value."""
    return all(str(k) in y and str(y[str(k)]) == str(v) for k, v in x.items())


def _same_certificate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Istio's haveSameCertificate: equal credentialNames, or (neither has one) equal certificate files and
    equal private keys."""
    ca, cb = str(a.get("credentialName") or ""), str(b.get("credentialName") or "")
    if ca and cb:
        return ca == cb
    if not ca and not cb:
        sa, sb = str(a.get("serverCertificate") or ""), str(b.get("serverCertificate") or "")
        pa, pb = str(a.get("privateKey") or ""), str(b.get("privateKey") or "")
        return bool(sa and sb and sa == sb and pa and pb and pa == pb)
    return False


def duplicate_certificates(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0138 (Istio's gateway.CertificateAnalyzer): a Gateway whose selector is a subset of another
    Gateway's (any namespace) and which has a TLS server with the same certificate as one of the other's;
    clients reusing an HTTP/2 connection across the two get 404s."""
    out: list[AnalysisIssue] = []
    gateways = ctx.configs.list("Gateway")
    for gw in gateways:
        selector = gw.spec.get("selector") or {}
        for other in gateways:
            if other is gw or (selector and not _selector_subset(selector, other.spec.get("selector") or {})):
                continue
            for server in gw.spec.get("servers") or ():
                for theirs in other.spec.get("servers") or ():
                    tls, other_tls = (server or {}).get("tls"), (theirs or {}).get("tls")
                    if tls and other_tls and _same_certificate(tls, other_tls):
                        out.append(issue_for(
                            "IST0138", gw, "metadata.name",
                            f"Duplicate certificate in multiple gateways [{gw.namespace}/{gw.name} "
                            f"{other.namespace}/{other.name}] may cause 404s if clients re-use HTTP2 "
                            "connections."))
    return out
