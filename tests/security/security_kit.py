"""Helpers for the security tests: CSRs, verification with cryptography's X.509 path validation, fixtures."""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509

from mizzen.security.ca import CAOptions
from mizzen.security.identity import Identity
from mizzen.security.pki import KeyAlgorithm, cert_info, cert_pem, generate_key, load_certs, make_csr

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "istio" / "samples" / "certs"

# fast options for tests: ECDSA roots, TTLs in seconds
FAST = CAOptions(default_ttl=dt.timedelta(hours=1), root_key_algorithm=KeyAlgorithm.ECDSA)


def csr_for(identity: Identity) -> bytes:
    return make_csr(generate_key(KeyAlgorithm.ECDSA), identity)


class VerificationError(AssertionError):
    pass


def verify_chain(chain: list[str], purpose: str = "sslclient") -> list[str]:
    """Validate Istio's response chain ``[leaf, (chain), roots]`` with OpenSSL's path validation (as a TLS
    peer would, for client or server use); returns the leaf's URI SANs. Istio's sample CA has a non-critical
    basicConstraints, which cryptography's strict verifier refuses but TLS stacks accept, hence OpenSSL."""
    certs = [c for pem in chain[:-1] for c in load_certs(pem)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "leaf.pem").write_text(cert_pem(certs[0]))
        (d / "untrusted.pem").write_text("".join(cert_pem(c) for c in certs[1:]))
        (d / "roots.pem").write_text(chain[-1])
        args = ["openssl", "verify", "-purpose", purpose, "-CAfile", str(d / "roots.pem")]
        if certs[1:]:
            args += ["-untrusted", str(d / "untrusted.pem")]
        res = subprocess.run([*args, str(d / "leaf.pem")], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise VerificationError(res.stdout + res.stderr)
    return list(cert_info(certs[0]).uris)


def leaf_of(chain: list[str]) -> x509.Certificate:
    return load_certs(chain[0])[0]
