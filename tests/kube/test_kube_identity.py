"""Identity on Kubernetes: a pod's projected service-account token (TokenRequest, audience ``istio-ca``, bound
to the pod) is checked by a real TokenReview on the real API server and gets the pod's SPIFFE certificate from
the CA; wrong audience, another namespace's service account, expired and garbage tokens and a deleted pod's
token are refused with one line; an agent reading its token and the ``istio-ca-root-cert`` roots from files
(as on a cluster, paths through ``MIZZEN_MOUNTS``) gets its certificate and xDS over TLS; the token is never
logged; the RBAC objects grant exactly the token reviews."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID
from kube_harness import wait_for

from harness import Mesh, eventually
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.debug_channel import CONNECT_METHOD
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.agent.kube_identity import kube_identity
from mizzen.core.proxy import ProxyType
from mizzen.kube.rbac import tokenreview_rbac
from mizzen.security.files import write_private_file
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.caclient import CAClient, CAClientError
from mizzen.security.nodeagent.upstream import ControlPlaneTls
from mizzen.security.pki import KeyAlgorithm, generate_key, load_certs, make_csr

pytestmark = pytest.mark.e2e

NS, OTHER_NS, SYSTEM_NS = "kid-apps", "kid-other", "kid-system"   # SYSTEM_NS: the CA Secret's (ours)
SA, OTHER_SA = "reviews", "ratings"
POD, GONE_POD = "reviews-v1-kid", "reviews-gone-kid"
MIZZEN = str(Path(sys.executable).parent / "mizzen")
IMAGE = "docker.io/istio/examples-bookinfo-reviews-v1"


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"serviceAccountName": SA, "nodeSelector": {"mizzen.test/none": "true"},   # never runs
                     "containers": [{"name": "app", "image": IMAGE}]}}


def _token(cluster: Any, ns: str, sa: str, audience: str = "istio-ca", pod: str | None = None) -> str:
    args = ["create", "token", sa, "-n", ns, "--audience", audience, "--duration", "10m"]
    if pod is not None:
        args += ["--bound-object-kind", "Pod", "--bound-object-name", pod]
    return str(cluster.kubectl(*args)).strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _expired_token(cluster: Any) -> str:
    """A service-account JWT signed with the cluster's real signing key, for istio-ca, expired an hour ago."""
    key = serialization.load_pem_private_key((cluster.workdir / "pki" / "sa.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "aud": ["istio-ca"],
              "sub": f"system:serviceaccount:{NS}:{SA}", "iat": now - 7200, "nbf": now - 7200,
              "exp": now - 3600,
              "kubernetes.io": {"namespace": NS, "serviceaccount": {"name": SA, "uid": str(uuid.uuid4())}}}
    header = {"alg": "RS256", "typ": "JWT"}
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing + "." + _b64(key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256()))


def _uris(pem: str) -> list[str]:
    cert = load_certs(pem)[0]
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def _true(value: bool) -> Any:
    async def check() -> bool:
        assert value
        return value
    return check()


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message
    await asyncio.sleep(30)


async def _cli(server: str, token: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "MIZZEN_SERVER": server, "MIZZEN_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture(scope="module")
def identity_cluster(kube_cluster: Any) -> Any:
    for ns in (NS, OTHER_NS, SYSTEM_NS):
        kube_cluster.kubectl("create", "namespace", ns)
    kube_cluster.kubectl("create", "serviceaccount", SA, "-n", NS)
    kube_cluster.kubectl("create", "serviceaccount", OTHER_SA, "-n", OTHER_NS)
    pods = "\n---\n".join(json.dumps(_pod(p)) for p in (POD, GONE_POD))
    kube_cluster.kubectl("apply", "-f", "-", stdin=pods)
    yield kube_cluster
    for ns in (NS, OTHER_NS, SYSTEM_NS):
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


async def test_projected_token_gets_certificate_and_xds(
        identity_cluster: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = identity_cluster
    monkeypatch.setenv("POD_NAMESPACE", SYSTEM_NS)     # the control plane's CA Secret and Leases: ours
    caplog.set_level(logging.DEBUG, logger="mizzen")
    good = _token(cluster, NS, SA, pod=POD)
    wrong_audience = _token(cluster, NS, SA, audience="https://kubernetes.default.svc.cluster.local", pod=POD)
    other = _token(cluster, OTHER_NS, OTHER_SA)
    gone = _token(cluster, NS, SA, pod=GONE_POD)
    cluster.kubectl("delete", "pod", GONE_POD, "-n", NS, "--grace-period=0", "--force", "--wait=true")
    expired = _expired_token(cluster)
    tokens = [good, wrong_audience, other, gone, expired]
    ident = Identity(NS, SA)

    async with Mesh(kubeconfig=cluster.kubeconfig, identities=True) as mesh:
        assert mesh.cp.identity is not None
        roots = mesh.cp.identity.ca.trust_bundle.pem
        address = mesh.cp.xds_tls_address

        async def sign(token: str, who: Identity = ident) -> list[str]:
            client = CAClient(address, token, tls=ControlPlaneTls(address, roots, token))
            try:
                return await client.sign(make_csr(generate_key(KeyAlgorithm.ECDSA), who), 600)
            finally:
                await client.close()

        chain = await sign(good)
        assert _uris(chain[0]) == [f"spiffe://cluster.local/ns/{NS}/sa/{SA}"]
        await sign(good)                                            # a second call: cached, one review
        reviewer = mesh.cp.identity.authenticators[-1]
        assert getattr(reviewer, "reviews", None) == 1

        refused = {
            "wrong audience": (wrong_audience, ident, "UNAUTHENTICATED", "not valid for audience istio-ca"),
            "other namespace": (other, ident, "PERMISSION_DENIED", f"ns/{OTHER_NS}/sa/{OTHER_SA}"),
            "deleted pod": (gone, ident, "UNAUTHENTICATED", "not valid for audience istio-ca"),
            "expired": (expired, ident, "UNAUTHENTICATED", "not valid for audience istio-ca"),
            "garbage": ("garbage", ident, "UNAUTHENTICATED", "not a JWT"),
            "garbage jwt": ("a.b.c", ident, "UNAUTHENTICATED", "not valid for audience istio-ca"),
        }
        for case, (token, who, code, text) in refused.items():
            with pytest.raises(CAClientError) as err:
                await sign(token, who)
            line = str(err.value)
            assert err.value.code is not None and err.value.code.name == code, (case, line)
            assert text in line and "\n" not in line and token not in line, (case, line)

        # an agent as on a cluster: token and ConfigMap roots at Istio's paths, mapped by MIZZEN_MOUNTS
        with tempfile.TemporaryDirectory(prefix="mizzen-kid-") as tmp:
            tokens_dir, roots_dir = Path(tmp, "istio-token"), Path(tmp, "istiod-ca-cert")
            write_private_file(tokens_dir / "istio-token", good.encode())
            roots_dir.mkdir()
            (roots_dir / "root-cert.pem").write_text(roots)
            env = {"CA_ADDR": address, "PILOT_CERT_PROVIDER": "istiod", "TRUST_DOMAIN": "cluster.local",
                   "MIZZEN_MOUNTS": json.dumps({"/var/run/secrets/tokens": str(tokens_dir),
                                                "/var/run/secrets/istio": str(roots_dir)})}
            options = kube_identity(env)
            assert options.token_file == tokens_dir / "istio-token"
            spec = ProxySpec(type=ProxyType.SIDECAR, ip="127.0.0.1", namespace=NS, name=POD,
                             service_account=SA, admin_port=0, xds_port=mesh.cp.xds_port,
                             labels={"app": "reviews", "version": "v1"})
            agent = Agent(spec, AgentOptions(log_level="info", concurrency=1, identity=options))
            await agent.start(ready_timeout=30)
            try:
                async def streamed() -> Any:
                    stream = next(s for s in mesh.cp.ads._live if s.node_id == agent.node_id)
                    assert stream.principal == (ident.uri,)
                    return stream
                await eventually(streamed, timeout=15)
                assert agent.identity is not None and agent.identity.agent is not None
                served = agent.identity.agent.manager.current
                assert served is not None and served.leaf.uris == (ident.uri,)
                # the token file is read again for every call (the kubelet rotates it): a replaced token
                # is what the next CA call sends
                write_private_file(tokens_dir / "istio-token", b"rotated-but-garbage")
                csr = make_csr(generate_key(KeyAlgorithm.ECDSA), ident)
                with pytest.raises(CAClientError, match="not a JWT"):
                    await agent.identity.agent.client.sign(csr, 600)
                write_private_file(tokens_dir / "istio-token", good.encode())
                assert _uris((await agent.identity.agent.client.sign(csr, 600))[0]) == [ident.uri]

                # proxy-config and logs reach the pod through its agent's debug channel (item 4)
                hub = mesh.cp.proxy_debug
                assert hub is not None
                await eventually(lambda: _true(hub.connected(NS, POD)), timeout=15)
                server, token = mesh.cp.http_url, mesh.cp.token
                rc, out, err = await _cli(server, token, "proxy-config", "secret", f"{POD}.{NS}")
                assert rc == 0 and "default" in out and "ROOTCA" in out and "ACTIVE" in out, (out, err)
                async with mesh.api_client() as api:      # what `mizzen logs` and the other pc commands read
                    r = await api.get(f"/apis/pods/{NS}/{POD}/logs", params={"container": "istio-proxy",
                                                                            "tail": "3"})
                    assert r.status_code == 200 and 0 < len(r.json()["lines"]) <= 3, r.text
                    r = await api.get(f"/debug/proxy-admin/{NS}/{POD}/config_dump")
                    assert r.status_code == 200 and agent.node_id in r.text, r.text[:300]
                    assert "private_key" not in r.text or "[redacted]" in r.text
                    r = await api.get(f"/debug/proxy-admin/{NS}/{POD}/quitquitquit")
                    assert r.status_code == 404, r.text
                    r = await api.get(f"/debug/proxy-admin/{NS}/{GONE_POD}/config_dump")
                    assert r.status_code == 503 and "no debug channel" in r.text, r.text
                # another pod's token cannot answer for this pod
                gone_channel = ControlPlaneTls(address, roots, other)
                try:
                    hello = {"node": agent.node_id, "metadata": {"NAMESPACE": NS, "SERVICE_ACCOUNT": SA}}
                    call = gone_channel.channel().stream_stream(CONNECT_METHOD)(
                        _one(json.dumps(hello).encode()), metadata=gone_channel.metadata())
                    with pytest.raises(grpc.aio.AioRpcError) as denied:
                        async for _ in call:
                            pass
                    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                finally:
                    await gone_channel.close()
                assert hub.connected(NS, POD)
            finally:
                await agent.stop()

    log_text = caplog.text
    for token in tokens:
        assert token not in log_text
        assert token.split(".")[2] not in log_text


def test_tokenreview_rbac_grants_token_reviews(kube_cluster: Any) -> None:
    ns, sa = "kid-cp", "istiod"
    kube_cluster.kubectl("create", "namespace", ns)
    try:
        kube_cluster.kubectl("create", "serviceaccount", sa, "-n", ns)
        subject = f"system:serviceaccount:{ns}:{sa}"

        def can(verb: str, resource: str) -> str:
            try:                             # -q: the answer is the exit code (1: no)
                kube_cluster.kubectl("auth", "can-i", "-q", verb, resource, "--as", subject)
                return "yes"
            except RuntimeError:
                return "no"

        assert can("create", "tokenreviews.authentication.k8s.io") == "no"
        objects = tokenreview_rbac(ns, sa, name="kid-cp-tokenreview")
        assert [o["kind"] for o in objects] == ["ClusterRole", "ClusterRoleBinding"]
        kube_cluster.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))
        try:
            wait_for(lambda: can("create", "tokenreviews.authentication.k8s.io") == "yes", 20,
                     "token reviews allowed")
            assert can("create", "subjectaccessreviews.authorization.k8s.io") == "yes"
            assert can("list", "secrets") == "no"
        finally:
            kube_cluster.kubectl("delete", "clusterrolebinding,clusterrole", "kid-cp-tokenreview")
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_kube_identity_env() -> None:
    from mizzen.agent.identity import IdentityError

    opts = kube_identity({})
    assert (opts.ca_address, str(opts.token_file), str(opts.root_cert_file)) == (
        "istiod.istio-system.svc:15012", "/var/run/secrets/tokens/istio-token",
        "/var/run/secrets/istio/root-cert.pem")
    first = kube_identity({"JWT_POLICY": "first-party-jwt", "MIZZEN_MOUNTS": json.dumps(
        {"/var/run/secrets/kubernetes.io/serviceaccount": "/pods/x/volumes/sa"})})
    assert str(first.token_file) == "/pods/x/volumes/sa/token"
    for env, text in (({"JWT_POLICY": "none"}, "JWT_POLICY"),
                      ({"PILOT_CERT_PROVIDER": "kubernetes"}, "istiod"),
                      ({"MIZZEN_MOUNTS": "[1]"}, "MIZZEN_MOUNTS")):
        with pytest.raises(IdentityError, match=text):
            kube_identity(env)
