"""The injection webhook's two halves that are not a server: :func:`inject_review` answers one
AdmissionRequest for a Pod (``allowed`` with a base64 JSON Patch, Istio's ``/inject``), and
:func:`mutating_webhook_configuration` is Istio's ``istio-sidecar-injector`` MutatingWebhookConfiguration
(the chart's four webhooks: revision and ``istio-injection`` namespaces, object-level opt-in), for the
installer. The HTTPS server lives with the validating webhook's (``mizzen.kube.webhooks``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from mizzen.kube.inject.pod import InjectError, inject_pod, workload_of_pod
from mizzen.kube.inject.policy import INJECT_KEY, NAMESPACE_LABEL, REV_LABEL, inject_required
from mizzen.kube.inject.values import InjectConfig

__all__ = ["admission_review", "inject_review", "injector_configmap_name", "injector_webhooks", "json_patch",
           "mutating_webhook_configuration"]

Object = dict[str, Any]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Object]:
    """RFC 6902 operations turning ``before`` into ``after``, member by member under ``metadata`` and
    ``spec`` (``add`` also replaces an existing member)."""
    ops: list[Object] = []
    for top in ("metadata", "spec"):
        b, a = before.get(top) or {}, after.get(top) or {}
        if top not in before:
            ops.append({"op": "add", "path": f"/{top}", "value": a})
            continue
        for k in b:
            if k not in a:
                ops.append({"op": "remove", "path": f"/{top}/{_escape(k)}"})
        for k, val in a.items():
            if b.get(k) != val or k not in b:
                ops.append({"op": "add", "path": f"/{top}/{_escape(k)}", "value": val})
    return ops


def inject_review(request: Mapping[str, Any], cfg: InjectConfig | None = None) -> Object:
    """The AdmissionResponse (``admission.k8s.io/v1``) for an AdmissionRequest on a Pod."""
    cfg = cfg or InjectConfig()
    uid = request.get("uid", "")
    pod = request.get("object")
    if not isinstance(pod, Mapping) or (request.get("kind") or {}).get("kind", "Pod") != "Pod":
        return {"uid": uid, "allowed": True}
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default")
    wanted, _why = inject_required(pod, namespace, cfg.values)
    if not wanted:
        return {"uid": uid, "allowed": True}
    try:
        injected = inject_pod(pod, cfg, workload_of_pod(pod, namespace), namespace)
    except InjectError as e:
        return {"uid": uid, "allowed": False,
                "status": {"code": 500, "message": f"injection failed: {e}", "reason": "InternalError"}}
    patch = json.dumps(json_patch(pod, injected), separators=(",", ":")).encode()
    return {"uid": uid, "allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(patch).decode()}


def admission_review(review: Mapping[str, Any], cfg: InjectConfig | None = None) -> Object:
    """A whole AdmissionReview in (v1 or v1beta1), the review with its response out."""
    return {"apiVersion": review.get("apiVersion") or "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": inject_review(review.get("request") or {}, cfg)}


def _expr(key: str, op: str, *values: str) -> Object:
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


def injector_webhooks(revision: str = "default", *, namespace: str = "istio-system", service: str = "istiod",
                      path: str = "/inject", ca_bundle: str = "", port: int = 443) -> list[Object]:
    """The four webhooks of Istio's chart (``sidecar-injector-configmap``'s ``mutatingwebhook.yaml``): the
    revision's namespace label, the revision's pod label, ``istio-injection=enabled`` and the pod label
    ``sidecar.istio.io/inject=true`` in an unlabelled namespace. ``inject=false`` always opts out."""
    client: Object = {"service": {"name": service, "namespace": namespace, "path": path, "port": port}}
    if ca_bundle:
        client["caBundle"] = ca_bundle
    common: Object = {
        "clientConfig": client, "sideEffects": "None", "failurePolicy": "Fail", "reinvocationPolicy": "Never",
        "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                   "scope": "*"}]}
    return [
        {"name": "rev.namespace.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [_expr(REV_LABEL, "In", revision),
                                                    _expr(NAMESPACE_LABEL, "DoesNotExist")]},
         "objectSelector": {"matchExpressions": [_expr(INJECT_KEY, "NotIn", "false")]}},
        {"name": "rev.object.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [_expr(REV_LABEL, "DoesNotExist"),
                                                    _expr(NAMESPACE_LABEL, "DoesNotExist")]},
         "objectSelector": {"matchExpressions": [_expr(INJECT_KEY, "NotIn", "false"),
                                                 _expr(REV_LABEL, "In", revision)]}},
        {"name": "namespace.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [_expr(NAMESPACE_LABEL, "In", "enabled")]},
         "objectSelector": {"matchExpressions": [_expr(INJECT_KEY, "NotIn", "false")]}},
        {"name": "object.sidecar-injector.istio.io", **common,
         "namespaceSelector": {"matchExpressions": [_expr(NAMESPACE_LABEL, "DoesNotExist"),
                                                    _expr(REV_LABEL, "DoesNotExist")]},
         "objectSelector": {"matchExpressions": [_expr(INJECT_KEY, "In", "true"),
                                                 _expr(REV_LABEL, "DoesNotExist")]}},
    ]


def injector_configmap_name(revision: str = "") -> str:
    """The revision's injector ConfigMap (``config`` + ``values``): ``istio-sidecar-injector``, or
    ``istio-sidecar-injector-<rev>`` for another revision, the name the MutatingWebhookConfiguration has."""
    return "istio-sidecar-injector" + ("" if revision in ("", "default") else f"-{revision}")


def mutating_webhook_configuration(revision: str = "default", *, namespace: str = "istio-system",
                                   service: str = "istiod", path: str = "/inject", ca_bundle: str = "",
                                   port: int = 443) -> Object:
    """Istio's ``istio-sidecar-injector`` (``istio-sidecar-injector-<rev>`` for another revision)."""
    name = injector_configmap_name(revision)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app": "sidecar-injector", "istio.io/rev": revision,
                                               "operator.istio.io/component": "Pilot"}},
        "webhooks": injector_webhooks(revision, namespace=namespace, service=service, path=path,
                                      ca_bundle=ca_bundle, port=port),
    }
