"""Shared pieces of per-kind validation: field-path helpers, the :class:`Report` validators write into, and
Istio's value checks (DNS names and wildcard hosts, ports, durations, percentages, labels, RE2 regexes,
header names, protocols, IP addresses) with Istio's wording.

Validators are registered per kind with :func:`register`; :mod:`mizzen.config.validation` runs them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2

from mizzen.config.durations import parse_duration as parse_duration
from mizzen.config.errors import Severity
from mizzen.config.model import Config
from mizzen.config.schema import Finding as Finding  # re-exported for validators
from mizzen.config.schema import index_path as index_path
from mizzen.config.schema import key_path as key_path
from mizzen.config.schema import parent_path as parent_path
from mizzen.config.validation import envoy_limits

# ---------------------------------------------------------------------------------------------- reporting


@dataclass
class Report:
    """Collects findings of one object's validation (path + message); :func:`validate` turns them into "
      "Issues."""

    config: Config
    findings: list[Finding] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.findings.append(Finding(path, message))

    def warn(self, path: str, message: str) -> None:
        self.findings.append(Finding(path, message, Severity.WARNING))

    @property
    def has_errors(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings)


Validator = Callable[[Config, Report], None]
VALIDATORS: dict[str, Validator] = {}


def register(kind: str) -> Callable[[Validator], Validator]:
    """Decorator: ``@register("VirtualService")`` makes the function the semantic validator of that kind."""

    def deco(fn: Validator) -> Validator:
        VALIDATORS[kind] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------------- typed access


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


# ---------------------------------------------------------------------------------------------- DNS names

DNS1123_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")
_K8S_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_K8S_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_WILDCARD_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)\Z")
_QUALIFIED_NAME = re.compile(r"^(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


def is_dns1123_label(value: str) -> bool:
    """Istio's label check (mixed case allowed), at most 63 characters."""
    return len(value) <= 63 and DNS1123_LABEL.match(value) is not None


def is_k8s_dns_label(value: str) -> bool:
    """Kubernetes' RFC 1123 label (lowercase), at most 63 characters: namespace names, port names."""
    return len(value) <= 63 and _K8S_LABEL.match(value) is not None


def is_k8s_dns_subdomain(value: str) -> bool:
    """Kubernetes' RFC 1123 subdomain (lowercase), at most 253 characters: object names."""
    return len(value) <= 253 and _K8S_SUBDOMAIN.match(value) is not None


def _dns_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _dns_labels(domain: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if tld.isdigit():
        return f'domain name "{domain}" invalid (top level domain "{tld}" cannot be all-numeric)'
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # "istio.io." is allowed
        if not is_dns1123_label(label):
            return f'domain name "{domain}" invalid (label "{label}" invalid)'
    return None


def check_fqdn(name: str) -> str | None:
    """Istio's ValidateFQDN: the reason ``name`` is not a DNS name, or None."""
    return _dns_preconditions(name) or _dns_labels(name)


def check_wildcard_domain(name: str) -> str | None:
    """Istio's ValidateWildcardDomain: a DNS name whose first label may be ``*``, ``*x`` or ``*-x``."""
    err = _dns_preconditions(name)
    if err:
        return err
    first, _, rest = name.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.match(first):
        return f'domain name "{name}" invalid (label "{first}" invalid)'
    if rest:
        return _dns_labels(rest)
    return None


def check_namespace_slash_host(host: str, gateway: bool) -> list[str]:
    """Istio's ValidateNamespaceSlashWildcardHostname (``ns/host`` in Sidecar egress and Gateway servers)."""
    parts = host.split("/", 1)
    if len(parts) != 2:
        if gateway:
            err = check_wildcard_domain(host)
            return [err] if err else []
        return ["host must be of form namespace/dnsName"]
    ns, name = parts
    errs: list[str] = []
    if not ns or not name:
        errs.append("config namespace and dnsName in host entry cannot be empty")
    allowed = ("*", ".", "~") if not gateway else ("*", ".")
    if ns and ns not in allowed and not is_dns1123_label(ns):
        errs.append(f'invalid namespace value "{ns}" in {"gateway" if gateway else "sidecar"}')
    if name:
        err = check_wildcard_domain(name)
        if err:
            errs.append(err)
    return errs


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_ip_subnet(value: str) -> str | None:
    """An IP address or CIDR block (Istio's ValidateIPSubnet)."""
    if value.count("/") == 1:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value} is not a valid CIDR block"
        return None
    if not is_ip(value):
        return f"{value} is not a valid IP"
    return None


# ---------------------------------------------------------------------------------------------- numbers


def check_port(r: Report, path: str, value: Any) -> None:
    port = as_int(value, -1)
    if not 1 <= port <= 65535:
        r.error(path, f"port number {value} must be in the range 1..65535")


def check_percent(r: Report, path: str, value: Any) -> None:
    """An integer percentage (Istio's ValidatePercent)."""
    if value is None:
        return
    v = as_int(value, -1)
    if not 0 <= v <= 100:
        r.error(path, f"percentage {value} is not in range 0..100")


def check_percentage(r: Report, path: str, value: Any) -> None:
    """A ``Percent`` message ``{value: 12.5}`` (Istio's validatePercentage)."""
    pct = as_dict(value).get("value")
    if not isinstance(pct, int | float) or isinstance(pct, bool):
        return
    if pct < 0.0 or pct > 100.0 or 0.0 < pct < 0.0001:
        r.error(key_path(path, "value"), f"percentage {pct} is neither 0.0, nor in range [0.0001, 100.0]")


# ---------------------------------------------------------------------------------------------- durations

def check_duration(r: Report, path: str, value: Any) -> float | None:
    """Istio's ValidateDuration: well-formed, at least 1ms, millisecond precision. Returns seconds."""
    if value is None:
        return None
    secs = parse_duration(value) if isinstance(value, str) else None
    if secs is None:
        r.error(path, f'invalid duration "{value}" (use e.g. "1.5s", "300ms", "3m")')
        return None
    if secs < 0.001 - 1e-12:
        r.error(path, "duration must be greater than 1ms")
        return secs
    if secs > envoy_limits.MAX_DURATION_S:
        r.error(path, f'invalid duration "{value}" (more than {int(envoy_limits.MAX_DURATION_S // 3600)}h)')
        return None
    millis = secs * 1000.0
    if abs(millis - round(millis)) > 1e-6:
        r.error(path, "only durations to ms precision are supported")
    return secs


def coded(code: str, text: str) -> str:
    """A finding that is also an Istio analyzer message: ``[ISTxxxx] <Istio's text>``; ``mizzen analyze``
    reads the code back (:mod:`mizzen.analysis.schema`), so each check exists once."""
    return f"[{code}] {text}"


# ---------------------------------------------------------------------------------------------- regexes

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def re2_error(pattern: str) -> str | None:
    """RE2's reason ``pattern`` does not compile, or None."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return None


def re2_rewrite_error(pattern: str, rewrite: str) -> str | None:
    """RE2's ``CheckRewriteString``: why ``rewrite`` is no valid substitution for ``pattern``, or None.

    A backslash must be followed by a digit (a capture group, ``\\0`` the whole match) or another backslash,
    and no group above the pattern's number of capturing groups may be referenced. Envoy does not check this
    when it loads a ``regex_rewrite``; at request time RE2's ``GlobalReplace`` then refuses the substitution
    and the path goes upstream unchanged.
    """
    top = 0
    i = 0
    while i < len(rewrite):
        if rewrite[i] != "\\":
            i += 1
            continue
        if i + 1 == len(rewrite):
            return "'\\' is not allowed at the end (write '\\\\' for a literal backslash)"
        c = rewrite[i + 1]
        if c.isdigit() and c.isascii():
            top = max(top, int(c))
        elif c != "\\":
            return f"'\\' must be followed by a digit or '\\', got '\\{c}'"
        i += 2
    if top == 0:
        return None
    try:
        groups = int(re2.compile(pattern, _RE2_OPTIONS).groups)
    except re2.error:
        return None   # the pattern's own error is reported where it is checked
    if top > groups:
        have = "no capture groups" if groups == 0 else \
            f"only {groups} capture group{'s' if groups != 1 else ''}"
        return f"rewrite references group \\{top} but the match regex {pattern!r} has {have}"
    return None


def check_regex(r: Report, path: str, pattern: Any) -> None:
    """Istio's validateStringRegexp: non-empty, at most 1024 characters, valid RE2; and, unlike Istio, within
    Envoy's RE2 program size limit (else Envoy rejects the whole route configuration)."""
    if not isinstance(pattern, str):
        return
    if pattern == "":
        r.error(path, "regex string match should not be empty")
        return
    if len(pattern) > 1024:
        r.error(path, "regex is too large, max length allowed is 1024")
        return
    err = re2_error(pattern)
    if err:
        r.error(path, f"invalid RE2 regex: {err}; Istio uses RE2 style regex-based match "
                      "(https://github.com/google/re2/wiki/Syntax)")
        return
    size = envoy_limits.re2_program_size(pattern)
    if size is not None and size > envoy_limits.RE2_MAX_PROGRAM_SIZE:
        limit = envoy_limits.RE2_MAX_PROGRAM_SIZE
        r.error(path, f"regex program size {size} exceeds Envoy's limit of {limit} "
                      "(Envoy would reject the route; simplify the regex, e.g. fewer repetitions or "
                      "alternatives)")


def check_string_match(r: Report, path: str, match: Any) -> None:
    """A StringMatch (exact | prefix | regex): the regex compiles under RE2."""
    m = as_dict(match)
    if "regex" in m:
        check_regex(r, key_path(path, "regex"), m["regex"])


# ------------------------------------------------------------------------------------------ labels, headers

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+\Z")


def check_labels(r: Report, path: str, labels: Any) -> None:
    """Kubernetes label syntax (Istio's labels.Instance.Validate): ``[prefix/]name`` keys, short values."""
    for k, v in as_dict(labels).items():
        kp = key_path(path, str(k))
        key = str(k)
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or check_fqdn(prefix)):
            r.error(kp, f"invalid label key prefix {prefix!r} in {key!r}")
        if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            r.error(kp, f"invalid label key {key!r}")
        val = "" if v is None else str(v)
        if val and (len(val) > 63 or not _QUALIFIED_NAME.match(val)):
            r.error(kp, f"invalid label value {val!r}")


def check_header_name(r: Report, path: str, name: str) -> None:
    """Istio's ValidateHTTPHeaderName (match keys): ``^[-_A-Za-z0-9]+$``."""
    if name == "":
        r.error(path, "header name cannot be empty")
    elif not _HEADER_NAME.match(name):
        r.error(path, f"header name {name} is not a valid header name")


def is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def check_header_operation(r: Report, path: str, name: str, *, authority_ok: bool) -> None:
    """Header manipulation names: no pseudo-headers (``:path``), no ``Host`` (except request set/add "
      "authority)."""
    if name == "":
        r.error(path, "header name cannot be empty")
        return
    if authority_ok and is_authority_header(name):
        return
    if name.lower() == "host":
        r.error(path, f'invalid header "{name}": cannot set Host header')
    elif is_internal_header(name):
        r.error(path, f'invalid header "{name}": header cannot have ":" prefix')
    elif any(c in name for c in "\x00\r\n"):
        r.error(path, f"invalid header name {name!r}: NUL, CR and LF are not allowed (Envoy would reject the "
                      "route)")
    elif len(name.encode()) > envoy_limits.MAX_HEADER_BYTES:
        r.error(path, f"header name of {len(name.encode())} bytes is too long: Envoy allows at most "
                      f"{envoy_limits.MAX_HEADER_BYTES} bytes (16 KiB)")


_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header_value(r: Report, path: str, value: Any) -> None:
    """Envoy header value syntax: no control characters; ``%`` only as ``%%`` or a known ``%COMMAND%``."""
    v = str(value)
    if _HEADER_VALUE_BAD.search(v):
        shown = v if len(v) <= 80 else v[:80] + "..."
        r.error(path, f"header value configuration {shown!r} is invalid")
        return
    err = envoy_limits.header_value_error(v)
    if err:
        r.error(path, err)


# ---------------------------------------------------------------------------------------------- protocols

ISTIO_PROTOCOLS = frozenset({
    "HTTP", "HTTPS", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB", "TCP", "TLS", "UDP", "MONGO", "REDIS",
    "MYSQL",
})
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def parse_protocol(value: str) -> str | None:
    """Istio's protocol.Parse (case-insensitive); None for unsupported."""
    p = value.upper()
    return p if p in ISTIO_PROTOCOLS else None


def check_protocol(r: Report, path: str, value: Any) -> None:
    if isinstance(value, str) and value and parse_protocol(value) is None:
        r.error(path, f"unsupported protocol: {value}")


def check_port_name(r: Report, path: str, name: str) -> None:
    """Istio's ValidatePortName (a DNS-1123 label)."""
    if not is_dns1123_label(name):
        r.error(path, f"invalid port name: {name}")


def check_export_to(r: Report, path: str, namespace: str, export_to: Any, *, service_entry: bool) -> None:
    """Istio's validateExportTo: no duplicates, ``*`` alone, ``~`` alone (ServiceEntry only)."""
    seen: set[str] = set()
    values = [str(e) for e in as_list(export_to)]
    for i, e in enumerate(values):
        ip = index_path(path, i)
        key = namespace if e == "." else e
        if key in seen:
            if key != e:
                r.error(ip, f"duplicate entries in exportTo: . and current namespace {namespace}")
            else:
                r.error(ip, f"duplicate entries in exportTo for entry {e}")
            continue
        if e == "~" and not service_entry:
            r.error(ip, "exportTo ~ (none) is only allowed for ServiceEntry")
        elif e not in ("*", "~", ".") and not is_dns1123_label(e):
            r.error(ip, f"only . or * or a valid DNS 1123 label is allowed as exportTo entry, got {e!r}")
        seen.add(key)
    if "*" in values and len(values) > 1:
        r.error(path, "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in values and len(values) > 1:
        r.error(path, "cannot export service entry to no one (~) and someone")
