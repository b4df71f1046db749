"""The CRD schema engine: every CEL rule of the supported kinds is implemented, the openAPIV3Schema keywords,
durations and field paths."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mizzen.config import schema
from mizzen.config.schema import Finding, compile_schema, parse_duration, validate_value

SUPPORTED = ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Sidecar")


@pytest.mark.parametrize("kind", SUPPORTED)
@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_config_every_cel_rule_of_supported_kinds_is_implemented(kind: str, version: str) -> None:
    rules = schema.cel_rules_of(kind, version)
    missing = [(r, m) for r, m, ok in rules if not ok]
    assert not missing
    assert schema.schema_for(kind, version) is schema.schema_for(kind, version)  # compiled once


def test_config_schema_for_unknown_kind_or_version() -> None:
    assert schema.schema_for("Nope", "v1") is None
    assert schema.schema_for("VirtualService", "v9") is None
    assert schema.validate_spec("Service", "v1", {"anything": 1}) == []
    assert schema.spec_required("ServiceEntry", "v1") and not schema.spec_required("VirtualService", "v1")


def check(s: dict[str, Any], value: Any) -> list[tuple[str, str]]:
    out: list[Finding] = []
    validate_value(compile_schema(s), value, "spec", out)
    return [(f.path, f.message) for f in out]


def test_config_schema_keywords() -> None:
    obj = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "target": {"x-kubernetes-int-or-string": True},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                 "x-kubernetes-list-type": "set"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 2},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "opt": {"type": "boolean", "nullable": True},
        "mode": {"type": "string", "enum": ["A", "B"]},
    }}
    assert check(obj, {"name": "ok", "port": 80, "target": "http", "tags": ["a"], "labels": {"x": "y"},
                       "free": {"any": [1]}, "opt": None, "mode": "A"}) == []
    assert check(obj, {"name": "ok", "target": 8080, "port": 80.0}) == []
    found = check(obj, {"name": "TooLong1", "port": 0, "target": [1], "tags": ["a", "a", "b"],
                        "labels": {"a": 1, "b": "2", "c": "3"}, "mode": "C", "zzz": 1, "opt": "yes"})
    assert set(found) == {
        ("spec.name", "Too long: may not be longer than 5"),
        ("spec.name", "Invalid value: \"TooLong1\": must match '^[a-z]+$'"),
        ("spec.port", "Invalid value: 0: must be greater than or equal to 1"),
        ("spec.target", "Invalid value: [1]: must be of type integer or string, got array"),
        ("spec.tags", "Too many: 3: must have at most 2 items"),
        ("spec.tags[1]", 'Duplicate value: "a"'),
        ("spec.labels", "Too many: 3: must have at most 2 items"),
        ("spec.labels.a", "Invalid value: 1: must be of type string, got integer"),
        ("spec.mode", 'Unsupported value: "C": supported values: "A", "B"'),
        ("spec.zzz", 'unknown field "zzz"'),
        ("spec.opt", 'Invalid value: "yes": must be of type boolean, got string'),
    }
    assert check(obj, {}) == [("spec.name", "Required value")]
    assert check(obj, {"name": "a", "port": None}) == [
        ("spec.port", "Invalid value: null: must be of type integer")]


def test_config_schema_one_of_exclusive_fields() -> None:
    match = {"type": "object", "properties": {k: {"type": "string"} for k in ("exact", "prefix", "regex")},
             "oneOf": [{"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]},
                                          {"required": ["regex"]}]}},
                       {"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]}
    assert check(match, {}) == []
    assert check(match, {"prefix": "/"}) == []
    assert check(match, {"prefix": "/", "regex": ".*", "exact": "/a"}) == [
        ("spec", "only one of exact, prefix, regex may be set (got exact, prefix, regex)")]


def test_config_schema_cel_rules_in_place() -> None:
    dur = {"type": "string", "x-kubernetes-validations": [
        {"rule": "duration(self) >= duration('1ms')",
         "message": "must be a valid duration greater than 1ms"}]}
    assert check(dur, "1.5s") == [] and check(dur, "1ms") == [] and check(dur, "1h2m") == []
    assert check(dur, "999us") == [
        ("spec", 'Invalid value: "999us": must be a valid duration greater than 1ms')]
    assert check(dur, "5") == [("spec", 'Invalid value: "5": must be a valid duration greater than 1ms')]
    one = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
           "x-kubernetes-validations": [{"rule": "(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) <= 1",
                                         "message": "only one of a or b can be set"}]}
    assert check(one, {"a": "x"}) == []
    assert check(one, {"a": "x", "b": "y"}) == [("spec", "Invalid value: only one of a or b can be set")]


@pytest.mark.parametrize(("text", "seconds"), [
    ("1.5s", 1.5), ("300ms", 0.3), ("3m", 180.0), ("1h30m", 5400.0), ("0", 0.0), ("-2s", -2.0),
    ("10us", 1e-5),
    (".5s", 0.5), ("1m0.5s", 60.5),
])
def test_config_parse_duration(text: str, seconds: float) -> None:
    got = parse_duration(text)
    assert got is not None and abs(got - seconds) < 1e-9


@pytest.mark.parametrize("text", ["", "5", "1.5", "s", "1 s", "1d", "ms", "1s2", "--1s"])
def test_config_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_config_field_paths() -> None:
    assert schema.key_path("spec", "http") == "spec.http"
    assert schema.key_path("", "spec") == "spec"
    assert schema.key_path("metadata.labels", "app.kubernetes.io/name") == (
        'metadata.labels["app.kubernetes.io/name"]')
    assert schema.index_path("spec.http", 2) == "spec.http[2]"
    assert schema.parent_path("spec.http[0].route[1].weight") == "spec.http[0].route[1]"
    assert schema.parent_path("spec.http[0]") == "spec.http"
    assert schema.parent_path('metadata.labels["a.b/c"]') == "metadata.labels"
    assert schema.parent_path("spec") == ""


def test_config_schema_validation_speed() -> None:
    spec = {"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/api"}}],
         "route": [{"destination": {"host": "reviews", "subset": f"v{i}"}, "weight": 50} for i in range(2)],
         "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s"} for _ in range(10)]}
    schema.validate_spec("VirtualService", "v1", spec)
    start = time.perf_counter()
    for _ in range(200):
        assert schema.validate_spec("VirtualService", "v1", spec) == []
    per = (time.perf_counter() - start) / 200
    print(f"\nschema validation of a 10-route VirtualService: {per * 1e6:.0f} us")


def test_config_crd_descriptions_are_stripped_without_changing_the_schemas() -> None:
    import yaml

    text = schema.CRD_FILE.read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    full = list(yaml.load_all(text, Loader=loader))
    fast = list(yaml.load_all(schema.strip_descriptions(text), Loader=loader))

    def without(x: Any, parent: str = "") -> Any:
        if isinstance(x, dict):
            return {k: without(v, k) for k, v in x.items() if k != "description" or parent == "properties"}
        if isinstance(x, list):
            return [without(v) for v in x]
        return x

    def schemas(docs: list[Any]) -> list[Any]:
        return [v["schema"] for d in docs for v in d["spec"]["versions"]]

    assert without(schemas(full)) == schemas(fast)
    kept = schema.strip_descriptions("properties:\n  description:\n    type: string\n    description: x\n")
    assert yaml.safe_load(kept) == {"properties": {"description": {"type": "string"}}}
