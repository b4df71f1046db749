"""Kubernetes Secret checks: the API server's (key names, base64 ``data``, ``stringData`` strings, 1 MiB,
``kubernetes.io/tls`` needs ``tls.crt`` and ``tls.key``), then, for a Secret laid out as a TLS credential
(Istio's ``cert``/``key``/``cacert`` or ``tls.crt``/``tls.key``/``ca.crt``), what a gateway needs from it:
PEM certificates, a private key matching the certificate, and a warning for an expired certificate.
Messages name keys, never values.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from mizzen.config import credentials
from mizzen.config.model import Config
from mizzen.config.validation.common import Report, key_path, register

MAX_SECRET_BYTES = 1024 * 1024   # Kubernetes' MaxSecretSize
TLS_TYPE = "kubernetes.io/tls"
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _check_key(r: Report, field: str, key: str) -> None:
    if not _KEY.match(key) or len(key) > 253 or key in (".", ".."):
        r.error(key_path(field, key), f'Invalid value: "{key}": a valid config key must consist of '
                                      "alphanumeric characters, '-', '_' or '.'")


def _decode(r: Report, data: Mapping[object, object]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in data.items():
        key = str(k)
        _check_key(r, "data", key)
        if v is None:
            out[key] = b""
            continue
        if not isinstance(v, str):
            r.error(key_path("data", key), f"must be a base64 string, got {type(v).__name__}")
            continue
        try:
            out[key] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            r.error(key_path("data", key), "illegal base64 data (data values are base64; use stringData for "
                                           "plain text)")
    return out


@register("Secret")
def validate_secret(cfg: Config, r: Report) -> None:
    spec = cfg.spec
    typ = spec.get("type")
    if typ is not None and not isinstance(typ, str):
        r.error("type", f"must be a string, got {type(typ).__name__}")
    if spec.get("immutable") is not None and not isinstance(spec.get("immutable"), bool):
        r.error("immutable", "must be a boolean")
    data: dict[str, bytes] = {}
    origin: dict[str, str] = {}   # key -> the field it came from (stringData wins, as in the API server)
    raw = spec.get("data")
    if raw is not None and not isinstance(raw, Mapping):
        r.error("data", f"must be a map of keys to base64 strings, got {type(raw).__name__}")
    elif raw:
        data.update(_decode(r, raw))
    raw_strings = spec.get("stringData")
    if raw_strings is not None and not isinstance(raw_strings, Mapping):
        r.error("stringData", f"must be a map of keys to strings, got {type(raw_strings).__name__}")
    elif raw_strings:
        for k, v in raw_strings.items():
            _check_key(r, "stringData", str(k))
            if v is not None and not isinstance(v, str):
                r.error(key_path("stringData", str(k)), f"must be a string, got {type(v).__name__}")
                continue
            data[str(k)] = str(v or "").encode()
            origin[str(k)] = "stringData"
    if r.has_errors:
        return
    if sum(len(v) for v in data.values()) > MAX_SECRET_BYTES:
        r.error("data", f"Too long: must have at most {MAX_SECRET_BYTES} bytes")
        return
    if typ == TLS_TYPE:
        for k in ("tls.crt", "tls.key"):
            if k not in data:
                r.error(key_path("data", k), "Required value (a kubernetes.io/tls Secret needs tls.crt and "
                                             "tls.key)")
        if r.has_errors:
            return
    _check_credential(r, data, origin)


def _check_credential(r: Report, data: Mapping[str, bytes], origin: Mapping[str, str]) -> None:
    def _where(_data: Mapping[str, bytes], key: str) -> str:
        return key_path(origin.get(key, "data"), key)

    for cert_key, key_key, _ca in credentials.CERT_KEYS:
        if cert_key in data and key_key in data:
            try:
                cert = credentials.leaf_certificate(data[cert_key], cert_key)
            except credentials.CredentialError as e:
                r.error(_where(data, cert_key), str(e))
                continue
            try:
                credentials.check_key_matches(cert, data[key_key])
            except credentials.CredentialError as e:
                r.error(_where(data, key_key), str(e))
            if credentials.expired(cert):
                when = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
                r.warn(_where(data, cert_key), f"the certificate expired at {when}; a gateway serving it "
                                               "fails every handshake")
    for ca_key in credentials.ROOT_KEYS:
        if data.get(ca_key):
            try:
                credentials.leaf_certificate(data[ca_key], ca_key)
            except credentials.CredentialError as e:
                r.error(_where(data, ca_key), str(e))
