"""The certificate authority (Citadel's job): signs workload certificates for the identity a caller proved.

Two sources of signing material, both a directory laid out like Istio's ``cacerts`` Secret
(``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``, optional ``cert-chain.pem``):

* :meth:`CertificateAuthority.self_signed` — ``<state dir>/ca``; on first start a self-signed root (RSA 2048,
  O=<trust domain>, 10 years, as Istio's ``istio-ca-secret``) is generated and published atomically with its
  key 0600 in a 0700 directory; every later start (and every replica sharing the state dir) loads it.
* :meth:`CertificateAuthority.from_cacerts` — a plugged-in intermediate CA (Istio's plugin-CA task); the
  ``root-cert.pem`` may hold several roots (``root-cert-combined.pem``).

A self-signed root rotates in three persisted steps with no failed handshake: :meth:`~CertificateAuthority.
stage_root` (the next root joins the trust bundle), :meth:`~CertificateAuthority.activate_root` (it signs),
:meth:`~CertificateAuthority.drop_root` (the old root leaves the bundle).

Workload certificates: empty subject, the SPIFFE URI SAN (critical), server+client auth, a random 128-bit
serial, TTL 24 h by default (capped by the max TTL and by the signing certificate's own expiry). The CSR's
URI SANs must each be an identity the caller proved, else :class:`IdentityMismatch`. The response chain is
Istio's: ``[leaf, cert chain (if any), root bundle]``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mizzen.security.bundle import TrustBundle
from mizzen.security.files import publish_private_dir
from mizzen.security.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError
from mizzen.security.pki import (
    KeyAlgorithm,
    PKIError,
    PrivateKey,
    cert_info,
    cert_pem,
    csr_uris,
    generate_key,
    load_certs,
    load_csr,
    load_private_key,
    private_key_pem,
    public_keys_match,
)

log = logging.getLogger(__name__)

__all__ = [
    "CA_CERT",
    "CA_DIR",
    "CA_KEY",
    "CERT_CHAIN",
    "ROOT_CERT",
    "STAGED_CERT",
    "STAGED_KEY",
    "CAError",
    "CAOptions",
    "CertificateAuthority",
    "IdentityMismatch",
    "SigningMaterial",
]

CA_DIR = "ca"
CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"
STAGED_CERT, STAGED_KEY = "next-ca-cert.pem", "next-ca-key.pem"     # a staged root (rotation step 1)
_MAX_CHAIN = 10


class CAError(RuntimeError):
    """The CA cannot start or cannot sign this request (one clear line, never key material)."""


class IdentityMismatch(CAError):
    """The CSR asks for an identity the caller did not prove."""


@dataclass(frozen=True)
class CAOptions:
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    default_ttl: dt.timedelta = dt.timedelta(hours=24)        # Istio's DEFAULT_WORKLOAD_CERT_TTL
    max_ttl: dt.timedelta = dt.timedelta(days=90)             # Istio's MAX_WORKLOAD_CERT_TTL
    root_ttl: dt.timedelta = dt.timedelta(days=3650)          # Istio's CITADEL_SELF_SIGNED_CA_CERT_TTL
    root_key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA


@dataclass(frozen=True)
class SigningMaterial:
    """What signs: the CA key and certificate, intermediates up to (maybe including) a root, the bundle."""

    key: PrivateKey
    cert: x509.Certificate
    chain_pem: str                 # cert-chain.pem as given ("" for a self-signed root)
    bundle: TrustBundle

    @property
    def self_signed(self) -> bool:
        return self.cert.issuer == self.cert.subject and self.bundle.contains(self.cert)


def _san(name: str) -> x509.GeneralName:
    """An IP SAN for an address literal, else a DNS SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _read(directory: Path, name: str, required: bool = True) -> bytes | None:
    try:
        return (directory / name).read_bytes()
    except FileNotFoundError:
        if required:
            raise CAError(f"CA directory {directory}: {name} is missing") from None
        return None
    except OSError as e:
        raise CAError(f"CA directory {directory}: cannot read {name}: {e.strerror}") from None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_material(directory: Path) -> SigningMaterial:
    """Read and check a cacerts-style directory: the key matches the certificate, the certificate is a CA
    and chains (through cert-chain.pem) to a root of root-cert.pem."""
    try:
        cert = load_certs(_read(directory, CA_CERT) or b"", f"{directory / CA_CERT}")[0]
        key = load_private_key(_read(directory, CA_KEY) or b"", f"{directory / CA_KEY}")
        bundle = TrustBundle.from_pem(_read(directory, ROOT_CERT) or b"", f"{directory / ROOT_CERT}")
        chain_bytes = _read(directory, CERT_CHAIN, required=False) or b""
        chain = load_certs(chain_bytes, f"{directory / CERT_CHAIN}") if chain_bytes.strip() else []
    except PKIError as e:
        raise CAError(str(e)) from None
    if not public_keys_match(key, cert):
        raise CAError(f"CA directory {directory}: {CA_KEY} is not the key of {CA_CERT}")
    if not cert_info(cert).is_ca:
        raise CAError(f"CA directory {directory}: {CA_CERT} is not a CA certificate "
                      "(basicConstraints CA:FALSE)")
    current = cert
    for _ in range(_MAX_CHAIN):
        if bundle.contains(current) or bundle.issuer_of(current) is not None:
            break
        parent = next((c for c in chain if c is not current and _issued_by(current, c)), None)
        if parent is None:
            raise CAError(f"CA directory {directory}: {CA_CERT} does not chain to a root in {ROOT_CERT}")
        current = parent
    else:
        raise CAError(f"CA directory {directory}: certificate chain longer than {_MAX_CHAIN}")
    chain_pem = chain_bytes.decode() if chain else ("" if bundle.contains(cert) else cert_pem(cert))
    return SigningMaterial(key=key, cert=cert, chain_pem=chain_pem, bundle=bundle)


def _new_root(options: CAOptions) -> tuple[PrivateKey, x509.Certificate]:
    key = generate_key(options.root_key_algorithm)
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, options.trust_domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + options.root_ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _material_files(key: PrivateKey, cert: x509.Certificate, bundle: TrustBundle) -> dict[str, bytes]:
    return {CA_KEY: private_key_pem(key), CA_CERT: cert.public_bytes(serialization.Encoding.PEM),
            ROOT_CERT: bundle.pem.encode()}


class CertificateAuthority:
    """Signs workload CSRs. Thread-safe: material swaps (rotation, reload) are atomic for signers."""

    def __init__(self, material: SigningMaterial, directory: Path, options: CAOptions | None = None) -> None:
        self.options = options or CAOptions()
        self.directory = directory
        self._material = material
        self._staged: tuple[PrivateKey, x509.Certificate] | None = None
        self._lock = threading.Lock()

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def self_signed(cls, state_dir: Path, options: CAOptions | None = None) -> CertificateAuthority:
        """Load ``<state_dir>/ca``, generating a self-signed root there on first start."""
        options = options or CAOptions()
        directory = state_dir / CA_DIR
        _recover_interrupted_rotation(directory)
        if not (directory / CA_CERT).exists():
            key, cert = _new_root(options)
            if publish_private_dir(directory, _material_files(key, cert, TrustBundle((cert,)))):
                log.info("CA: generated a self-signed root for trust domain %s in %s", options.trust_domain,
                         directory)
        _tighten(directory)
        ca = cls(load_material(directory), directory, options)
        ca._staged = _load_staged(directory, ca._material)
        return ca

    @classmethod
    def from_cacerts(cls, directory: Path, options: CAOptions | None = None) -> CertificateAuthority:
        """A plugged-in CA from Istio's cacerts files (a key readable by others is warned about)."""
        key = directory / CA_KEY
        with contextlib.suppress(OSError):
            if key.stat().st_mode & 0o077:
                log.warning("CA: %s is readable by group or others; make it 0600", key)
        return cls(load_material(directory), directory, options)

    # --- what it is ---------------------------------------------------------------------------------------
    @property
    def material(self) -> SigningMaterial:
        return self._material

    @property
    def trust_bundle(self) -> TrustBundle:
        return self._material.bundle

    @property
    def trust_domain(self) -> str:
        return self.options.trust_domain

    # --- signing ------------------------------------------------------------------------------------------
    def authorize(self, csr: x509.CertificateSigningRequest, proven: Sequence[Identity]) -> list[Identity]:
        """The identities the CSR asks for, each one proven by the caller; else a one-line CAError."""
        uris = csr_uris(csr)
        try:
            other = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            non_uri = [str(n.value) for n in other if not isinstance(n, x509.UniformResourceIdentifier)]
        except x509.ExtensionNotFound:
            non_uri = []
        if non_uri:
            raise CAError(f"CSR requests non-URI names {', '.join(non_uri)}: a workload certificate "
                          "carries only its SPIFFE identity")
        if not uris:
            raise CAError("CSR requests no identity: it needs a spiffe:// URI SAN")
        allowed = {i.uri for i in proven}
        requested: list[Identity] = []
        for uri in uris:
            try:
                ident = Identity.parse(uri)
            except IdentityError as e:
                raise CAError(f"CSR: {e}") from None
            if uri not in allowed:
                who = ", ".join(sorted(allowed)) or "no identity"
                raise IdentityMismatch(f"CSR requests identity {uri} but the caller is authenticated as "
                                       f"{who}")
            requested.append(ident)
        return requested

    def sign(self, csr_pem: bytes | str, proven: Sequence[Identity],
             ttl: dt.timedelta | None = None) -> list[str]:
        """Sign ``csr_pem`` for identities the caller proved; Istio's response chain (PEM strings)."""
        try:
            csr = load_csr(csr_pem)
        except PKIError as e:
            raise CAError(str(e)) from None
        identities = self.authorize(csr, proven)
        if ttl is None or ttl <= dt.timedelta(0):
            if ttl is not None and ttl < dt.timedelta(0):
                raise CAError(f"requested TTL {ttl.total_seconds():.0f}s is negative")
            ttl = self.options.default_ttl
        if ttl > self.options.max_ttl:
            raise CAError(f"requested TTL {ttl.total_seconds():.0f}s is greater than the max allowed TTL "
                          f"{self.options.max_ttl.total_seconds():.0f}s")
        material = self._material
        now = _now()
        not_after = min(now + ttl, material.cert.not_valid_after_utc)
        if not_after <= now:
            raise CAError("the CA certificate has expired")
        public_key = csr.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise CAError(f"CSR: RSA key of {public_key.key_size} bits is too small (2048 at least)")
        elif not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CAError(f"CSR: unsupported key type {type(public_key).__name__} (RSA or ECDSA only)")
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        sans = [x509.UniformResourceIdentifier(i.uri) for i in identities]
        return self._issue_leaf(material, public_key, now, not_after, usages, sans)

    def sign_server_certificate(self, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
                                dns_names: Sequence[str], ttl: dt.timedelta) -> list[str]:
        """The control plane's own serving certificate (istiod's DNS certificate, e.g.
        ``istiod.istio-system.svc``): DNS SANs (an IP address literal becomes an IP SAN: a webhook ``url``
        by address), server auth only; signed by the CA, not via a CSR (the key
        never leaves the control plane). Istio's response chain ``[leaf, (chain), roots]``."""
        if not dns_names:
            raise CAError("a serving certificate needs at least one DNS name")
        material = self._material
        now = _now()
        not_after = min(now + min(ttl, self.options.max_ttl), material.cert.not_valid_after_utc)
        if not_after <= now:
            raise CAError("the CA certificate has expired")
        return self._issue_leaf(material, public_key, now, not_after, [ExtendedKeyUsageOID.SERVER_AUTH],
                                [_san(n) for n in dns_names])

    @staticmethod
    def _issue_leaf(material: SigningMaterial, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
                    now: dt.datetime, not_after: dt.datetime, usages: Sequence[x509.ObjectIdentifier],
                    sans: Sequence[x509.GeneralName]) -> list[str]:
        """A leaf signed by the CA (no subject, SANs critical, Istio's key usages), returned as Istio's
        response chain ``[leaf, (chain), roots]``."""
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(material.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                material.key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .sign(material.key, hashes.SHA256())
        )
        chain = [cert_pem(cert)]
        if material.chain_pem:
            chain.append(material.chain_pem)
        chain.append(material.bundle.pem)
        return chain

    # --- root rotation ------------------------------------------------------------------------------------
    # Three steps, so no handshake fails: stage (the new root joins every trust bundle while the old root
    # still signs), activate (the new root signs; the old stays trusted), drop (once every certificate the old
    # root signed has been renewed). Each step is persisted atomically.
    @property
    def staged_root(self) -> x509.Certificate | None:
        return self._staged[1] if self._staged else None

    def stage_root(self) -> x509.Certificate:
        """Self-signed CA only: generate the next root and add it to the trust bundle; returns it."""
        with self._lock:
            material = self._material
            if not material.self_signed:
                raise CAError("root rotation of a plugged-in CA: replace its cacerts files (with a combined "
                              "root-cert.pem) and reload")
            if self._staged is not None:
                return self._staged[1]
            key, cert = _new_root(self.options)
            bundle = material.bundle.with_roots([cert], first=False)
            files = _material_files(material.key, material.cert, bundle)
            files.update({STAGED_KEY: private_key_pem(key),
                          STAGED_CERT: cert.public_bytes(serialization.Encoding.PEM)})
            _replace_dir(self.directory, files)
            self._material, self._staged = load_material(self.directory), (key, cert)
            log.info("CA: staged a new root (serial %x); %d roots trusted", cert.serial_number, len(bundle))
            return cert

    def activate_root(self) -> x509.Certificate:
        """The staged root signs from now on (the old root stays in the bundle); returns it."""
        with self._lock:
            if self._staged is None:
                raise CAError("no staged root to activate: stage one first")
            key, cert = self._staged
            bundle = TrustBundle((cert, *self._material.bundle.roots))
            _replace_dir(self.directory, _material_files(key, cert, bundle))
            self._material, self._staged = load_material(self.directory), None
            log.info("CA: the root with serial %x signs now", cert.serial_number)
            return cert

    def drop_root(self, serial_hex: str) -> None:
        """Remove an old root from the trust bundle (after every workload renewed under the new one)."""
        with self._lock:
            material = self._material
            if format(material.cert.serial_number, "x") == serial_hex.lower() and material.self_signed:
                raise CAError("cannot drop the root that signs: stage and activate a new one first")
            if self._staged is not None:
                raise CAError("activate the staged root before dropping one")
            try:
                bundle = material.bundle.without(serial_hex)
            except PKIError as e:
                raise CAError(str(e)) from None
            _replace_dir(self.directory, _material_files(material.key, material.cert, bundle))
            self._material = load_material(self.directory)

    def reload(self) -> None:
        """Re-read the directory (a plugged-in CA whose files the operator replaced)."""
        material = load_material(self.directory)
        with self._lock:
            self._material = material


def _load_staged(directory: Path, material: SigningMaterial) -> tuple[PrivateKey, x509.Certificate] | None:
    key_pem = _read(directory, STAGED_KEY, required=False)
    cert_bytes = _read(directory, STAGED_CERT, required=False)
    if key_pem is None or cert_bytes is None:
        return None
    try:
        key, cert = load_private_key(key_pem, STAGED_KEY), load_certs(cert_bytes, STAGED_CERT)[0]
    except PKIError as e:
        raise CAError(f"CA directory {directory}: {e}") from None
    if not public_keys_match(key, cert) or not material.bundle.contains(cert):
        raise CAError(f"CA directory {directory}: the staged root is inconsistent (key or trust bundle)")
    return key, cert


def _tighten(directory: Path) -> None:
    """Our own CA directory: 0700, its key files 0600, whatever an operator or a restore did to them."""
    try:
        if directory.stat().st_mode & 0o077:
            log.warning("CA: %s was accessible by group or others; set to 0700", directory)
            os.chmod(directory, 0o700)
        for name in (CA_KEY, STAGED_KEY):
            path = directory / name
            if path.exists() and path.stat().st_mode & 0o077:
                log.warning("CA: %s was readable by group or others; set to 0600", path)
                os.chmod(path, 0o600)
    except OSError as e:
        raise CAError(f"CA directory {directory}: cannot secure it: {e.strerror}") from None


def _prev_dir(directory: Path) -> Path:
    return directory.with_name(directory.name + ".prev")


def _replace_dir(directory: Path, files: dict[str, bytes]) -> None:
    """Swap ``directory`` for a new one holding ``files``: publish ``<dir>.next``, move the old one to
    ``<dir>.prev``, move the new one in, delete the old. A crash in between is undone at the next start."""
    nxt = directory.with_name(directory.name + ".next")
    shutil.rmtree(nxt, ignore_errors=True)
    if not publish_private_dir(nxt, files):
        raise CAError(f"cannot stage the new CA material in {nxt}")
    prev = _prev_dir(directory)
    shutil.rmtree(prev, ignore_errors=True)
    os.rename(directory, prev)
    os.rename(nxt, directory)
    shutil.rmtree(prev, ignore_errors=True)


def _recover_interrupted_rotation(directory: Path) -> None:
    prev = _prev_dir(directory)
    if not directory.exists() and prev.exists():
        os.rename(prev, directory)
        log.warning("CA: an interrupted root rotation was rolled back (%s)", directory)
