"""Every field of the supported kinds is either honoured by translation, warned about as not yet honoured, or
rejected by validation: walks each kind's CRD schema (every served version) and checks every leaf field
against the HONOURED / UNHONOURED / REJECTED tables, then checks each UNHONOURED entry really warns and each
REJECTED entry really errors, on an object built from the schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mizzen.config import schema
from mizzen.config.errors import Severity
from mizzen.config.model import Config, Source
from mizzen.config.schema import SchemaNode
from mizzen.config.validation import validate
from mizzen.config.validation.honoured import HONOURED, KINDS, REJECTED
from mizzen.config.validation.unhonoured import (
    _CAPTURE,
    MESSAGE,
    PARTLY,
    UNHONOURED,
    Unhonoured,
    pattern_tokens,
)


def _versions(kind: str) -> list[str]:
    return [v["name"] for v in schema._crds()[kind]["versions"]]


def _leaves(node: SchemaNode, path: list[str], out: list[tuple[str, ...]]) -> None:
    """Leaf field paths as token tuples (``[*]`` for list items and map values)."""
    if node.properties:
        for key, child in node.properties.items():
            _leaves(child, [*path, key], out)
        return
    if node.items is not None:
        _leaves(node.items, [*path, "[*]"], out)
        return
    if node.additional is not None and node.additional.properties:
        _leaves(node.additional, [*path, "[*]"], out)
        return
    out.append(tuple(path))


def leaves(kind: str) -> set[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for version in _versions(kind):
        node = schema.schema_for(kind, version)
        assert node is not None and node.properties is not None
        _leaves(node.properties["spec"], ["spec"], out)
    return set(out)


def covers(pattern: str, leaf: tuple[str, ...]) -> bool:
    tokens = pattern_tokens(pattern)
    return len(tokens) <= len(leaf) and all(t == leaf[i] for i, t in enumerate(tokens))


def show(leaf: tuple[str, ...]) -> str:
    return "".join(t if t.startswith("[") else f".{t}" for t in leaf).lstrip(".")


@pytest.mark.parametrize("kind", KINDS)
def test_config_every_crd_field_is_honoured_unhonoured_or_rejected(kind: str) -> None:
    honoured = HONOURED[kind]
    unhonoured = UNHONOURED.get(kind, ())
    rejected = REJECTED.get(kind, {})
    all_leaves = leaves(kind)
    assert len(all_leaves) >= 3
    missing = [show(leaf) for leaf in sorted(all_leaves)
               if not any(covers(p, leaf) for p in honoured)
               and not any(covers(u.pattern, leaf) for u in unhonoured)
               and not any(covers(p, leaf) for p in rejected)]
    assert missing == [], f"{kind}: fields neither HONOURED nor UNHONOURED nor REJECTED: {missing}"
    for leaf in all_leaves:
        is_honoured = any(covers(p, leaf) for p in honoured)
        for u in unhonoured:
            if covers(u.pattern, leaf):
                # unhonoured outright (then not honoured), or for some values / in some places (then honoured)
                assert is_honoured == bool(u.values or u.partial), f"{kind}: {show(leaf)}: {u}"
        if any(covers(p, leaf) for p in rejected):
            assert not is_honoured, f"{kind}: {show(leaf)} is both honoured and rejected"
    stale = [p for p in [*honoured, *(u.pattern for u in unhonoured), *rejected]
             if not any(covers(p, leaf) for leaf in all_leaves)]
    assert stale == [], f"{kind}: table entries that name no CRD field: {stale}"


def test_config_honoured_tables_cover_only_supported_kinds() -> None:
    assert set(HONOURED) == set(KINDS)
    assert set(UNHONOURED) <= set(KINDS) and set(REJECTED) <= set(KINDS)
    for entries in UNHONOURED.values():
        for u in entries:
            assert u.pattern.startswith("spec.") and u.reason


# --- objects built from the schema ------------------------------------------------------------------------

def _sample(node: SchemaNode, values: tuple[Any, ...]) -> Any:
    if values:
        return values[0]
    if node.properties:
        return {}
    if node.items is not None:
        return [_sample(node.items, ())]
    if node.additional is not None or node.additional_any:
        return {"k": "v"}
    return {"integer": 1, "number": 1.5, "boolean": True}.get(node.type or "", "x")


def place(spec: dict[str, Any], kind: str, pattern: str, values: tuple[Any, ...] = ()) -> str:
    """Put a sample value at ``pattern`` in ``spec`` (index 0 / key "k" for ``[*]``); returns its path."""
    node = schema.schema_for(kind, "v1")
    assert node is not None and node.properties is not None
    node = node.properties["spec"]
    tokens = pattern_tokens(pattern)[1:]
    container: Any = spec
    path = "spec"
    for i, tok in enumerate(tokens):
        last = i == len(tokens) - 1
        if tok == "[*]":
            if node.items is not None:
                node = node.items
                if not container:
                    container.append({} if node.properties else None)
                key: Any = 0
                path += "[0]"
            else:
                assert node.additional is not None, pattern
                node = node.additional
                key = next(iter(container), "k")
                path += f".{key}"
        else:
            assert node.properties is not None and tok in node.properties, pattern
            node = node.properties[tok]
            key = tok
            path += f".{tok}"
        if last:
            container[key] = _sample(node, values)
        else:
            nxt = container[key] if (isinstance(container, list) and container[key] is not None) or (
                isinstance(container, dict) and key in container) else None
            if nxt is None:
                nxt = [] if node.items is not None else {}
                container[key] = nxt
            container = nxt
    return path


# Minimal valid objects, so that semantic validation runs (REJECTED checks are semantic).
BASE: dict[str, dict[str, Any]] = {
    "Gateway": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
    "VirtualService": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}]}]},
    "Sidecar": {"egress": [{"hosts": ["*/*"], "port": {"number": 9080, "name": "http", "protocol": "HTTP"}}],
                "ingress": [{"port": {"number": 9080, "name": "http", "protocol": "HTTP"},
                             "defaultEndpoint": "127.0.0.1:8080"}]},
    "DestinationRule": {"host": "a"},
    "ServiceEntry": {"hosts": ["a.example.com"], "resolution": "STATIC",
                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                     "endpoints": [{"address": "1.1.1.1"}]},
    "WorkloadEntry": {"address": "1.1.1.1"},
    "Telemetry": {},
}


def _config(kind: str, spec: dict[str, Any]) -> Config:
    return Config(kind=kind, api_version="networking.istio.io/v1", name="obj", namespace="default", spec=spec,
                  source=Source("t.yaml", 1))


UNHONOURED_CASES = [(kind, u) for kind, entries in UNHONOURED.items() for u in entries]


@pytest.mark.parametrize(("kind", "entry"), UNHONOURED_CASES,
                         ids=[f"{k}:{u.pattern}:{','.join(u.values)}" for k, u in UNHONOURED_CASES])
def test_config_each_unhonoured_field_warns_with_its_reason(kind: str, entry: Unhonoured) -> None:
    spec = copy.deepcopy(BASE[kind])
    path = place(spec, kind, entry.pattern, entry.values)
    found = [(i.path, i.message) for i in validate(_config(kind, spec)) if i.severity is Severity.WARNING]
    value = entry.values[0] if entry.values else None
    assert (path, entry.message(value)) in found
    assert entry.message(value).startswith(f"{PARTLY if entry.partial else MESSAGE}: ")


def test_config_value_specific_entries_warn_only_for_their_values() -> None:
    spec: dict[str, Any] = {"host": "a",
                            "trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem"}}}
    assert [i for i in validate(_config("DestinationRule", spec)) if i.severity is Severity.WARNING] == []
    spec["trafficPolicy"]["tls"] = {"mode": "ISTIO_MUTUAL"}     # honoured (core.mtls)
    assert [i for i in validate(_config("DestinationRule", spec)) if i.severity is Severity.WARNING] == []
    sidecar = copy.deepcopy(BASE["Sidecar"])
    assert [i for i in validate(_config("Sidecar", sidecar)) if i.severity is Severity.WARNING] == []
    sidecar["ingress"][0]["captureMode"] = "NONE"
    warned = [(i.path, i.message) for i in validate(_config("Sidecar", sidecar))]
    assert warned == [("spec.ingress[0].captureMode", f"{MESSAGE}: NONE: {_CAPTURE}")]


# Values the schema needs before semantic validation runs (a duration here).
REJECTED_SAMPLES = {"spec.http[*].fault.delay.exponentialDelay": "1s"}
REJECTED_CASES = [(kind, p, m) for kind, entries in REJECTED.items() for p, m in entries.items()]


@pytest.mark.parametrize(("kind", "pattern", "message"), REJECTED_CASES, ids=[c[1] for c in REJECTED_CASES])
def test_config_each_rejected_field_is_an_error(kind: str, pattern: str, message: str) -> None:
    spec = copy.deepcopy(BASE[kind])
    assert [i for i in validate(_config(kind, spec)) if i.severity is Severity.ERROR] == []
    sample = (REJECTED_SAMPLES[pattern],) if pattern in REJECTED_SAMPLES else ()
    path = place(spec, kind, pattern, sample)
    errors = [(i.path, i.message) for i in validate(_config(kind, spec)) if i.severity is Severity.ERROR]
    assert (path, message) in errors


def test_config_base_objects_are_valid_and_quiet() -> None:
    for kind, spec in BASE.items():
        assert validate(_config(kind, copy.deepcopy(spec))) == [], kind
