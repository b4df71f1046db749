"""The replicas' forward of debug requests (:mod:`mizzen.controlplane.proxy_peers`): the peer token is good
only with the key of the same CA, before it expires, untampered; peers are istiod's ready endpoints at its
TLS port, minus this replica. (The forward itself, over TLS between two real replicas on a real API server,
is tested in tests/kube/test_kube_ha.py.)"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mizzen.controlplane.proxy_peers import PeerAuthenticator, peer_key, peer_token
from mizzen.kube.peers import peer_addresses
from mizzen.security.authn import AuthenticationError, RequestContext
from mizzen.security.ca import CertificateAuthority
from mizzen.security.identity import Identity


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    one = CertificateAuthority.self_signed(tmp_path_factory.mktemp("ca1"))
    two = CertificateAuthority.self_signed(tmp_path_factory.mktemp("ca2"))
    return peer_key(one.material.key), peer_key(two.material.key)


def bearer(token: str) -> RequestContext:
    return RequestContext(metadata={"authorization": f"Bearer {token}"})


async def test_peer_tokens(keys: tuple[bytes, bytes]) -> None:
    mine, other = keys
    istiod = Identity("istio-system", "istiod")
    auth = PeerAuthenticator(lambda: mine, istiod)
    caller = await auth.authenticate(bearer(peer_token(mine)))
    assert caller is not None and caller.identities == (istiod,)
    # not a peer token: another authenticator's business
    assert await auth.authenticate(bearer("mizzen-pod.abc")) is None
    assert await auth.authenticate(RequestContext(metadata={})) is None
    with pytest.raises(AuthenticationError, match="not signed by this mesh's CA"):
        await auth.authenticate(bearer(peer_token(other)))          # another CA's replica
    token = peer_token(mine)
    body, _, mac = token.rpartition(".")
    with pytest.raises(AuthenticationError, match="not signed"):
        await auth.authenticate(bearer(body[:-2] + "xx." + mac))    # tampered
    with pytest.raises(AuthenticationError, match="expired"):
        await auth.authenticate(bearer(peer_token(mine, now=time.time() - 120)))
    with pytest.raises(AuthenticationError, match="expired"):       # a far-future expiry is not accepted
        await auth.authenticate(bearer(peer_token(mine, now=time.time() + 3600)))


def _slice(name: str, ns: str, service: str, port_name: str, port: int, eps: list[dict[str, Any]]
           ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port}], "endpoints": eps}


def test_peer_addresses() -> None:
    slices = [
        _slice("istiod-a", "istio-system", "istiod", "https-dns", 15012, [
            {"addresses": ["10.244.0.5"], "conditions": {"ready": True}, "targetRef": {"name": "istiod-x"}},
            {"addresses": ["10.244.0.6"], "conditions": {"ready": True}, "targetRef": {"name": "istiod-me"}},
            {"addresses": ["10.244.0.7"], "conditions": {"ready": False},
             "targetRef": {"name": "istiod-y"}}]),
        _slice("istiod-b", "istio-system", "istiod", "https-dns", 31000, [{"addresses": ["10.244.0.9"]}]),
        _slice("other", "istio-system", "other", "https-dns", 15012, [{"addresses": ["10.244.0.8"]}]),
        _slice("elsewhere", "default", "istiod", "https-dns", 15012, [{"addresses": ["10.244.0.10"]}]),
    ]
    assert peer_addresses(slices, "istio-system", "istiod", self_pod="istiod-me") == [
        "10.244.0.5:15012", "10.244.0.9:31000"]
    assert peer_addresses(slices, "istio-system", "istiod", self_addresses=["10.244.0.9:31000"]) == [
        "10.244.0.5:15012", "10.244.0.6:15012"]
    assert peer_addresses(slices, "istio-system", "istiod-canary") == []
