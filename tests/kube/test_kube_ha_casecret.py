"""The CA's root in a Secret on a real API server: replicas racing to create ``istio-ca-secret`` end with one
root; a plugged-in ``cacerts`` Secret wins and signs under its root; a bad one is refused in one line that
names the Secret; the material is written 0600 in a 0700 directory and removed at close."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from kube_harness import ROOT

from mizzen.kube.casecret import CA_SECRET, SECRET_TYPE, load_ca_secret
from mizzen.kube.client import connect
from mizzen.security.ca import CAError, CAOptions, CertificateAuthority
from mizzen.security.identity import Identity
from mizzen.security.pki import KeyAlgorithm, generate_key, load_certs, make_csr

SAMPLE_CERTS = ROOT / "tests" / "fixtures" / "istio" / "samples" / "certs"
FAST = CAOptions(root_key_algorithm=KeyAlgorithm.ECDSA)
REVIEWS = Identity("default", "reviews")


@pytest.fixture
def namespace(kube_cluster: Any) -> Iterator[str]:
    ns = f"kha-ca-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", ns)
    yield ns
    kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def cacerts(cluster: Any, ns: str, key: str = "ca-key.pem") -> None:
    files = {"ca-cert.pem": "ca-cert.pem", "ca-key.pem": key, "root-cert.pem": "root-cert.pem",
             "cert-chain.pem": "cert-chain.pem"}
    cluster.kubectl("create", "secret", "generic", "cacerts", "-n", ns,
                    *(f"--from-file={name}={SAMPLE_CERTS / src}" for name, src in files.items()))


async def test_racing_replicas_end_with_one_root(kube_cluster: Any, namespace: str) -> None:
    apis = [await connect(kube_cluster.kubeconfig) for _ in range(4)]
    try:
        dirs = await asyncio.gather(*(load_ca_secret(api, namespace, FAST) for api in apis))
        try:
            roots = {(d.directory / "ca-cert.pem").read_bytes() for d in dirs}
            assert len(roots) == 1, "two replicas sign with different roots"
            root = load_certs(roots.pop())[0]
            for d in dirs:
                assert not d.plugged_in and d.secret == f"{namespace}/{CA_SECRET}"
                assert stat.S_IMODE(d.directory.stat().st_mode) == 0o700
                assert stat.S_IMODE((d.directory / "ca-key.pem").stat().st_mode) == 0o600
                ca = CertificateAuthority.from_cacerts(d.directory)
                chain = ca.sign(make_csr(generate_key(KeyAlgorithm.ECDSA), REVIEWS), [REVIEWS])
                assert load_certs(chain[-1].encode())[0] == root
            secret = json.loads(kube_cluster.kubectl("get", "secret", "-n", namespace, CA_SECRET,
                                                     "-o", "json"))
            assert secret["type"] == SECRET_TYPE
            assert set(secret["data"]) >= {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"}
        finally:
            for d in dirs:
                d.close()
        assert not any(d.directory.exists() for d in dirs)
    finally:
        for api in apis:
            await api.close()


async def test_plugged_in_cacerts_secret_is_used(kube_cluster: Any, namespace: str) -> None:
    cacerts(kube_cluster, namespace)
    api = await connect(kube_cluster.kubeconfig)
    try:
        d = await load_ca_secret(api, namespace, FAST)
        try:
            assert d.plugged_in and d.secret == f"{namespace}/cacerts"
            ca = CertificateAuthority.from_cacerts(d.directory)
            chain = ca.sign(make_csr(generate_key(KeyAlgorithm.ECDSA), REVIEWS), [REVIEWS])
            sample_root = load_certs((SAMPLE_CERTS / "root-cert.pem").read_bytes())[0]
            assert load_certs(chain[-1].encode())[0] == sample_root   # Istio's sample root ends the chain
        finally:
            d.close()
        out = kube_cluster.kubectl("get", "secret", "-n", namespace, "-o", "name")
        assert CA_SECRET not in out, "istio-ca-secret created although cacerts is there"
    finally:
        await api.close()


async def test_bad_cacerts_secret_is_refused_in_one_line(kube_cluster: Any, namespace: str) -> None:
    cacerts(kube_cluster, namespace, key="ca-key-alt.pem")
    api = await connect(kube_cluster.kubeconfig)
    try:
        with pytest.raises(CAError) as e:
            await load_ca_secret(api, namespace, FAST)
        msg = str(e.value)
        assert msg == f"CA Secret {namespace}/cacerts: ca-key.pem is not the key of ca-cert.pem", msg
        assert "PRIVATE KEY" not in msg
    finally:
        await api.close()



async def test_missing_namespace_is_refused_at_once_in_one_line(kube_cluster: Any) -> None:
    ns = f"kha-absent-{secrets.token_hex(3)}"
    api = await connect(kube_cluster.kubeconfig)
    try:
        with pytest.raises(CAError) as e:
            await asyncio.wait_for(load_ca_secret(api, ns, FAST), timeout=5)   # no retries
        assert str(e.value) == (f"namespace {ns} does not exist: the control plane keeps its CA Secret there "
                                "(create it, or set POD_NAMESPACE)")
    finally:
        await api.close()
