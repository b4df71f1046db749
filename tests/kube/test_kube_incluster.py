"""The in-cluster kube client (``mizzen controlplane --in-cluster``): the service account's directory at its
standard path or through the node agent's ``MIZZEN_MOUNTS`` map; outside a pod, one line."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mizzen.kube.client import SERVICE_ACCOUNT_DIR, KubeConfigError, connect, service_account_dir


def _self_signed() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_service_account_dir_follows_the_mounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MIZZEN_MOUNTS", raising=False)
    assert service_account_dir() == Path(SERVICE_ACCOUNT_DIR)
    monkeypatch.setenv("MIZZEN_MOUNTS", json.dumps({SERVICE_ACCOUNT_DIR: str(tmp_path / "sa"),
                                                    "/var/run/secrets": str(tmp_path / "other")}))
    assert service_account_dir() == tmp_path / "sa"   # the longest mountPath wins
    monkeypatch.setenv("MIZZEN_MOUNTS", json.dumps({"/var/run/secrets/": str(tmp_path / "secrets")}))
    assert service_account_dir() == tmp_path / "secrets" / "kubernetes.io" / "serviceaccount"
    monkeypatch.setenv("MIZZEN_MOUNTS", "not json")
    assert service_account_dir() == Path(SERVICE_ACCOUNT_DIR)


async def test_connect_in_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    monkeypatch.setenv("MIZZEN_MOUNTS", json.dumps({SERVICE_ACCOUNT_DIR: str(sa)}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="not in a pod"):
        await connect(in_cluster=True)
    sa.mkdir()
    (sa / "token").write_text("tok-123")
    (sa / "ca.crt").write_bytes(_self_signed())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.244.224.2")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    api = await connect(in_cluster=True)
    try:
        assert api.configuration.host == "https://10.244.224.2:6443"
        assert api.configuration.ssl_ca_cert == str(sa / "ca.crt")
        assert api.configuration.api_key["BearerToken"] == "Bearer tok-123"
    finally:
        await api.close()


def test_controlplane_outside_a_pod_is_one_line(tmp_path: Path) -> None:
    mizzen = str(Path(sys.executable).parent / "mizzen")
    r = subprocess.run([mizzen, "controlplane", "--in-cluster", "--http-port", "0", "--xds-port", "0",
                        "--xds-tls-port", "-1", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "MIZZEN_MOUNTS": "{}"}, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: not in a pod"), r.stderr
