"""kubectl's label-selector syntax (``-l``): parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` into a
Kubernetes ``LabelSelector`` (``matchLabels`` + ``matchExpressions``) and match one against a label map.

Grammar and semantics are Kubernetes' (``k8s.io/apimachinery/pkg/labels/selector.go``): requirements
are ANDed; ``=``/``==``/``in`` need the label with one of the values; ``!=``/``notin`` also match when the
label is absent; ``key`` needs it present, ``!key`` absent. An empty selector matches everything. The
equality part is matched by the code base's one equality matcher (:func:`mizzen.config.labels.labels_match`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from mizzen.config.labels import labels_match

__all__ = ["SelectorError", "matches", "parse"]

IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "In", "NotIn", "Exists", "DoesNotExist"

# a qualified key: optional DNS-subdomain prefix and '/', then a name of up to 63 characters
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")
_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),!=]+)")


class SelectorError(ValueError):
    """The selector text is not valid kubectl syntax; the message says where."""


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:   # pragma: no cover - the pattern accepts every non-space character
            raise SelectorError(f"unable to parse requirement at {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _key(tok: str) -> str:
    if not _KEY.match(tok):
        raise SelectorError(f"invalid label key {tok!r}: want an optional DNS prefix and '/', then a name of "
                            "at most 63 alphanumerics, '-', '_' or '.' starting and ending alphanumeric")
    return tok


def _value(tok: str) -> str:
    if not _VALUE.match(tok) or len(tok) > 63:
        raise SelectorError(f"invalid label value {tok!r}: at most 63 alphanumerics, '-', '_' or '.', "
                            "starting and ending alphanumeric")
    return tok


def parse(text: str) -> dict[str, Any]:
    """``app=reviews,version in (v2,v3),!canary`` -> ``{"matchLabels": {"app": "reviews"},
    "matchExpressions": [{"key": "version", "operator": "In", "values": ["v2", "v3"]}, ...]}``."""
    toks = _tokens(text)
    labels: dict[str, str] = {}
    exprs: list[dict[str, Any]] = []
    i = 0

    def peek(k: int = 0) -> str | None:
        return toks[i + k] if i + k < len(toks) else None

    while i < len(toks):
        if peek() == "!":
            i += 1
            tok = peek()
            if tok is None or tok in "(),!=":
                raise SelectorError(f"expected a label key after '!' in {text!r}")
            exprs.append({"key": _key(tok), "operator": DOES_NOT_EXIST})
            i += 1
        else:
            tok = peek()
            if tok is None or tok in ("(", ")", ",", "=", "==", "!="):
                raise SelectorError(f"expected a label key at {' '.join(toks[i:])!r} in {text!r}")
            key = _key(tok)
            i += 1
            op = peek()
            if op in (None, ","):
                exprs.append({"key": key, "operator": EXISTS})
            elif op in ("=", "==", "!="):
                i += 1
                val = peek()
                if val is None or val in (",", "(", ")", "=", "==", "!=", "!"):
                    val = ""          # "a=" selects the empty value, like Kubernetes
                else:
                    i += 1
                val = _value(val)
                if op == "!=":
                    exprs.append({"key": key, "operator": NOT_IN, "values": [val]})
                elif key in labels and labels[key] != val:
                    exprs.append({"key": key, "operator": IN, "values": [val]})
                else:
                    labels[key] = val
            elif op in ("in", "notin"):
                i += 1
                if peek() != "(":
                    raise SelectorError(f"expected '(' after {op!r} in {text!r}")
                i += 1
                values: list[str] = []
                while peek() not in (")", None):
                    tok = peek()
                    assert tok is not None
                    if tok == ",":
                        i += 1
                        continue
                    values.append(_value(tok))
                    i += 1
                if peek() != ")":
                    raise SelectorError(f"missing ')' in {text!r}")
                i += 1
                if not values:
                    raise SelectorError(f"{key} {op} (): the set of values must not be empty")
                exprs.append({"key": key, "operator": IN if op == "in" else NOT_IN, "values": values})
            else:
                raise SelectorError(f"unexpected {op!r} after label key {key!r} in {text!r} "
                                    "(want =, ==, !=, in, notin, or ',')")
        if peek() is not None:
            if peek() != ",":
                raise SelectorError(f"expected ',' before {peek()!r} in {text!r}")
            i += 1
            if peek() is None:
                raise SelectorError(f"trailing ',' in {text!r}")
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = labels
    if exprs:
        out["matchExpressions"] = exprs
    return out


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = str(expr.get("key", "")), expr.get("operator")
    values: Sequence[str] = [str(v) for v in expr.get("values") or []]
    if op == IN:
        return key in labels and labels[key] in values
    if op == NOT_IN:
        return key not in labels or labels[key] not in values
    if op == EXISTS:
        return key in labels
    if op == DOES_NOT_EXIST:
        return key not in labels
    return False


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (as :func:`parse` returns) against a label map; empty matches everything."""
    if not labels_match(selector.get("matchLabels"), labels):
        return False
    return all(_expression_matches(e, labels) for e in selector.get("matchExpressions") or [])
