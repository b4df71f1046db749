"""The AdmissionReview protocol (``admission.k8s.io/v1``, and ``v1beta1`` which Istio's webhooks also list):
decoding a review body into its request, and the review that answers it (the request's ``uid`` echoed,
``allowed``, ``status.message``/``code`` when refused, ``warnings``, ``patchType: JSONPatch`` with the
base64 patch of a mutating handler). Pure: no I/O; the HTTPS server (:mod:`.server`) calls it.

A handler takes the AdmissionRequest (a dict) and returns the AdmissionResponse without its ``uid``:
build it with :func:`allowed`, :func:`denied` or :func:`patched`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "API_VERSIONS",
    "Handler",
    "ReviewError",
    "allowed",
    "decode_review",
    "denied",
    "patched",
    "review_response",
]

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ReviewError(Exception):
    """A body that is not an AdmissionReview request: answered with ``status`` and this one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_review(body: bytes, content_type: str = "application/json") -> tuple[str, dict[str, Any]]:
    """``(apiVersion, request)`` of an AdmissionReview body, or :class:`ReviewError` (400, or 415 for a
    content type other than JSON, as Istio's webhooks answer)."""
    if not body:
        raise ReviewError(400, "no body found")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ReviewError(415, "invalid Content-Type, want `application/json`")
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ReviewError(400, f"could not decode body: {' '.join(str(e).split())}") from None
    if not isinstance(review, dict):
        raise ReviewError(400, "could not decode body: not a JSON object")
    api_version, kind = review.get("apiVersion"), review.get("kind")
    if api_version not in API_VERSIONS:
        raise ReviewError(400, f"unsupported AdmissionReview apiVersion {api_version!r}: want "
                               f"{' or '.join(API_VERSIONS)}")
    if kind != "AdmissionReview":
        raise ReviewError(400, f"kind {kind!r} is not AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError(400, "AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError(400, "AdmissionReview request has no uid")
    return api_version, request


def allowed(warnings: Sequence[str] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"allowed": True}
    if warnings:
        response["warnings"] = list(warnings)
    return response


def denied(message: str, code: int = 400, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """A refusal: the API server answers the client ``admission webhook "<name>" denied the request:
    <message>`` with ``code``."""
    reason = {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(code, "")
    status: dict[str, Any] = {"status": "Failure", "message": message, "code": code}
    if reason:
        status["reason"] = reason
    response: dict[str, Any] = {"allowed": False, "status": status}
    if warnings:
        response["warnings"] = list(warnings)
    return response


def patched(operations: Sequence[dict[str, Any]], warnings: Sequence[str] = ()) -> dict[str, Any]:
    """A mutating handler's answer: allowed with the RFC 6902 JSON patch (none when ``operations`` is
    empty)."""
    response = allowed(warnings)
    if operations:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(operations)).encode()).decode()
    return response


def review_response(api_version: str, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answering ``request``: same apiVersion, its uid echoed."""
    return {"apiVersion": api_version, "kind": "AdmissionReview",
            "response": {**response, "uid": request["uid"]}}
