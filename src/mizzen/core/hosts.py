"""Host names as Istio treats them: short-name resolution against a namespace, wildcard matching.

``reviews`` written in namespace ``bookinfo`` means ``reviews.bookinfo.svc.cluster.local``; ``*.example.com``
matches ``a.example.com``; ``*`` matches everything.
"""

from __future__ import annotations


def resolve_short_name(host: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """Expand a short host the way Istio does: no dot -> ``host.<ns>.svc.<suffix>``; ``*`` and FQDNs stay."""
    if not host or host == "*" or host.startswith("*."):
        return host
    if "." not in host:
        return f"{host}.{namespace}.svc.{domain_suffix}"
    return host


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def host_matches(pattern: str, host: str) -> bool:
    """True if ``host`` (possibly itself a wildcard) is covered by ``pattern``."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]  # ".example.com"
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    return host_matches(a, b) or host_matches(b, a)


def domains_for_service(hostname: str, port: int, proxy_namespace: str, service_namespace: str,
                        domain_suffix: str = "cluster.local", default_port: bool = False) -> list[str]:
    """Virtual host domains for a service as seen from a proxy in ``proxy_namespace``.

    Istio adds ``host``, ``host:port`` and, for Kubernetes services in the proxy's own namespace, the short
    name and ``name.namespace`` forms (and ``name.namespace.svc``), each with and without the port.
    """
    names = [hostname]
    svc_suffix = f".svc.{domain_suffix}"
    if hostname.endswith(svc_suffix):
        base = hostname[: -len(svc_suffix)]          # name.namespace
        name, _, ns = base.partition(".")
        if ns == proxy_namespace:
            names.append(name)
        names.append(base)
        names.append(f"{base}.svc")
    out: list[str] = []
    for n in names:
        out.append(n)
        out.append(f"{n}:{port}")
    if not default_port:
        return out
    return out
