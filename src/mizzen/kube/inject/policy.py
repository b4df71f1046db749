"""Whether a pod gets a sidecar: Istio's ``injectRequired`` (what the injector decides once the webhook's
selectors let a pod through) and :func:`namespace_selects`, the same decision the
MutatingWebhookConfiguration's namespace/object selectors make at the API server (for tests and
``kube-inject`` explanations).

Order, as Istio: ``hostNetwork`` pods and pods in ``kube-system``/``kube-public`` are never injected; a pod
already carrying ``sidecar.istio.io/status`` is not injected again; then the pod label
``sidecar.istio.io/inject`` (it wins over the annotation of the same name, which is deprecated), then the
annotation, then ``neverInjectSelector`` / ``alwaysInjectSelector``, then the policy (enabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mizzen.config.labelselector import matches

__all__ = [
    "INJECT_KEY",
    "STATUS_ANNOTATION",
    "inject_required",
    "namespace_selects",
]

INJECT_KEY = "sidecar.istio.io/inject"
STATUS_ANNOTATION = "sidecar.istio.io/status"
NAMESPACE_LABEL = "istio-injection"
REV_LABEL = "istio.io/rev"
IGNORED_NAMESPACES = ("kube-system", "kube-public")
_TRUE = ("y", "yes", "true", "on", "enabled")


def _truthy(value: str) -> bool:
    return value.strip().lower() in _TRUE


def inject_required(pod: Mapping[str, Any], namespace: str, values: Any = None) -> tuple[bool, str]:
    """(inject?, why) for a pod the webhook was called for (or that kube-inject reads)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False, "hostNetwork pod"
    if namespace in IGNORED_NAMESPACES:
        return False, f"namespace {namespace} is never injected"
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    if STATUS_ANNOTATION in annotations:
        return False, "already injected"
    if INJECT_KEY in labels:
        return _truthy(str(labels[INJECT_KEY])), f"label {INJECT_KEY}={labels[INJECT_KEY]}"
    if INJECT_KEY in annotations:
        return _truthy(str(annotations[INJECT_KEY])), f"annotation {INJECT_KEY}={annotations[INJECT_KEY]}"
    if values is not None:
        for key, want in (("sidecarInjectorWebhook.neverInjectSelector", False),
                          ("sidecarInjectorWebhook.alwaysInjectSelector", True)):
            for sel in values.get(key) or []:
                if _label_selector_matches(sel, labels):
                    return want, f"{key.split('.')[1]} matched"
        if str(values.get("global.proxy.autoInject") or "enabled") == "disabled":
            return False, "policy disabled"
    return True, "policy enabled"


def _label_selector_matches(sel: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions) against labels; an empty one matches."""
    return matches(sel, labels)


def namespace_selects(namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str],
                      revision: str = "default") -> bool:
    """Would one of the ``istio-sidecar-injector`` webhooks (:func:`..webhook.mutating_webhook_configuration`)
    be called for this pod? Namespace ``istio-injection=enabled``, or ``istio.io/rev=<revision>``, or a pod
    label ``sidecar.istio.io/inject=true`` (with no namespace label); never for ``inject=false``."""
    from mizzen.kube.inject.webhook import injector_webhooks

    return any(
        _label_selector_matches(w["namespaceSelector"], namespace_labels)
        and _label_selector_matches(w["objectSelector"], pod_labels)
        for w in injector_webhooks(revision))
