"""Authenticators: the local per-pod credentials (issue, re-issue, revoke, bound to the service account) and
the chain that lets another kind (a Kubernetes TokenReview authenticator later) sit beside them."""

from __future__ import annotations

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
