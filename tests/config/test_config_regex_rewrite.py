"""``rewrite.uriRegexRewrite``: the substitution must be one RE2 accepts for the match regex (RE2's
CheckRewriteString rules): ``\\N`` only for groups the regex has, ``\\`` only before a digit or ``\\``.
Envoy loads such a route without complaint and then forwards the path unrewritten, so validation rejects it
with the field path."""

from __future__ import annotations

import pytest

from mizzen.config.errors import Severity
from mizzen.config.loader import load_text
from mizzen.config.validation.common import re2_rewrite_error

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r, namespace: default}}
spec:
  hosts: [a]
  http:
  - rewrite: {{uriRegexRewrite: {{match: '{match}', rewrite: '{rewrite}'}}}}
    route: [{{destination: {{host: a}}}}]
"""
PATH = "spec.http[0].rewrite.uriRegexRewrite.rewrite"


@pytest.mark.parametrize(("match", "rewrite", "reason"), [
    ("^/x.*", "/\\2", "rewrite references group \\2 but the match regex '^/x.*' has no capture groups"),
    ("^/(x)(.*)", "/\\3", "has only 2 capture groups"),
    ("^/(x)", "/\\1\\q", "'\\' must be followed by a digit or '\\', got '\\q'"),
    ("^/(x)", "/\\1\\", "'\\' is not allowed at the end"),
])
def test_rewrite_re2_refuses_is_rejected(match: str, rewrite: str, reason: str) -> None:
    result = load_text(VS.format(match=match, rewrite=rewrite), "vs.yaml")
    errors = [e for e in result.errors if e.severity is Severity.ERROR]
    assert [e.path for e in errors] == [PATH], [str(e) for e in errors]
    assert reason in errors[0].message and "Envoy would forward the path unrewritten" in errors[0].message
    assert errors[0].line == 8 and not result.configs


@pytest.mark.parametrize(("match", "rewrite"), [
    ("^/x.*", "/y"), ("^/(x)(.*)", "/\\2/\\1"), ("^/x.*", "/\\0"), ("^/(?P<n>x)", "/\\1\\\\"),
    ("^/(x)(?:y)", "/\\1"),
])
def test_valid_rewrites_pass(match: str, rewrite: str) -> None:
    result = load_text(VS.format(match=match, rewrite=rewrite), "vs.yaml")
    assert not result.errors, [str(e) for e in result.errors]
    assert re2_rewrite_error(match, rewrite) is None


def test_an_invalid_regex_is_reported_once_on_the_match() -> None:
    result = load_text(VS.format(match="(", rewrite="/\\1"), "vs.yaml")
    assert [e.path for e in result.errors] == ["spec.http[0].rewrite.uriRegexRewrite.match"]
