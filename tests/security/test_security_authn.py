"""Authenticators: the local per-pod credentials (issue, re-issue, revoke, bound to the service account) and
the chain that lets another kind (a Kubernetes TokenReview authenticator later) sit beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mizzen.security.authn import (
    AuthenticationError,
    Caller,
    LocalCredentialAuthenticator,
    LocalCredentials,
    RequestContext,
    authenticate,
)
from mizzen.security.identity import Identity, IdentityError


def bearer(token: str) -> RequestContext:
    return RequestContext(metadata={"authorization": f"Bearer {token}"})


class JwtLikeAuthenticator:
    """Stands in for a TokenReview authenticator at the interface seam: it claims JWT-shaped tokens only."""

    name = "kube-jwt"

    async def authenticate(self, request: RequestContext) -> Caller | None:
        token = request.metadata.get("authorization", "").removeprefix("Bearer ")
        if not token.startswith("eyJ"):
            return None
        return Caller((Identity("default", "sleep"),), self.name)


async def test_local_credentials_bind_pod_to_service_account() -> None:
    creds = LocalCredentials()
    local = LocalCredentialAuthenticator(creds, trust_domain="example.org")
    token = creds.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")
    caller = await local.authenticate(bearer(token))
    assert caller == Caller((Identity("bookinfo", "bookinfo-reviews", "example.org"),), "local-credential",
                            "bookinfo/reviews-v1-abc")
    again = creds.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")     # a restarted pod
    assert again != token
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        await local.authenticate(bearer(token))
    assert await local.authenticate(bearer(again)) is not None
    assert creds.revoke("bookinfo", "reviews-v1-abc") and not creds.revoke("bookinfo", "reviews-v1-abc")
    with pytest.raises(AuthenticationError):
        await local.authenticate(bearer(again))
    with pytest.raises(IdentityError):
        creds.issue("bookinfo", "pod", "Not_A_Name")


async def test_the_chain_asks_each_kind_in_order() -> None:
    creds = LocalCredentials()
    chain = [LocalCredentialAuthenticator(creds), JwtLikeAuthenticator()]
    token = creds.issue("bookinfo", "p", "bookinfo-ratings")
    assert (await authenticate(chain, bearer(token))).authenticator == "local-credential"
    assert (await authenticate(chain, bearer("eyJhbGciOi.x.y"))).identities == (Identity("default", "sleep"),)
    for ctx in (bearer("opaque"), RequestContext(metadata={}), RequestContext({"authorization": "Basic x"})):
        with pytest.raises(AuthenticationError, match=r"authenticators: local-credential, kube-jwt"):
            await authenticate(chain, ctx)


def test_persisted_credentials_survive_a_restart_and_hold_only_digests(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    first = LocalCredentials(path)
    a = first.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")
    b = first.issue("bookinfo", "ratings-v1-def", "bookinfo-ratings")
    first.revoke("bookinfo", "ratings-v1-def")
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert a not in text and b not in text and "reviews-v1-abc" in text
    # a restarted control plane (a new process reading the same state dir) accepts a, not b
    second = LocalCredentials(path)
    grant = second.lookup(a)
    assert grant is not None and (grant.pod, grant.service_account) == ("reviews-v1-abc", "bookinfo-reviews")
    assert second.lookup(b) is None
    # one issued by another process after this one loaded is found on a miss (the file changed)
    c = first.issue("bookinfo", "details-v1-ghi", "bookinfo-details")
    assert second.lookup(c) is not None
    # a corrupt file is ignored (the runner re-issues), never a crash
    path.write_text("{not json")
    assert len(LocalCredentials(path)) == 0


def test_node_check_on_kubernetes_holds_the_pod_not_the_workload_name() -> None:
    """Istio's injector sets WORKLOAD_NAME to the Deployment's name: a pod-bound Kubernetes token holds the
    node id's pod; the local runner's credential (pod name in both) still holds WORKLOAD_NAME too."""
    import grpc

    from mizzen.security.xdsauth import NodeDenied, check_node

    ident = Identity("bookinfo", "reviews")
    node = "sidecar~10.244.228.7~reviews-v1-5d9c7-abcde.bookinfo~bookinfo.svc.cluster.local"
    meta = {"NAMESPACE": "bookinfo", "SERVICE_ACCOUNT": "reviews", "WORKLOAD_NAME": "reviews-v1"}
    kube = Caller((ident,), "kube-jwt", pod="bookinfo/reviews-v1-5d9c7-abcde")
    check_node(kube, node, meta)
    with pytest.raises(NodeDenied) as denied:        # another pod's node, same service account
        check_node(Caller((ident,), "kube-jwt", pod="bookinfo/reviews-v2-xyz"), node, meta)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED and "reviews-v2-xyz" in str(denied.value)
    with pytest.raises(NodeDenied):                  # locally WORKLOAD_NAME is the pod name and is checked
        check_node(Caller((ident,), "local-credential", pod="bookinfo/reviews-v1-5d9c7-abcde"), node, meta)
    check_node(Caller((ident,), "kube-jwt"), node, meta)   # a token bound to no pod: identity only
