"""Who may open an xDS stream for which proxy (istiod's node authorization on its secure port).

A stream on the TLS port must authenticate (the :class:`~mizzen.security.authn.Authenticator` list: locally
the runner's pod credential; a Kubernetes TokenReview authenticator slots in the same way), and the node it
claims must be that caller's: the node id's namespace and the ``NAMESPACE`` metadata must be the identity's
namespace, ``SERVICE_ACCOUNT`` its service account, and, when the credential names a pod (locally it always
does), the node id's pod name and (for the local runner's credential, which names the pod in both)
``WORKLOAD_NAME`` that pod; on Kubernetes ``WORKLOAD_NAME`` is the Deployment's name, as Istio's injector
sets it, and only the node id's pod is held to the token's bound pod. Anything else is PERMISSION_DENIED
with one line saying which field differs. Plaintext streams (istiod's 15010, kept for tests and raw-ADS
benchmarks) are anonymous: :func:`node_principal` answers None for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from mizzen.security.authn import (
    AuthenticationError,
    Authenticator,
    Caller,
    LocalCredentialAuthenticator,
    RequestContext,
    authenticate,
)

LOCAL_AUTHENTICATOR = LocalCredentialAuthenticator.name

__all__ = ["NodeDenied", "check_node", "is_tls", "node_principal", "request_context"]


class NodeDenied(Exception):
    """A stream refused: ``code`` is the gRPC status, the message one line (never a credential)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_tls(context: Any) -> bool:
    try:
        kind = context.auth_context().get("transport_security_type") or []
    except Exception:
        return False
    return b"ssl" in kind


def request_context(context: Any) -> RequestContext:
    metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return RequestContext(metadata=metadata)


def check_node(caller: Caller, node_id: str, metadata: Mapping[str, Any]) -> None:
    """Raise :class:`NodeDenied` (PERMISSION_DENIED) unless ``node_id``/``metadata`` are the caller's."""
    parts = node_id.split("~")
    if len(parts) != 4:
        raise NodeDenied(grpc.StatusCode.INVALID_ARGUMENT,
                         f"node id {node_id!r}: want type~ip~name.namespace~domain")
    pod_name, _, id_ns = parts[2].partition(".")
    meta_ns = str(metadata.get("NAMESPACE") or id_ns)
    meta_sa = str(metadata.get("SERVICE_ACCOUNT") or "default")
    workload = str(metadata.get("WORKLOAD_NAME") or pod_name)
    who = caller.pod or ",".join(i.uri for i in caller.identities)
    if not any(i.namespace == id_ns == meta_ns and i.service_account == meta_sa for i in caller.identities):
        ids = ", ".join(i.uri for i in caller.identities)
        raise NodeDenied(grpc.StatusCode.PERMISSION_DENIED,
                         f"node {node_id} (namespace {id_ns}/{meta_ns}, service account {meta_sa}) is not "
                         f"the caller's identity {ids}")
    if caller.pod is not None:
        ns, _, pod = caller.pod.partition("/")
        if caller.authenticator != LOCAL_AUTHENTICATOR:
            workload = pod     # on Kubernetes WORKLOAD_NAME is the Deployment's name, as Istio's; the pod is
        if (pod_name, workload) != (pod, pod) or ns != id_ns:  # the node id's
            raise NodeDenied(grpc.StatusCode.PERMISSION_DENIED,
                             f"node {node_id} names pod {id_ns}/{pod_name} but the credential is {who}'s")


async def node_principal(authenticators: Sequence[Authenticator], context: Any, node_id: str,
                         metadata: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The identity a stream speaks for (its SPIFFE IDs), or None for a plaintext (anonymous) stream;
    :class:`NodeDenied` when the caller cannot be authenticated or the node is not its own."""
    if not is_tls(context):
        return None
    try:
        caller = await authenticate(authenticators, request_context(context))
    except AuthenticationError as e:
        raise NodeDenied(grpc.StatusCode.UNAUTHENTICATED, str(e)) from None
    check_node(caller, node_id, metadata)
    return tuple(sorted(i.uri for i in caller.identities))
