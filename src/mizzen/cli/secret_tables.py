"""``mizzen proxy-config secret``: istioctl's table over Envoy's SecretsConfigDump (RESOURCE NAME, TYPE,
STATUS, VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE), one row per active or warming secret. The
certificate (a ``tls_certificate``'s chain: its leaf; a ``validation_context``'s trusted CA: its first
certificate) is decoded from the dump, where certificates are kept and every private value is redacted.
Pure functions over the admin JSON (camelCase or snake_case).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from mizzen.cli.common import format_table
from mizzen.cli.proxy_tables import f

__all__ = ["HEADERS", "secret_rows", "secrets_section", "secrets_table"]

HEADERS = ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]


def secrets_section(dump: Mapping[str, Any]) -> dict[str, Any]:
    """The SecretsConfigDump of an admin ``/config_dump`` (empty when the proxy has no secrets)."""
    for c in dump.get("configs") or []:
        if isinstance(c, dict) and str(c.get("@type", "")).endswith("SecretsConfigDump"):
            return c
    return {}


def _pem(source: Any) -> bytes | None:
    """A DataSource's inline bytes (base64 in JSON) or string; None for files and redacted values."""
    raw = f(source, "inline_bytes")
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
    text = f(source, "inline_string")
    return text.encode() if isinstance(text, str) else None


def _cert(pem: bytes | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        return None


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def secret_rows(section: Mapping[str, Any], now: datetime.datetime | None = None) -> list[list[str]]:
    now = now or datetime.datetime.now(datetime.UTC)
    rows: list[list[str]] = []
    for key, status in (("dynamic_active_secrets", "ACTIVE"), ("dynamic_warming_secrets", "WARMING"),
                        ("static_secrets", "ACTIVE")):
        for entry in f(section, key) or []:
            secret = f(entry, "secret") or {}
            name = str(f(entry, "name") or f(secret, "name") or "")
            if f(secret, "tls_certificate") is not None:
                typ, pem = "Cert Chain", _pem(f(f(secret, "tls_certificate"), "certificate_chain"))
            elif f(secret, "validation_context") is not None:
                typ, pem = "CA", _pem(f(f(secret, "validation_context"), "trusted_ca"))
            else:
                rows.append([name, "Unknown", status, "false", "-", "-", "-"])
                continue
            cert = _cert(pem)
            if cert is None:
                rows.append([name, typ, status, "false", "-", "-", "-"])
                continue
            valid = cert.not_valid_before_utc <= now < cert.not_valid_after_utc
            rows.append([name, typ, status, str(valid).lower(), format(cert.serial_number, "x"),
                         _when(cert.not_valid_after_utc), _when(cert.not_valid_before_utc)])
    return rows


def secrets_table(section: Mapping[str, Any], now: datetime.datetime | None = None) -> str:
    return format_table(HEADERS, secret_rows(section, now))


