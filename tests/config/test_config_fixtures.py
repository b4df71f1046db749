"""Istio's own data through the loader: validation cases (valid/invalid/unsupported), bookinfo samples, the
pilot routing inputs. Each document is loaded on its own (the fixture files reuse names across documents)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from mizzen.config.errors import Issue
from mizzen.config.loader import LoadResult, load_paths, load_text, parse_documents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "istio"
VALIDATION = FIXTURES / "validation"
SUPPORTED = ("destinationrule", "serviceentry", "workloadentry", "authz", "reqauth", "peerauth", "telemetry")
UNSUPPORTED = (
    "wasm", "envoyfilter", "proxyconfig", "workloadgroup",
)

# Istio routing inputs that current Istio itself rejects, with the reason.
GENUINELY_INVALID = {
    # HTTPRoute.websocketUpgrade was removed from the Istio API (websockets are always allowed); the v1 CRD
    # has no such field, so the API server rejects it as an unknown field under kubectl's strict validation.
    ("rule-websocket-route.yaml", "websocket-route"): 'unknown field "websocketUpgrade"',
    ("rule-websocket-route.yaml", "websocket-route2"): 'unknown field "websocketUpgrade"',
}


def _documents(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(id, data) of every document in a fixture file."""
    docs, issues = parse_documents(path.read_text(), str(path))
    assert not issues, [str(i) for i in issues]
    out = []
    for i, d in enumerate(docs):
        meta = d.data.get("metadata")
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        out.append((f"{path.name}#{i}:{name}", d.data))
    return out


def _load_one(data: dict[str, object], file: str) -> LoadResult:
    return load_text(yaml.safe_dump(data, sort_keys=False), file)


def _cases(suffix: str, prefixes: tuple[str, ...]) -> list[tuple[str, dict[str, object]]]:
    cases = []
    for p in sorted(VALIDATION.glob(f"*-{suffix}.yaml")):
        if p.name.split("-")[0] in prefixes:
            cases.extend(_documents(p))
    return cases


def _text(issues: list[Issue]) -> str:
    return "\n".join(str(i) for i in issues)


VALID = _cases("valid", SUPPORTED)
INVALID = _cases("invalid", SUPPORTED)
NOT_YET = _cases("valid", UNSUPPORTED) + _cases("invalid", UNSUPPORTED)


@pytest.mark.parametrize(("case", "data"), VALID, ids=[c for c, _ in VALID])
def test_config_istio_valid_cases_are_accepted(case: str, data: dict[str, object]) -> None:
    result = _load_one(data, case)
    assert result.ok, _text(result.errors)
    assert len(result.configs) == 1


@pytest.mark.parametrize(("case", "data"), INVALID, ids=[c for c, _ in INVALID])
def test_config_istio_invalid_cases_are_rejected_at_the_right_field(
        case: str, data: dict[str, object]) -> None:
    expected = str(data.pop("_err"))
    result = _load_one(data, case)
    assert not result.ok and not result.configs
    text = _text(result.errors)
    path, sep, reason = expected.partition(": ")
    if sep and path.startswith("spec"):
        # Kubernetes-style "field.path: Reason": the field path must be named and the reason given
        assert any(e.path == path and e.message.startswith(reason) for e in result.errors), text
    else:
        assert expected in text


@pytest.mark.parametrize(("case", "data"), NOT_YET, ids=[c for c, _ in NOT_YET])
def test_config_not_yet_supported_istio_kinds_are_rejected_clearly(
        case: str, data: dict[str, object]) -> None:
    data.pop("_err", None)
    result = _load_one(data, case)
    assert not result.ok
    kind, group = data["kind"], str(data["apiVersion"]).rpartition("/")[0]
    assert f"kind {kind} ({group}) is not supported yet" in _text(result.errors)


def test_config_fixture_sets_are_not_empty() -> None:
    assert len(VALID) >= 10 and len(INVALID) >= 12 and len(NOT_YET) >= 6


def test_config_bookinfo_networking_samples_load_cleanly() -> None:
    files = sorted((FIXTURES / "samples" / "bookinfo" / "networking").glob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        result = load_paths([f])
        assert result.ok, _text(result.errors)
        assert result.configs


def test_config_bookinfo_platform_manifest_loads_cleanly() -> None:
    result = load_paths([FIXTURES / "samples" / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"])
    assert result.ok, _text(result.errors)
    kinds = sorted({c.kind for c in result.configs})
    assert kinds == ["Deployment", "Service", "ServiceAccount"]
    reviews = [c for c in result.configs if c.kind == "Deployment" and c.name.startswith("reviews")]
    assert len(reviews) == 3


ROUTING = [(p.name, case, data) for p in sorted((FIXTURES / "routing").glob("*.yaml"))
           for case, data in _documents(p)]


@pytest.mark.parametrize(("file", "case", "data"), ROUTING, ids=[c for _, c, _ in ROUTING])
def test_config_istio_routing_inputs(file: str, case: str, data: dict[str, object]) -> None:
    result = _load_one(data, file)
    name = data["metadata"]["name"]  # type: ignore[index]
    if (file, name) in GENUINELY_INVALID:
        assert GENUINELY_INVALID[(file, name)] in _text(result.errors)
    else:
        assert result.ok, _text(result.errors)


def test_config_validating_all_fixtures_is_fast() -> None:
    paths = [FIXTURES / "routing", FIXTURES / "samples", VALIDATION]
    start = time.perf_counter()
    docs = 0
    for _ in range(3):
        result = load_paths(paths)
        docs = len(result.configs) + len(result.errors)
    elapsed = (time.perf_counter() - start) / 3
    print(f"\nloaded and validated all Istio fixtures (~{docs} documents/issues) in {elapsed * 1000:.1f} ms")


SEED = sorted((FIXTURES.parent / "seed").glob("*.yaml"))


@pytest.mark.parametrize("path", SEED, ids=[p.name for p in SEED])
def test_config_user_brief_listings_load_cleanly(path: Path) -> None:
    result = load_paths([path])
    assert result.ok, _text(result.errors)
    assert result.configs and not result.warnings
