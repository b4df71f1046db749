"""The CA's root in a Secret every control-plane replica reads, as istiod keeps it on Kubernetes.

In the control plane's namespace (istio-system):

* ``cacerts`` (Istio's plugged-in CA: ``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
  ``cert-chain.pem``) is used when it exists;
* else ``istio-ca-secret`` (type ``istio.io/ca-root``, Istio's self-signed root: ``ca-cert.pem``,
  ``ca-key.pem`` and empty ``cert-chain.pem``, ``key.pem``, ``root-cert.pem``). The first replica to start
  generates the root and creates the Secret; creation is create-if-absent (a 409 means another replica won
  the race), and the loser reads the winner's Secret, so racing replicas end with one root.

:func:`load_ca_secret` writes the material as a cacerts-style directory (0700, files 0600) in a private temp
dir for :meth:`~mizzen.security.ca.CertificateAuthority.from_cacerts` and removes it at
:meth:`CASecretDir.close` (the control plane does so as soon as its CA has loaded it). The key is never
logged. Problems are one-line :class:`~mizzen.security.ca.CAError` naming the Secret. Root rotation
(stage/activate/drop) is for the self-signed CA of a state dir; on a cluster the operator replaces the
Secret (as with Istio's plugged-in CA) and restarts the replicas.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio import client

from mizzen.kube.rest import Object, call, status_of
from mizzen.security.ca import (
    CA_CERT,
    CA_DIR,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    CAError,
    CAOptions,
    CertificateAuthority,
    load_material,
)
from mizzen.security.files import write_private_file
from mizzen.tempdirs import owned_tempdir

__all__ = ["CACERTS", "CA_SECRET", "SECRET_TYPE", "CASecretDir", "load_ca_secret"]

log = logging.getLogger(__name__)

CACERTS = "cacerts"
CA_SECRET = "istio-ca-secret"
SECRET_TYPE = "istio.io/ca-root"
_PRIVATE_KEY = "key.pem"        # Istio's istio-ca-secret carries it, empty
_ATTEMPTS = 6                   # API errors at start are retried (0.5 s doubling: ~30 s), then a CAError


@dataclass
class CASecretDir:
    """A private cacerts-style directory holding a Secret's material; ``close()`` removes it."""

    directory: Path
    secret: str          # "<namespace>/<name>" it came from
    plugged_in: bool     # cacerts (True) or istio-ca-secret (False)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


async def load_ca_secret(api: client.ApiClient, namespace: str, options: CAOptions) -> CASecretDir:
    """The CA material from ``cacerts``, else ``istio-ca-secret`` (created with a new root if absent)."""
    delay = 0.5
    for attempt in range(_ATTEMPTS):
        try:
            return await _load(api, namespace, options)
        except CAError:
            raise
        except Exception as e:
            status = status_of(e)
            why = f"the API server answered {status}" if status else f"{type(e).__name__}: {e}"
            if attempt == _ATTEMPTS - 1 or status in (401, 403):
                raise CAError(f"cannot read the CA Secret in namespace {namespace}: {why}") from None
            log.warning("CA Secret in %s: %s; retrying in %.1fs", namespace, why, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _get(api: client.ApiClient, namespace: str, name: str) -> Object | None:
    try:
        return await call(api, "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except Exception as e:
        if status_of(e) == 404:
            return None
        raise


async def _load(api: client.ApiClient, namespace: str, options: CAOptions) -> CASecretDir:
    secret = await _get(api, namespace, CACERTS)
    if secret is not None:
        return _materialize(secret, f"{namespace}/{CACERTS}", plugged_in=True)
    secret = await _get(api, namespace, CA_SECRET)
    if secret is None:
        secret = await _create(api, namespace, options)
    return _materialize(secret, f"{namespace}/{CA_SECRET}", plugged_in=False)


async def _create(api: client.ApiClient, namespace: str, options: CAOptions) -> Object:
    """A new self-signed root as istio-ca-secret; the existing Secret when another replica was first."""
    scratch = owned_tempdir("mizzen-ca-new-")
    try:
        CertificateAuthority.self_signed(scratch, options)      # Istio's root: O=<trust domain>, 10 years
        cert = (scratch / CA_DIR / CA_CERT).read_bytes()
        key = (scratch / CA_DIR / CA_KEY).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    data = {CA_CERT: cert, CA_KEY: key, CERT_CHAIN: b"", _PRIVATE_KEY: b"", ROOT_CERT: b""}
    body = {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": CA_SECRET, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
    try:
        created = await call(api, "POST", f"/api/v1/namespaces/{namespace}/secrets", body)
    except Exception as e:
        if status_of(e) == 404:
            raise CAError(f"namespace {namespace} does not exist: the control plane keeps its CA Secret "
                          "there (create it, or set POD_NAMESPACE)") from None
        if status_of(e) != 409:
            raise
        log.info("CA: another replica created %s/%s first; using its root", namespace, CA_SECRET)
        existing = await _get(api, namespace, CA_SECRET)
        if existing is None:
            raise CAError(f"CA Secret {namespace}/{CA_SECRET} was created and deleted again") from None
        return existing
    log.info("CA: generated a self-signed root for trust domain %s in Secret %s/%s", options.trust_domain,
             namespace, CA_SECRET)
    return created


def _materialize(secret: Object, name: str, *, plugged_in: bool) -> CASecretDir:
    data: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            raise CAError(f"CA Secret {name}: {key} is not base64") from None
    for key in (CA_CERT, CA_KEY):
        if not data.get(key, b"").strip():
            raise CAError(f"CA Secret {name}: {key} is missing or empty")
    if plugged_in and not data.get(ROOT_CERT, b"").strip():
        raise CAError(f"CA Secret {name}: {ROOT_CERT} is missing or empty")
    directory = owned_tempdir("mizzen-ca-")       # 0700
    try:
        write_private_file(directory / CA_CERT, data[CA_CERT])
        write_private_file(directory / CA_KEY, data[CA_KEY])
        root = data.get(ROOT_CERT, b"").strip() and data[ROOT_CERT]
        write_private_file(directory / ROOT_CERT, root or data[CA_CERT])   # istio-ca-secret: its own root
        if data.get(CERT_CHAIN, b"").strip():
            write_private_file(directory / CERT_CHAIN, data[CERT_CHAIN])
        try:
            load_material(directory)
        except CAError as e:   # say which Secret, not which temp dir
            raise CAError(str(e).replace(f"CA directory {directory}", f"CA Secret {name}")
                          .replace(str(directory) + "/", "")) from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    log.info("CA: signing with the root from Secret %s%s", name, " (plugged-in)" if plugged_in else "")
    return CASecretDir(directory, name, plugged_in)
