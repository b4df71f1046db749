"""Fields Mizzen accepts (they are valid Istio) but does not act on yet: a plain table, kind -> field path
patterns, edited by the translation engineers as support lands. Validation reports each present field as a
warning "accepted but not yet honoured by Mizzen". ``[*]`` matches every list index (or map key).
"""

from __future__ import annotations

import re
from typing import Any

from mizzen.config.errors import Severity
from mizzen.config.model import Config
from mizzen.config.schema import Finding, index_path, key_path

UNHONOURED: dict[str, tuple[str, ...]] = {
    "DestinationRule": (
        "spec.trafficPolicy.tls",
        "spec.trafficPolicy.tunnel",
        "spec.trafficPolicy.proxyProtocol",
        "spec.trafficPolicy.loadBalancer.warmup",
        "spec.subsets[*].trafficPolicy.tls",
        "spec.subsets[*].trafficPolicy.loadBalancer.warmup",
    ),
    "VirtualService": (
        "spec.http[*].mirrors",
    ),
    "Sidecar": (
        "spec.inboundConnectionPool",
        "spec.outboundTrafficPolicy.egressProxy",
    ),
    "WorkloadEntry": (
        "spec.network",
    ),
    "ServiceEntry": (
        "spec.subjectAltNames",
    ),
    "Gateway": (
        "spec.servers[*].tls.credentialName",
    ),
}

MESSAGE = "accepted but not yet honoured by Mizzen"

_TOKEN = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\*|\d+)\]")


def _tokens(pattern: str) -> list[str]:
    return [m.group(1) if m.group(1) is not None else f"[{m.group(2)}]" for m in _TOKEN.finditer(pattern)]


def _matches(value: Any, tokens: list[str], path: str, out: list[str]) -> None:
    if not tokens:
        if value is not None:
            out.append(path)
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


def present_paths(config: Config, pattern: str) -> list[str]:
    """Concrete paths of ``config`` matching ``pattern`` (e.g. "spec.http[*].mirrors" -> "
                                                                                    "spec.http[1].mirrors)."""
    tokens = _tokens(pattern)
    if not tokens or tokens[0] != "spec":
        return []
    out: list[str] = []
    _matches(dict(config.spec), tokens[1:], "spec", out)
    return out


def unhonoured_findings(config: Config) -> list[Finding]:
    out: list[Finding] = []
    for pattern in UNHONOURED.get(config.kind, ()):
        for path in present_paths(config, pattern):
            out.append(Finding(path, MESSAGE, Severity.WARNING))
    return out
