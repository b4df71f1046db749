"""kubectl's label-selector syntax parsed into a Kubernetes LabelSelector and matched (Kubernetes' semantics:
``!=`` and ``notin`` also match an absent label)."""

from __future__ import annotations

import pytest

from mizzen.config.labelselector import SelectorError, matches, parse

LABELS = {"app": "reviews", "version": "v2", "tier": ""}


@pytest.mark.parametrize(("text", "want"), [
    ("app=reviews", {"matchLabels": {"app": "reviews"}}),
    ("app==reviews,version!=v1", {
        "matchLabels": {"app": "reviews"},
        "matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v1"]}]}),
    (" version in ( v2 , v3 ) ", {"matchExpressions": [{"key": "version", "operator": "In",
                                                        "values": ["v2", "v3"]}]}),
    ("version notin (v1)", {"matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v1"]}]}),
    ("app,!canary", {"matchExpressions": [{"key": "app", "operator": "Exists"},
                                          {"key": "canary", "operator": "DoesNotExist"}]}),
    ("tier=", {"matchLabels": {"tier": ""}}),
    ("sidecar.istio.io/inject=false", {"matchLabels": {"sidecar.istio.io/inject": "false"}}),
    ("", {}),
])
def test_parse(text: str, want: dict[str, object]) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(("text", "selected"), [
    ("app=reviews", True), ("app=ratings", False), ("app!=ratings", True), ("canary!=true", True),
    ("version in (v1,v2)", True), ("version notin (v2)", False), ("canary notin (x)", True),
    ("app", True), ("canary", False), ("!canary", True), ("!app", False), ("tier=", True),
    ("app=reviews,version=v1", False), ("", True),
])
def test_matches(text: str, selected: bool) -> None:
    assert matches(parse(text), LABELS) is selected


@pytest.mark.parametrize(("text", "error"), [
    ("app in ()", "the set of values must not be empty"),
    ("app in (x", "missing ')'"),
    ("app x", "unexpected 'x' after label key 'app'"),
    ("app=x,", "trailing ','"),
    ("=x", "expected a label key"),
    ("-bad=x", "invalid label key '-bad'"),
    ("app=-x", "invalid label value '-x'"),
    ("!", "expected a label key after '!'"),
])
def test_errors_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(SelectorError) as e:
        parse(text)
    assert error in str(e.value)
