"""The CA: self-signed root in the state dir, plugged-in cacerts (Istio's samples), signing for the proven
identity only, TTLs, bad input, and the three-step root rotation. Certificates are checked with real X.509
path validation."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
from security_kit import FAST, FIXTURES, VerificationError, csr_for, leaf_of, verify_chain

from mizzen.security.ca import CA_DIR, CAError, CAOptions, CertificateAuthority, IdentityMismatch
from mizzen.security.identity import Identity, IdentityError
from mizzen.security.pki import KeyAlgorithm, generate_key, load_certs, make_csr

REVIEWS = Identity("bookinfo", "bookinfo-reviews")
RATINGS = Identity("bookinfo", "bookinfo-ratings")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_format_and_parse() -> None:
    assert REVIEWS.uri == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    assert Identity.parse(REVIEWS.uri) == REVIEWS
    for bad in ("http://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe://td/ns/A_B/sa/x"):
        with pytest.raises(IdentityError):
            Identity.parse(bad)


def test_self_signed_root_created_once_private_and_reloaded(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    d = tmp_path / CA_DIR
    assert mode(d) == 0o700
    assert mode(d / "ca-key.pem") == 0o600
    assert not list(tmp_path.glob(".*")), "no temp files left behind"
    root = ca.material.cert
    assert ca.material.self_signed and root.subject.rfc4514_string() == "O=cluster.local"
    again = CertificateAuthority.self_signed(tmp_path, FAST)
    assert again.material.cert == root, "a restart loads the same root"


def test_loose_permissions_are_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    CertificateAuthority.self_signed(tmp_path, FAST)
    d = tmp_path / CA_DIR
    d.chmod(0o755)
    (d / "ca-key.pem").chmod(0o644)
    CertificateAuthority.self_signed(tmp_path, FAST)
    assert (mode(d), mode(d / "ca-key.pem")) == (0o700, 0o600)
    assert "was readable by group or others; set to 0600" in caplog.text


def test_plugged_in_ca_reload_picks_up_a_combined_root(tmp_path: Path) -> None:
    d = tmp_path / "cacerts"
    shutil.copytree(FIXTURES, d)
    ca = CertificateAuthority.from_cacerts(d)
    assert len(ca.trust_bundle) == 1
    shutil.copy(FIXTURES / "root-cert-combined.pem", d / "root-cert.pem")   # the operator adds a root
    ca.reload()
    assert len(ca.trust_bundle) == 2
    assert verify_chain(ca.sign(csr_for(REVIEWS), [REVIEWS])) == [REVIEWS.uri]


def test_concurrent_first_starts_agree_on_one_root(tmp_path: Path) -> None:
    roots: list[int] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        roots.append(CertificateAuthority.self_signed(tmp_path, FAST).material.cert.serial_number)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(roots)) == 1 and len(roots) == 4


def test_workload_certificate_spiffe_ttl_and_chain(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, CAOptions(root_key_algorithm=KeyAlgorithm.ECDSA))
    chain = ca.sign(csr_for(REVIEWS), [REVIEWS])
    assert len(chain) == 2                      # [leaf, root]: a self-signed root has no intermediate chain
    assert verify_chain(chain) == [REVIEWS.uri]
    leaf = leaf_of(chain)
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life == dt.timedelta(hours=24), "24 h by default, as Istio"
    assert leaf.subject.rfc4514_string() == ""
    short = leaf_of(ca.sign(csr_for(REVIEWS), [REVIEWS], dt.timedelta(seconds=5)))
    assert short.not_valid_after_utc - short.not_valid_before_utc == dt.timedelta(seconds=5)
    assert short.serial_number != leaf.serial_number
    # an RSA workload key (Istio's default) is signed as well
    rsa_chain = ca.sign(make_csr(generate_key(KeyAlgorithm.RSA), REVIEWS), [REVIEWS])
    assert verify_chain(rsa_chain) == [REVIEWS.uri]


def test_csr_for_another_identity_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    with pytest.raises(IdentityMismatch) as e:
        ca.sign(csr_for(RATINGS), [REVIEWS])
    assert str(e.value) == (f"CSR requests identity {RATINGS.uri} but the caller is authenticated as "
                            f"{REVIEWS.uri}")
    assert RATINGS.uri == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"
    other_td = Identity("bookinfo", "bookinfo-reviews", trust_domain="evil.example")
    with pytest.raises(IdentityMismatch):
        ca.sign(csr_for(other_td), [REVIEWS])


@pytest.mark.parametrize(("csr", "ttl", "message"), [
    (b"not a csr", None, "CSR: not a valid PEM certificate request"),
    (None, dt.timedelta(days=91), "requested TTL 7862400s is greater than the max allowed TTL 7776000s"),
    (None, dt.timedelta(seconds=-1), "requested TTL -1s is negative"),
])
def test_bad_requests_get_one_line_errors(tmp_path: Path, csr: bytes | None, ttl: dt.timedelta | None,
                                          message: str) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    with pytest.raises(CAError) as e:
        ca.sign(csr or csr_for(REVIEWS), [REVIEWS], ttl)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_csr_with_dns_names_or_without_identity_is_refused(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    key = generate_key(KeyAlgorithm.ECDSA)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    dns = builder.add_extension(x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(REVIEWS.uri), x509.DNSName("www.example.com")]), critical=False)
    for b, msg in ((dns, "CSR requests non-URI names www.example.com"),
                   (builder, "CSR requests no identity")):
        pem = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(CAError, match=msg):
            ca.sign(pem, [REVIEWS])


def test_plugged_in_cacerts_from_istio_samples(tmp_path: Path) -> None:
    ca = CertificateAuthority.from_cacerts(FIXTURES)
    chain = ca.sign(csr_for(REVIEWS), [REVIEWS])
    assert len(chain) == 3                  # [leaf, cert-chain.pem, root-cert.pem] as istiod answers
    assert verify_chain(chain) == [REVIEWS.uri]
    assert leaf_of(chain).issuer.rfc4514_string() == "CN=Istio CA,O=Istio,L=Sunnyvale,ST=California,C=US"
    # the sample CA is an intermediate under a different root: the leaf does not verify against a root alone
    with pytest.raises(VerificationError):
        verify_chain([chain[0], chain[2]])


def test_plugged_in_ca_with_combined_roots(tmp_path: Path) -> None:
    d = tmp_path / "cacerts"
    d.mkdir()
    shutil.copy(FIXTURES / "ca-cert-alt.pem", d / "ca-cert.pem")
    shutil.copy(FIXTURES / "ca-key-alt.pem", d / "ca-key.pem")
    shutil.copy(FIXTURES / "cert-chain-alt.pem", d / "cert-chain.pem")
    shutil.copy(FIXTURES / "root-cert-combined.pem", d / "root-cert.pem")
    ca = CertificateAuthority.from_cacerts(d)
    assert len(ca.trust_bundle) == 2
    chain = ca.sign(csr_for(REVIEWS), [REVIEWS])
    assert verify_chain(chain) == [REVIEWS.uri]


@pytest.mark.parametrize(("files", "message"), [
    ({"ca-key.pem": "ca-key-alt.pem"}, "ca-key.pem is not the key of ca-cert.pem"),
    ({"ca-cert.pem": "ca-cert-alt.pem", "ca-key.pem": "ca-key-alt.pem",
      "cert-chain.pem": "cert-chain-alt.pem"},
     "ca-cert.pem does not chain to a root in root-cert.pem"),
    ({"root-cert.pem": None}, "root-cert.pem is missing"),
    ({"ca-key.pem": "root-cert.pem"}, "not an unencrypted PEM private key"),
    ({"root-cert.pem": "ca-key.pem"}, "no valid PEM certificate"),
])
def test_bad_cacerts_directory_is_refused_in_one_line(tmp_path: Path, files: dict[str, str | None],
                                                      message: str) -> None:
    d = tmp_path / "cacerts"
    d.mkdir()
    for name in ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"):
        src = files.get(name, name)
        if src is not None:
            shutil.copy(FIXTURES / src, d / name)
    with pytest.raises(CAError) as e:
        CertificateAuthority.from_cacerts(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "PRIVATE KEY" not in str(e.value)


def test_root_rotation_in_three_steps_keeps_old_certificates_valid(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    old_root = ca.material.cert
    old_chain = ca.sign(csr_for(REVIEWS), [REVIEWS])

    staged = ca.stage_root()
    assert len(ca.trust_bundle) == 2 and ca.material.cert == old_root, "staged: trusted, not signing yet"
    during = ca.sign(csr_for(REVIEWS), [REVIEWS])
    assert leaf_of(during).issuer == old_root.subject
    assert verify_chain([during[0], during[-1]]) == [REVIEWS.uri]
    # a restart in between keeps the staged root
    assert CertificateAuthority.self_signed(tmp_path, FAST).staged_root == staged

    ca.activate_root()
    new_chain = ca.sign(csr_for(REVIEWS), [REVIEWS])
    leaf = leaf_of(new_chain)
    leaf.verify_directly_issued_by(staged)
    # the old certificate still verifies against the new bundle; the new one against it too
    bundle = ca.trust_bundle.pem
    assert verify_chain([old_chain[0], bundle]) == [REVIEWS.uri]
    assert verify_chain([new_chain[0], bundle]) == [REVIEWS.uri]
    # persisted: a restart signs with the new root and trusts both
    again = CertificateAuthority.self_signed(tmp_path, FAST)
    assert again.material.cert == staged and len(again.trust_bundle) == 2

    with pytest.raises(CAError, match="cannot drop the root that signs"):
        ca.drop_root(format(staged.serial_number, "x"))
    ca.drop_root(format(old_root.serial_number, "x"))
    assert list(ca.trust_bundle) == [staged]
    with pytest.raises(VerificationError):
        verify_chain([old_chain[0], ca.trust_bundle.pem])
    assert mode(tmp_path / CA_DIR / "ca-key.pem") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [CA_DIR], "no staging dirs left"


def test_interrupted_rotation_is_rolled_back(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    root = ca.material.cert
    # a crash between the two renames of a swap leaves only the previous directory
    os.rename(tmp_path / CA_DIR, tmp_path / (CA_DIR + ".prev"))
    assert CertificateAuthority.self_signed(tmp_path, FAST).material.cert == root


def test_plugged_in_ca_cannot_rotate_a_root_it_does_not_own() -> None:
    ca = CertificateAuthority.from_cacerts(FIXTURES)
    with pytest.raises(CAError, match="replace its cacerts files"):
        ca.stage_root()
    assert load_certs((FIXTURES / "root-cert.pem").read_bytes())[0] in list(ca.trust_bundle)
