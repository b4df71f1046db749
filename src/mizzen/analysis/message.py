"""Analyzer messages: Istio's ``istioctl analyze`` codes and levels, and :class:`AnalysisIssue`, the
:class:`~mizzen.config.errors.Issue` that carries them (code, namespace) so output can be rendered like
istioctl: ``Error [IST0101] (VirtualService bookinfo/reviews r.yaml:14) Referenced host not found: "x"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mizzen.config.errors import Issue, Severity
from mizzen.config.model import Config

__all__ = ["CODES", "LEVEL_NAMES", "AnalysisIssue", "code_of", "issue_at", "issue_for", "render"]

# code -> (Istio's name, level), from Istio's pkg/config/analysis/msg/messages.yaml
CODES: dict[str, tuple[str, Severity]] = {
    "IST0101": ("ReferencedResourceNotFound", Severity.ERROR),
    "IST0102": ("NamespaceNotInjected", Severity.INFO),
    "IST0106": ("SchemaValidationError", Severity.ERROR),
    "IST0107": ("MisplacedAnnotation", Severity.WARNING),
    "IST0108": ("UnknownAnnotation", Severity.WARNING),
    "IST0109": ("ConflictingMeshGatewayVirtualServiceHosts", Severity.ERROR),
    "IST0110": ("ConflictingSidecarWorkloadSelectors", Severity.ERROR),
    "IST0111": ("MultipleSidecarsWithoutWorkloadSelectors", Severity.ERROR),
    "IST0112": ("VirtualServiceDestinationPortSelectorRequired", Severity.ERROR),
    "IST0118": ("PortNameIsNotUnderNamingConvention", Severity.INFO),
    "IST0125": ("InvalidAnnotation", Severity.WARNING),
    "IST0127": ("NoMatchingWorkloadsFound", Severity.WARNING),
    "IST0128": ("NoServerCertificateVerificationDestinationLevel", Severity.WARNING),
    "IST0129": ("NoServerCertificateVerificationPortLevel", Severity.WARNING),
    "IST0130": ("VirtualServiceUnreachableRule", Severity.WARNING),
    "IST0131": ("VirtualServiceIneffectiveMatch", Severity.INFO),
    "IST0132": ("VirtualServiceHostNotFoundInGateway", Severity.WARNING),
    "IST0134": ("ServiceEntryAddressesRequired", Severity.WARNING),
    "IST0135": ("DeprecatedAnnotation", Severity.INFO),
    "IST0138": ("GatewayDuplicateCertificate", Severity.WARNING),
    "IST0144": ("InvalidApplicationUID", Severity.WARNING),
    "IST0145": ("ConflictingGateways", Severity.ERROR),
    "IST0149": ("JwtClaimBasedRoutingWithoutRequestAuthN", Severity.ERROR),
    "IST0150": ("ExternalNameServiceTypeInvalidPortName", Severity.WARNING),
    "IST0161": ("InvalidGatewayCredential", Severity.ERROR),
    "IST0162": ("GatewayPortNotDefinedOnService", Severity.WARNING),
    "IST0173": ("DestinationRuleSubsetNotSelectPods", Severity.ERROR),
    "IST0174": ("UnknownDestinationRuleHost", Severity.WARNING),
    "IST0177": ("ConflictingServiceEntryProtocol", Severity.WARNING),
}
LEVEL_NAMES: dict[Severity, str] = {Severity.ERROR: "Error", Severity.WARNING: "Warning",
                                    Severity.INFO: "Info"}

_CODE_RE = re.compile(r"^\[(IST\d{4})\] (.*)$", re.S)


@dataclass(frozen=True)
class AnalysisIssue(Issue):
    """An Issue with the analyzer's code and the object's namespace; the message starts with ``[CODE] ``."""

    code: str = ""
    namespace: str = ""

    @property
    def text(self) -> str:
        """The message without its ``[CODE]`` prefix."""
        m = _CODE_RE.match(self.message)
        return m.group(2) if m else self.message

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "code": self.code, "namespace": self.namespace}


def issue_for(code: str, cfg: Config, path: str, text: str) -> AnalysisIssue:
    """The message ``code`` about ``cfg`` at field ``path`` (its line from the object's source)."""
    from mizzen.config.validation import line_of

    return issue_at(code, cfg.kind, cfg.namespace, cfg.name, path, text,
                    cfg.source.file if cfg.source else "", line_of(cfg, path))


def issue_at(code: str, kind: str, namespace: str, name: str, path: str, text: str, file: str = "",
             line: int = 0) -> AnalysisIssue:
    """The message ``code`` about an object known only by its kind, namespace and name (one that did not
    load, for IST0106)."""
    _, level = CODES[code]
    return AnalysisIssue(message=f"[{code}] {text}", path=path, kind=kind, name=name, file=file, line=line,
                         severity=level, code=code, namespace=namespace)


def code_of(message: str) -> tuple[str, str]:
    """``"[IST0101] Referenced ..."`` -> ``("IST0101", "Referenced ...")``; no code -> ``("", message)``."""
    m = _CODE_RE.match(message)
    return (m.group(1), m.group(2)) if m else ("", message)


def render(level: str, code: str, kind: str, namespace: str, name: str, file: str, line: int,
           text: str) -> str:
    """One istioctl-style line: ``Error [IST0101] (VirtualService ns/name file:line) text``."""
    where = f" {file}:{line}" if file else ""
    obj = f"{namespace}/{name}" if namespace else name
    return f"{level} [{code}] ({kind} {obj}{where}) {text}"
