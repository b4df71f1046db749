"""Galley's check as an admission handler (istiod's ``/validate``): the object of a CREATE or UPDATE of one
of Istio's kinds goes through the same loader and validators as ``mizzen apply`` and ``mizzen validate``
(:func:`mizzen.config.loader.load_object`); an invalid one is refused with Mizzen's
``Kind/name: field.path: reason`` lines (what ``mizzen validate`` prints, minus ``file:line``), warnings
travel as the AdmissionResponse's ``warnings``.

Allowed without a check, as Istio's webhook does: DELETE and CONNECT, and objects of kinds Mizzen does not
know (Istio's other kinds, like EnvoyFilter or WasmPlugin: allowed with a warning saying Mizzen does not
support them, where ``mizzen validate`` refuses them: a cluster that has Istio's CRDs may hold them, and a
fail-closed webhook must not lock them out). A body that carries no object is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mizzen.config import kinds
from mizzen.config.errors import Issue, Severity
from mizzen.config.loader import load_object
from mizzen.config.model import Config
from mizzen.kube.config_source import essentials
from mizzen.kube.webhooks.review import allowed, denied

__all__ = ["Checks", "Observer", "ValidationHandler"]

# policy beyond validation that the control plane applies to every object (e.g. the Gateway bind policy)
Checks = Callable[[Config], list[Issue]]
# told of every verdict, for istiod's metrics: (group, version, resource), None when passed or Istio's reason
# (``invalid_resource``, ``unsupported_operation``, ``unknown_type``, ``yaml_decode_error``)
Observer = Callable[[tuple[str, str, str], str | None], None]


def _resource(request: dict[str, Any]) -> tuple[str, str, str]:
    r = request.get("resource")
    r = r if isinstance(r, dict) else {}
    return str(r.get("group", "")), str(r.get("version", "")), str(r.get("resource", ""))


def _line(issue: Issue) -> str:
    """An issue as ``mizzen validate`` prints it, without file and line."""
    return str(Issue(message=issue.message, path=issue.path, kind=issue.kind, name=issue.name,
                     severity=issue.severity))


class ValidationHandler:
    """``handler(request) -> AdmissionResponse`` (see :mod:`.review`); ``checks`` adds the control
    plane's own policy, refused the same way; ``observe`` counts the verdicts."""

    def __init__(self, checks: Checks | None = None, observe: Observer | None = None) -> None:
        self.checks = checks
        self.observe = observe

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        response, reason = self._verdict(request)
        if self.observe is not None:
            self.observe(_resource(request), reason)
        return response

    def _verdict(self, request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        operation = request.get("operation")
        if operation not in ("CREATE", "UPDATE"):
            return allowed(), "unsupported_operation"
        obj = request.get("object")
        if not isinstance(obj, dict):
            return denied("cannot decode configuration: the request carries no object"), "yaml_decode_error"
        kind_name = obj.get("kind")
        known = kinds.BY_NAME.get(kind_name) if isinstance(kind_name, str) else None
        api_version = str(obj.get("apiVersion", ""))
        group = api_version.rpartition("/")[0]
        if known is None or not known.istio or group != known.group:
            return allowed([f"kind {kind_name} ({group}) is not supported yet by Mizzen: admitted without "
                            "validation, and the control plane ignores it"]), "unknown_type"
        doc = essentials(obj)
        namespace = request.get("namespace")
        if known.namespaced and isinstance(namespace, str) and namespace and not doc["metadata"].get(
                "namespace"):
            doc["metadata"]["namespace"] = namespace
        result = load_object(doc, file="")
        errors = list(result.errors)
        warnings = [_line(w) for w in result.warnings]
        if not errors and self.checks is not None:
            for config in result.configs:
                for issue in self.checks(config):
                    if issue.severity is Severity.ERROR:
                        errors.append(issue)
                    else:
                        warnings.append(_line(issue))
        if errors:
            return denied("configuration is invalid: " + "; ".join(_line(e) for e in errors),
                          warnings=warnings), "invalid_resource"
        return allowed(warnings), None
