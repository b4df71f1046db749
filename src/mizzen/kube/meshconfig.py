"""Istio's MeshConfig as istiod reads it from the ``mesh`` key of the ConfigMap ``istio`` (YAML, Istio's
field names), overlaid on the control plane's own (:class:`~mizzen.core.mesh.MeshConfig`).

The fields the mesh config file also has (``rootNamespace``, ``trustDomain``, ``accessLogFile``,
``accessLogEncoding``, ``extensionProviders``, ``defaultConfig.tracing``) are read by
:func:`mizzen.core.mesh.with_mesh_file`; this module adds ``outboundTrafficPolicy.mode``, ``connectTimeout``,
``defaultHttpRetryPolicy.attempts|retryOn`` and ``enableAutoMtls``; ``discoverySelectors`` is read by
:func:`discovery_selectors` (the Kubernetes sources apply it). Other MeshConfig fields are accepted and
listed as ignored. A document that is not
YAML, not a mapping, or has a wrong value is refused whole with a one-line :class:`MeshConfigError` (istiod
keeps its previous mesh config then, and so does Mizzen).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from mizzen.config.durations import parse_duration
from mizzen.core.mesh import MeshConfig, OutboundPolicy, with_mesh_file
from mizzen.kube.discovery import DiscoverySelectorError, parse_discovery_selectors

__all__ = ["HONOURED", "MeshConfigError", "discovery_selectors", "parse_mesh_config"]

HONOURED = ("rootNamespace", "trustDomain", "outboundTrafficPolicy", "connectTimeout",
            "defaultHttpRetryPolicy", "enableAutoMtls", "accessLogFile", "accessLogEncoding",
            "extensionProviders", "defaultConfig", "discoverySelectors")


class MeshConfigError(ValueError):
    """The mesh config cannot be used (one line)."""


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise MeshConfigError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _document(text: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise MeshConfigError(f"not YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise MeshConfigError(f"expected a mapping of MeshConfig fields, got {type(doc).__name__}")
    return doc


def discovery_selectors(text: str) -> tuple[dict[str, Any], ...]:
    """The document's ``discoverySelectors`` (``()``: every namespace)."""
    try:
        return parse_discovery_selectors(_document(text).get("discoverySelectors"))
    except DiscoverySelectorError as e:
        raise MeshConfigError(str(e)) from None


def parse_mesh_config(text: str, base: MeshConfig) -> tuple[MeshConfig, list[str]]:
    """(``base`` with the fields the document sets, the top-level fields it sets that Mizzen ignores)."""
    doc = _document(text)
    try:
        base = with_mesh_file(base, doc)
    except ValueError as e:
        raise MeshConfigError(str(e).splitlines()[0] if str(e) else "invalid mesh config") from None
    changes: dict[str, Any] = {}
    if "outboundTrafficPolicy" in doc:
        otp = doc["outboundTrafficPolicy"] or {}
        if not isinstance(otp, dict):
            raise MeshConfigError("outboundTrafficPolicy: expected a mapping")
        mode = str(otp.get("mode") or "ALLOW_ANY").upper()
        try:
            changes["outbound_policy"] = OutboundPolicy(mode)
        except ValueError:
            raise MeshConfigError(f"outboundTrafficPolicy.mode: {mode!r} is not ALLOW_ANY or "
                                  "REGISTRY_ONLY") from None
    if "connectTimeout" in doc:
        seconds = parse_duration(str(doc["connectTimeout"]))
        if seconds is None or seconds <= 0:
            raise MeshConfigError(f"connectTimeout: {doc['connectTimeout']!r} is not a positive duration")
        changes["connect_timeout_s"] = seconds
    if "defaultHttpRetryPolicy" in doc:
        retry = doc["defaultHttpRetryPolicy"] or {}
        if not isinstance(retry, dict):
            raise MeshConfigError("defaultHttpRetryPolicy: expected a mapping")
        if "attempts" in retry:
            attempts = retry["attempts"]
            if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
                raise MeshConfigError(f"defaultHttpRetryPolicy.attempts: {attempts!r} is not a count")
            changes["default_retry_attempts"] = attempts
        if "retryOn" in retry:
            changes["default_retry_on"] = _str(retry, "retryOn")
    if "enableAutoMtls" in doc:
        if not isinstance(doc["enableAutoMtls"], bool):
            raise MeshConfigError("enableAutoMtls: expected true or false")
        changes["enable_auto_mtls"] = doc["enableAutoMtls"]
    ignored = sorted(str(k) for k in doc if k not in HONOURED)
    return dataclasses.replace(base, **changes), ignored
