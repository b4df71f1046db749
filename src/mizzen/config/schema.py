"""Structural validation against the openAPIV3Schema of Istio's CRDs (what the API server enforces before
Istio's webhook): unknown fields, types, enums, required, int-or-string, maps, ranges, lengths, patterns,
counts, list-map uniqueness, oneOf exclusivity and the CEL rules (re-implemented in :func:`cel_check`).
Schemas are parsed once, compiled per kind+version on first use, cached. Paths: ``spec.http[0].route[1]``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mizzen.config.durations import parse_duration
from mizzen.config.errors import Severity

CRD_FILE = Path(__file__).parent / "schemas" / "crd-all.gen.yaml"

Pred = Callable[[Any], bool]

# ---------------------------------------------------------------------------------------------- field paths

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")


def key_path(base: str, key: str) -> str:
    """``spec`` + ``http`` -> ``spec.http``; keys with dots or slashes are bracketed: ``labels["a.b/c"]``."""
    if _PLAIN_KEY.match(key):
        return f"{base}.{key}" if base else key
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{base}["{quoted}"]'


def index_path(base: str, index: int) -> str:
    return f"{base}[{index}]"


_LAST_SEGMENT = re.compile(r'(\.[A-Za-z0-9_-]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')


def parent_path(path: str) -> str:
    """``spec.http[0].route`` -> ``spec.http[0]`` -> ``spec.http`` -> ``spec`` -> ``""``."""
    m = _LAST_SEGMENT.search(path)
    if m is None:
        return ""
    return path[: m.start()]


@dataclass
class Finding:
    """One problem at a field path, before it is given a file, line and object name."""

    path: str
    message: str
    severity: Severity = Severity.ERROR


@dataclass(eq=False)
class SchemaNode:
    """One compiled openAPIV3Schema node."""

    type: str | None = None
    properties: dict[str, SchemaNode] | None = None
    required: tuple[str, ...] = ()
    items: SchemaNode | None = None
    additional: SchemaNode | None = None          # map values (additionalProperties schema)
    additional_any: bool = False                  # additionalProperties: true
    preserve_unknown: bool = False
    int_or_string: bool = False
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = None
    max_items: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    max_properties: int | None = None
    pattern: re.Pattern[str] | None = None
    fmt: str | None = None
    list_type: str | None = None
    list_map_keys: tuple[str, ...] = ()
    # oneOf groups: (predicate that the object is valid, the mutually exclusive field names)
    exclusive: list[tuple[Pred, tuple[str, ...]]] = field(default_factory=list)
    cel: list[tuple[Pred, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- durations


# ---------------------------------------------------------------------------------------------- CEL rules
# The CRDs' x-kubernetes-validations, re-implemented one by one (no CEL interpreter). Each predicate returns
# True when the value satisfies the rule. Rules not listed here are skipped (tests list any that are missing).


def _min_duration(v: Any) -> bool:
    d = parse_duration(v) if isinstance(v, str) else None
    return d is not None and d >= 0.001 - 1e-12


def _port_range(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535


def _unique_numbers(v: Any) -> bool:
    nums = [p.get("number") for p in v if isinstance(p, dict)] if isinstance(v, list) else []
    return len(nums) == len(set(map(str, nums)))


_PORT_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")


def _uds_address(v: Any) -> bool:
    return not (isinstance(v, str) and v.startswith("unix://")) or v[7:8] in ("/", "@")


def _uds_ports(v: Any) -> bool:
    addr = v.get("address") if isinstance(v, dict) else None
    return not (isinstance(addr, str) and addr.startswith("unix://")) or "ports" not in v


def _cidr_resolution(v: Any) -> bool:
    addrs = (v.get("addresses") or []) if isinstance(v, dict) else []
    cidr = any("/" in str(a) for a in addrs)
    return not cidr or (v.get("resolution") or "NONE") in ("STATIC", "NONE")


def _none_no_endpoints(v: Any) -> bool:
    return not isinstance(v, dict) or (v.get("resolution") or "NONE") != "NONE" or "endpoints" not in v


def _dns_rr_endpoints(v: Any) -> bool:
    return (not isinstance(v, dict) or v.get("resolution") != "DNS_ROUND_ROBIN"
            or len(v.get("endpoints") or []) <= 1)


_CEL_BY_RULE: dict[str, Pred] = {
    "duration(self) >= duration('1ms')": _min_duration,
    'self.all(key, !key.contains("*"))': lambda v: isinstance(v, dict) and all("*" not in str(k) for k in v),
    "self.all(key, key.size() != 0)": lambda v: isinstance(v, dict) and all(str(k) != "" for k in v),
    '!self.contains("*")': lambda v: not isinstance(v, str) or "*" not in v,
    'self != "*"': lambda v: v != "*",
    "0 < self && self <= 65535": _port_range,
    "self.all(l1, self.exists_one(l2, l1.number == l2.number))": _unique_numbers,
    "has(self.address) || has(self.network)":
        lambda v: isinstance(v, dict) and ("address" in v or "network" in v),
    '(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true': _uds_ports,
    'self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true':
        _uds_address,
    'self.startsWith("unix://") ? !self.endsWith("/") : true':
        lambda v: not (isinstance(v, str) and v.startswith("unix://") and v.endswith("/")),
    'self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))':
        lambda v: isinstance(v, dict) and all(len(str(k)) < 63 and _PORT_NAME_RE.match(str(k)) for k in v),
}
_CEL_BY_MESSAGE: dict[str, Pred] = {
    "CIDR addresses are allowed only for NONE/STATIC resolution types": _cidr_resolution,
    "NONE mode cannot set endpoints": _none_no_endpoints,
    "DNS_ROUND_ROBIN mode cannot have multiple endpoints": _dns_rr_endpoints,
}
def _go_anchors(pattern: str) -> str:
    """A CRD pattern (Go/RE2 syntax) for Python: a final ``$`` means the end of the text, as in Go (Python's
    ``$`` also matches before a trailing newline, which let ``"name\\n"`` through)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _shown_pattern(compiled: re.Pattern[str]) -> str:
    """The pattern as the CRD wrote it (undoing :func:`_go_anchors`)."""
    p = compiled.pattern
    return p[:-2] + "$" if p.endswith("\\Z") else p


_AT_MOST_ONE = re.compile(r"^(?:\(has\(self\.\w+\) \? 1 : 0\)(?: \+ )?)+ <= 1$")
_HAS = re.compile(r"has\(self\.(\w+)\)")


def cel_check(rule: str, message: str) -> Pred | None:
    """The Python predicate for one CEL rule of the CRDs, or None if it is not implemented."""
    norm = " ".join(rule.split())
    if norm in _CEL_BY_RULE:
        return _CEL_BY_RULE[norm]
    if message in _CEL_BY_MESSAGE:
        return _CEL_BY_MESSAGE[message]
    if _AT_MOST_ONE.match(norm):
        names = tuple(_HAS.findall(norm))
        return lambda v: not isinstance(v, dict) or sum(1 for n in names if n in v) <= 1
    return None


# ---------------------------------------------------------------------------------------------- compiling


def _pred(schema: dict[str, Any]) -> Pred:
    """A boolean predicate for the small schemas used inside oneOf/anyOf/not (required/type combinations)."""
    checks: list[Pred] = []
    if "required" in schema:
        req = tuple(schema["required"])
        checks.append(lambda v: isinstance(v, dict) and all(k in v for k in req))
    if "not" in schema:
        inner = _pred(schema["not"])
        checks.append(lambda v: not inner(v))
    if "anyOf" in schema:
        alts = [_pred(s) for s in schema["anyOf"]]
        checks.append(lambda v: any(p(v) for p in alts))
    if "oneOf" in schema:
        alts1 = [_pred(s) for s in schema["oneOf"]]
        checks.append(lambda v: sum(1 for p in alts1 if p(v)) == 1)
    if "allOf" in schema:
        alts2 = [_pred(s) for s in schema["allOf"]]
        checks.append(lambda v: all(p(v) for p in alts2))
    return lambda v: all(c(v) for c in checks)


def _required_names(schema: Any, out: list[str]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _required_names(s, out)
    elif isinstance(schema, dict):
        for name in schema.get("required", ()):
            if name not in out:
                out.append(name)
        for kw in ("not", "anyOf", "oneOf", "allOf"):
            sub = schema.get(kw)
            for s in sub if isinstance(sub, list) else [sub]:
                _required_names(s, out)


def _compile_exclusive(node: SchemaNode, schema: dict[str, Any]) -> None:
    nested = [s.get("oneOf") for s in schema.get("allOf", ()) if isinstance(s, dict)]
    for one_of in [schema.get("oneOf"), *nested]:
        if not one_of:
            continue
        names: list[str] = []
        _required_names(one_of, names)
        if names:
            node.exclusive.append((_pred({"oneOf": one_of}), tuple(names)))


def compile_schema(schema: dict[str, Any]) -> SchemaNode:
    """Compile one openAPIV3Schema (recursively)."""
    node = SchemaNode(
        type=schema.get("type"),
        required=tuple(schema.get("required", ())),
        preserve_unknown=bool(schema.get("x-kubernetes-preserve-unknown-fields")),
        int_or_string=bool(schema.get("x-kubernetes-int-or-string")),
        nullable=bool(schema.get("nullable")),
        enum=tuple(schema["enum"]) if "enum" in schema else None,
        minimum=schema.get("minimum"),
        maximum=schema.get("maximum"),
        min_items=schema.get("minItems"),
        max_items=schema.get("maxItems"),
        min_length=schema.get("minLength"),
        max_length=schema.get("maxLength"),
        max_properties=schema.get("maxProperties"),
        pattern=re.compile(_go_anchors(schema["pattern"])) if "pattern" in schema else None,
        fmt=schema.get("format"),
        list_type=schema.get("x-kubernetes-list-type"),
        list_map_keys=tuple(schema.get("x-kubernetes-list-map-keys", ())),
    )
    if "properties" in schema:
        node.properties = {k: compile_schema(v) for k, v in schema["properties"].items()}
    if "items" in schema and isinstance(schema["items"], dict):
        node.items = compile_schema(schema["items"])
    add = schema.get("additionalProperties")
    if isinstance(add, dict):
        node.additional = compile_schema(add)
    elif add is True:
        node.additional_any = True
    _compile_exclusive(node, schema)
    for rule in schema.get("x-kubernetes-validations", ()):
        check = cel_check(rule.get("rule", ""), rule.get("message", ""))
        if check is not None:
            node.cel.append((check, rule.get("message") or rule.get("rule", "")))
    return node


_LOCK = threading.Lock()


def strip_descriptions(text: str) -> str:
    """Drop the ``description:`` fields of a CRD (most of the text, useless for validation) before parsing;
    a *property* named ``description`` (a key directly under ``properties:``) is kept."""
    out: list[str] = []
    ancestors: list[tuple[int, str]] = []   # (indent, stripped text) of enclosing kept lines
    skip_deeper_than: int | None = None
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if skip_deeper_than is not None:
            if not stripped or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if stripped:
            while ancestors and ancestors[-1][0] >= indent:
                ancestors.pop()
            if stripped.startswith("description:") and not (ancestors and ancestors[-1][1] == "properties:"):
                skip_deeper_than = indent
                continue
            ancestors.append((indent, stripped))
        out.append(line)
    return "\n".join(out)


@cache
def _crds() -> dict[str, dict[str, Any]]:
    """kind -> CRD spec (parsed once, without descriptions)."""
    text = strip_descriptions(CRD_FILE.read_text(encoding="utf-8"))
    docs = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return {d["spec"]["names"]["kind"]: d["spec"] for d in docs if isinstance(d, dict) and d.get("spec")}


_COMPILED: dict[tuple[str, str], SchemaNode | None] = {}


def schema_for(kind: str, version: str) -> SchemaNode | None:
    """The compiled top-level schema of ``kind`` at ``version`` (e.g. "v1alpha3"); None if no CRD has it."""
    key = (kind, version)
    if key in _COMPILED:
        return _COMPILED[key]
    with _LOCK:
        if key not in _COMPILED:
            crd = _crds().get(kind)
            compiled: SchemaNode | None = None
            for v in (crd or {}).get("versions", ()):
                if v.get("name") == version:
                    compiled = compile_schema(v["schema"]["openAPIV3Schema"])
            _COMPILED[key] = compiled
    return _COMPILED[key]


def compile_all() -> int:
    """Parse the CRDs and compile every kind's schema at every version now (they are otherwise compiled on
    first use, ~0.2 s: a warm spare control plane does it before it serves); returns how many."""
    count = 0
    for kind, crd in _crds().items():
        for v in crd.get("versions", ()):
            count += schema_for(kind, v.get("name", "")) is not None
    return count


def spec_required(kind: str, version: str) -> bool:
    """True if the CRD requires ``spec`` (ServiceEntry, WorkloadEntry do)."""
    node = schema_for(kind, version)
    return node is not None and "spec" in node.required


def cel_rules_of(kind: str, version: str) -> list[tuple[str, str, bool]]:
    """Every CEL rule of a kind's schema as (rule, message, implemented) — for coverage tests."""
    crd = _crds().get(kind) or {}
    out: list[tuple[str, str, bool]] = []

    def walk(s: Any) -> None:
        if isinstance(s, dict):
            for rule in s.get("x-kubernetes-validations", ()):
                r, m = rule.get("rule", ""), rule.get("message", "")
                out.append((r, m, cel_check(r, m) is not None))
            for k, v in s.items():
                if k != "x-kubernetes-validations":
                    walk(v)
        elif isinstance(s, list):
            for x in s:
                walk(x)

    for v in crd.get("versions", ()):
        if v.get("name") == version:
            walk(v["schema"]["openAPIV3Schema"])
    return out


# ---------------------------------------------------------------------------------------------- validating

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_ok(node: SchemaNode, value: Any) -> bool:
    t = node.type
    if node.int_or_string:
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    if t is None:
        return True
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def validate_value(node: SchemaNode, value: Any, path: str, out: list[Finding]) -> None:
    """Validate ``value`` at ``path`` against ``node``, appending findings to ``out``."""
    if value is None:
        if not node.nullable and node.type is not None:
            out.append(Finding(path, f"Invalid value: null: must be of type {node.type}"))
        return
    if not _type_ok(node, value):
        want = "integer or string" if node.int_or_string else node.type
        out.append(Finding(path, f"Invalid value: {_show(value)}: must be of type {want}, got "
                                 f"{_type_of(value)}"))
        return
    if node.enum is not None and value not in node.enum:
        allowed = ", ".join(_show(e) for e in node.enum)
        out.append(Finding(path, f"Unsupported value: {_show(value)}: supported values: {allowed}"))
    if isinstance(value, dict):
        _validate_object(node, value, path, out)
    elif isinstance(value, list):
        _validate_array(node, value, path, out)
    elif isinstance(value, str):
        _validate_string(node, value, path, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if node.minimum is not None and value < node.minimum:
            out.append(Finding(path, f"Invalid value: {_show(value)}: must be greater than or equal to "
                                     f"{_num(node.minimum)}"))
        if node.fmt == "int32" and not -(2**31) <= value <= 2**31 - 1:
            out.append(Finding(path, f"Invalid value: {_show(value)}: out of range for a 32-bit integer"))
        if node.maximum is not None and value > node.maximum:
            out.append(Finding(path, f"Invalid value: {_show(value)}: must be less than or equal to "
                                     f"{_num(node.maximum)}"))
    for check, message in node.cel:
        if not check(value):
            shown = "" if isinstance(value, dict | list) else f"{_show(value)}: "
            out.append(Finding(path, f"Invalid value: {shown}{message}"))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _validate_string(node: SchemaNode, value: str, path: str, out: list[Finding]) -> None:
    if node.min_length is not None and len(value) < node.min_length:
        out.append(Finding(path, f"Invalid value: {_show(value)}: must be at least {node.min_length} "
                                 "characters long"))
    if node.max_length is not None and len(value) > node.max_length:
        out.append(Finding(path, f"Too long: may not be longer than {node.max_length}"))
    if node.pattern is not None and not node.pattern.search(value):
        shown = _shown_pattern(node.pattern)
        out.append(Finding(path, f"Invalid value: {_show(value)}: must match {shown!r}"))


def _validate_array(node: SchemaNode, value: list[Any], path: str, out: list[Finding]) -> None:
    if node.min_items is not None and len(value) < node.min_items:
        out.append(Finding(path, f"Invalid value: must have at least {node.min_items} items"))
    if node.max_items is not None and len(value) > node.max_items:
        out.append(Finding(path, f"Too many: {len(value)}: must have at most {node.max_items} items"))
    if node.items is not None:
        for i, item in enumerate(value):
            validate_value(node.items, item, index_path(path, i), out)
    if node.list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                out.append(Finding(index_path(path, i), f"Duplicate value: {_show(item)}"))
            seen.append(item)
    elif node.list_type == "map" and node.list_map_keys:
        keys: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            ident = {k: item.get(k) for k in node.list_map_keys}
            sig = _show(ident)
            if sig in keys:
                out.append(Finding(index_path(path, i), f"Duplicate value: {sig}"))
            keys.add(sig)


def _validate_object(node: SchemaNode, value: dict[str, Any], path: str, out: list[Finding]) -> None:
    if node.max_properties is not None and len(value) > node.max_properties:
        out.append(Finding(path, f"Too many: {len(value)}: must have at most {node.max_properties} items"))
    for name in node.required:
        if name not in value:
            out.append(Finding(key_path(path, name), "Required value"))
    props = node.properties
    for k, v in value.items():
        kp = key_path(path, str(k))
        if props is not None and k in props:
            validate_value(props[k], v, kp, out)
        elif node.additional is not None:
            validate_value(node.additional, v, kp, out)
        elif node.additional_any or node.preserve_unknown:
            continue
        else:
            out.append(Finding(kp, f'unknown field "{k}"'))
    for valid, names in node.exclusive:
        if not valid(value):
            present = [n for n in names if n in value]
            out.append(Finding(path, f"only one of {', '.join(names)} may be set (got {', '.join(present)})"))


def validate_spec(kind: str, version: str, spec: Any, path: str = "spec") -> list[Finding]:
    """Structural findings for an object's ``spec`` (empty if the kind has no CRD schema)."""
    top = schema_for(kind, version)
    if top is None or top.properties is None or "spec" not in top.properties:
        return []
    out: list[Finding] = []
    validate_value(top.properties["spec"], spec, path, out)
    return out
