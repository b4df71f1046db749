"""The ``ValidatingWebhookConfiguration`` objects Istio's charts install, as plain dicts ready for the API
server or a manifest: ``istio-validator[-<rev>]-<ns>`` (istio-discovery's per-revision webhook
``rev.validation.istio.io``, only for objects labelled ``istio.io/rev=<rev>``) and
``istiod-default-validator`` (the base chart's ``validation.istio.io`` for every object).

Both start fail-open (``failurePolicy: Ignore``) with no ``caBundle``: the leader's
:class:`~mizzen.kube.webhooks.patcher.WebhookPatcher` patches the mesh CA's roots in and flips the policy to
``Fail`` once the webhook is seen refusing an invalid object, as Istio's validation controller does. The
client config is the istiod Service (``istiod[-<rev>].<ns>:443/validate``; the Service maps 443 to the
control plane's 15017) or, for a control plane outside the cluster, a ``url``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_VALIDATOR_NAME",
    "VALIDATED_GROUPS",
    "VALIDATION_PATH",
    "default_validating_webhook_configuration",
    "istiod_service_name",
    "validating_webhook_configuration",
    "validator_name",
]

VALIDATION_PATH = "/validate"
DEFAULT_VALIDATOR_NAME = "istiod-default-validator"
# what Istio's validators match: Istio's own API groups, every version and resource, CREATE and UPDATE
VALIDATED_GROUPS = ("security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io")
REV_LABEL = "istio.io/rev"


def _revision(revision: str) -> str:
    return revision or "default"


def istiod_service_name(revision: str = "") -> str:
    """``istiod``, or ``istiod-<rev>`` for a named revision (the Service the webhooks call)."""
    return "istiod" if revision in ("", "default") else f"istiod-{revision}"


def validator_name(namespace: str = "istio-system", revision: str = "") -> str:
    """``istio-validator-<ns>`` or ``istio-validator-<rev>-<ns>`` (istio-discovery's name)."""
    rev = "" if revision in ("", "default") else f"-{revision}"
    return f"istio-validator{rev}-{namespace}"


def _client_config(namespace: str, revision: str, url: str | None, ca_bundle: str | None) -> dict[str, Any]:
    if url:
        cfg: dict[str, Any] = {"url": url}
    else:
        cfg = {"service": {"name": istiod_service_name(revision), "namespace": namespace,
                           "path": VALIDATION_PATH, "port": 443}}
    if ca_bundle:
        cfg["caBundle"] = ca_bundle
    return cfg


def _webhook(name: str, namespace: str, revision: str, url: str | None, ca_bundle: str | None,
             failure_policy: str, review_versions: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": _client_config(namespace, revision, url, ca_bundle),
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": list(VALIDATED_GROUPS),
                   "apiVersions": ["*"], "resources": ["*"]}],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": list(review_versions),
        "timeoutSeconds": 10,
    }


def _labels(revision: str) -> dict[str, str]:
    return {"app": "istiod", "istio": "istiod", REV_LABEL: _revision(revision),
            "app.kubernetes.io/name": "istiod", "app.kubernetes.io/part-of": "mizzen"}


def validating_webhook_configuration(namespace: str = "istio-system", revision: str = "", *,
                                     url: str | None = None, ca_bundle: str | None = None,
                                     failure_policy: str = "Ignore") -> dict[str, Any]:
    """istio-discovery's ``istio-validator[-<rev>]-<ns>``: webhook ``rev.validation.istio.io`` for objects
    labelled ``istio.io/rev=<rev>`` (``default`` when unnamed). ``url`` replaces the Service client config
    (a control plane outside the cluster); ``ca_bundle`` is base64 PEM (normally left to the patcher)."""
    hook = _webhook("rev.validation.istio.io", namespace, revision, url, ca_bundle, failure_policy,
                    ("v1beta1", "v1"))   # as the chart lists them: the API server sends v1beta1
    hook["objectSelector"] = {"matchExpressions": [
        {"key": REV_LABEL, "operator": "In", "values": [_revision(revision)]}]}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": validator_name(namespace, revision), "labels": _labels(revision)},
            "webhooks": [hook]}


def default_validating_webhook_configuration(namespace: str = "istio-system", revision: str = "", *,
                                             url: str | None = None, ca_bundle: str | None = None,
                                             failure_policy: str = "Ignore") -> dict[str, Any]:
    """The base chart's ``istiod-default-validator``: webhook ``validation.istio.io`` for every object of
    Istio's groups, answered by the default revision's control plane (``revision``)."""
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": DEFAULT_VALIDATOR_NAME, "labels": _labels(revision)},
            "webhooks": [_webhook("validation.istio.io", namespace, revision, url, ca_bundle,
                                  failure_policy, ("v1",))]}
