"""The RBAC the control plane needs to authenticate workloads on Kubernetes (istiod's ``tokenreviews`` and
``subjectaccessreviews`` rules, which Istio's chart keeps in its ``istiod-clusterrole-<namespace>``).

:data:`TOKENREVIEW_RULES` are the rules (``create`` on ``authentication.k8s.io/tokenreviews``, used by
:class:`mizzen.kube.tokenreview.KubeJWTAuthenticator`, and on ``authorization.k8s.io/subjectaccessreviews``,
as ``system:auth-delegator`` grants them); :func:`tokenreview_rbac` returns a ClusterRole with them and the
ClusterRoleBinding to the control plane's service account, as plain objects for the install manifests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOKENREVIEW_RULES", "tokenreview_rbac"]

TOKENREVIEW_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
)


def tokenreview_rbac(namespace: str = "istio-system", service_account: str = "istiod",
                     name: str | None = None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A ClusterRole allowing token (and access) reviews and its binding to ``namespace/service_account``;
    ``name`` defaults to ``<service account>-tokenreview-<namespace>``."""
    name = name or f"{service_account}-tokenreview-{namespace}"
    meta = {"name": name, "labels": dict(labels or {"app": "istiod", "release": "istio"})}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta,
            "rules": [{k: list(v) for k, v in r.items()} for r in TOKENREVIEW_RULES]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": dict(meta),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}
    return [role, binding]
