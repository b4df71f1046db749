"""The Secret kind through the real CLI and control plane: validation with one-line errors (bad base64, not
PEM, a key that does not match its certificate, kubernetes.io/tls without tls.key; an expired certificate is
a warning), and no command ever printing a value: ``get secret`` (table, -o yaml, -o json), ``describe
secret`` (keys and sizes, like kubectl), ``get all``/configz; the stored files are 0600."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
from cli_helpers import RealControlPlane, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem(days: int = 1) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def secret(data: dict[str, str], typ: str = "kubernetes.io/tls", name: str = "cred") -> str:
    body = "".join(f"\n  {k}: {v}" for k, v in data.items())
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n"
            f"type: {typ}\ndata:{body}\n")


@pytest.fixture
def pem() -> tuple[bytes, bytes]:
    return _pem()


def _validate(tmp_path: Path, text: str) -> tuple[int, str]:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    r = run_cli("validate", "-f", str(f))
    assert "Traceback" not in r.stdout + r.stderr
    return r.returncode, r.stdout + r.stderr


def test_validation_errors_are_one_line_and_never_show_values(tmp_path: Path,
                                                              pem: tuple[bytes, bytes]) -> None:
    cert, key = pem
    _other_cert, other_key = _pem()
    cases = {
        "illegal base64": {"tls.crt": "'!!not-base64'", "tls.key": b64(key)},
        "not a PEM encoded X.509 certificate": {"tls.crt": b64(b"hello"), "tls.key": b64(key)},
        "private key does not match the certificate": {"tls.crt": b64(cert), "tls.key": b64(other_key)},
        "Required value": {"tls.crt": b64(cert)},
    }
    for reason, data in cases.items():
        rc, out = _validate(tmp_path, secret(data))
        assert rc == 1 and reason in out, (reason, out)
        errors = [line for line in out.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith(str(tmp_path / "s.yaml")), out
        for value in data.values():
            assert value not in out or len(value) < 12
        assert key.decode().splitlines()[1] not in out and other_key.decode().splitlines()[1] not in out
    # an expired certificate is only a warning
    old_cert, old_key = _pem(days=-1)
    rc, out = _validate(tmp_path, secret({"tls.crt": b64(old_cert), "tls.key": b64(old_key)}))
    assert rc == 0 and "expired" in out, out
    # a generic Secret that is no credential is not checked for PEM
    rc, out = _validate(tmp_path, secret({"token": b64(b"abc")}, typ="Opaque"))
    assert rc == 0, out


def test_no_command_prints_a_secret_value(control_plane: RealControlPlane, tmp_path: Path,
                                          pem: tuple[bytes, bytes]) -> None:
    cert, key = pem
    f = tmp_path / "s.yaml"
    f.write_text(secret({"tls.crt": b64(cert), "tls.key": b64(key)})
                 + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: plain, namespace: istio-system}\n"
                   "stringData: {password: hunter2-hunter2}\n")
    url = control_plane.url
    applied = run_cli("apply", "-f", str(f), server=url)
    assert applied.returncode == 0, applied.stderr
    forbidden = [b64(key)[:40], key.decode().splitlines()[1], "hunter2-hunter2", b64(b"hunter2-hunter2")]
    outputs = {}
    for args in (("get", "secrets", "-n", "istio-system"), ("get", "secret", "cred", "-n", "istio-system",
                                                              "-o", "yaml"),
                 ("get", "secret", "-A", "-o", "json"), ("describe", "secret", "cred", "-n", "istio-system"),
                 ("describe", "secret", "plain", "-n", "istio-system")):
        r = run_cli(*args, server=url)
        assert r.returncode == 0, (args, r.stderr)
        outputs[args] = r.stdout
        for text in (r.stdout, r.stderr, applied.stdout, applied.stderr):
            for value in forbidden:
                assert value not in text, (args, value)
    table = outputs[("get", "secrets", "-n", "istio-system")]
    assert table.split("\n")[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert any(line.split()[:3] == ["cred", "kubernetes.io/tls", "2"] for line in table.splitlines())
    described = outputs[("describe", "secret", "cred", "-n", "istio-system")]
    assert "Type:  kubernetes.io/tls" in described
    assert f"tls.crt:  {len(cert)} bytes" in described and f"tls.key:  {len(key)} bytes" in described
    assert "password:  15 bytes" in outputs[("describe", "secret", "plain", "-n", "istio-system")]
    assert "[redacted: " in outputs[("get", "secret", "cred", "-n", "istio-system", "-o", "yaml")]


def test_create_secret_tls_and_generic_like_kubectl(control_plane: RealControlPlane, tmp_path: Path,
                                                    pem: tuple[bytes, bytes]) -> None:
    cert, key = pem
    (tmp_path / "c.crt").write_bytes(cert)
    (tmp_path / "k.key").write_bytes(key)
    url = control_plane.url
    r = run_cli("create", "-n", "istio-system", "secret", "tls", "httpbin-credential",
                "--key", str(tmp_path / "k.key"), "--cert", str(tmp_path / "c.crt"), server=url)
    assert (r.returncode, r.stdout.strip()) == (0, "secret/httpbin-credential created"), r.stderr
    r = run_cli("create", "secret", "generic", "mtls-credential", "-n", "istio-system",
                f"--from-file=tls.crt={tmp_path / 'c.crt'}", f"--from-file=tls.key={tmp_path / 'k.key'}",
                f"--from-file=ca.crt={tmp_path / 'c.crt'}", server=url)
    assert (r.returncode, r.stdout.strip()) == (0, "secret/mtls-credential created"), r.stderr
    stored = control_plane.cp.store.get("Secret", "istio-system", "mtls-credential")
    assert stored is not None and sorted(stored.spec["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert base64.b64decode(stored.spec["data"]["tls.key"]) == key
    # a key file that does not match: refused before anything is sent, naming the key, not its content
    _c2, other_key = _pem()
    (tmp_path / "other.key").write_bytes(other_key)
    r = run_cli("create", "secret", "tls", "bad", "-n", "istio-system", "--key", str(tmp_path / "other.key"),
                "--cert", str(tmp_path / "c.crt"), server=url)
    assert r.returncode == 1 and "private key does not match the certificate" in r.stderr, r.stderr
    assert other_key.decode().splitlines()[1] not in r.stderr + r.stdout
    assert control_plane.cp.store.get("Secret", "istio-system", "bad") is None
    r = run_cli("create", "secret", "tls", "nofile", "--key", str(tmp_path / "missing.key"),
                "--cert", str(tmp_path / "c.crt"), server=url)
    assert r.returncode == 1 and r.stderr.startswith("error: error reading key"), r.stderr
    assert "Traceback" not in r.stderr


def test_proxy_config_secret_rows_from_a_secrets_config_dump(pem: tuple[bytes, bytes]) -> None:
    from mizzen.cli.secret_tables import HEADERS, secret_rows, secrets_table

    cert, _key = pem
    parsed = x509.load_pem_x509_certificate(cert)
    dump = {"dynamic_active_secrets": [
        {"name": "default", "secret": {"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_bytes": b64(cert)},
            "private_key": {"inline_bytes": "[redacted]"}}}}],
        "dynamicWarmingSecrets": [
            {"name": "ROOTCA", "secret": {"name": "ROOTCA", "validationContext": {
                "trustedCa": {"inlineString": cert.decode()}}}}],
        "static_secrets": [{"name": "files", "secret": {"tls_certificate": {
            "certificate_chain": {"filename": "/etc/certs/cert.pem"}}}}]}
    rows = secret_rows(dump)
    when = "%Y-%m-%dT%H:%M:%SZ"
    valid = [format(parsed.serial_number, "x"), parsed.not_valid_after_utc.strftime(when),
             parsed.not_valid_before_utc.strftime(when)]
    assert rows == [["default", "Cert Chain", "ACTIVE", "true", *valid],
                    ["ROOTCA", "CA", "WARMING", "true", *valid],
                    ["files", "Cert Chain", "ACTIVE", "false", "-", "-", "-"]]
    expired = secret_rows(dump, now=parsed.not_valid_after_utc + datetime.timedelta(seconds=1))
    assert expired[0][3] == "false"
    assert secrets_table(dump).splitlines()[0].split() == " ".join(HEADERS).split()
