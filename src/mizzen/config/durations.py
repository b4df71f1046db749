"""The one duration parser: Go's ``time.ParseDuration``, as Istio's CRD validation and translation use it.

``"300ms"``, ``"1.5s"``, ``"1h30m"``, ``"-2s"``, ``"0"``; units ns, us, µs (U+00B5 micro sign), μs (U+03BC
Greek mu), ms, s, m, h, each number with an optional fraction. Validation and every translator read
durations through here, so a duration that validates is one that translates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["UNIT_SECONDS", "parse_duration", "seconds"]

UNIT_SECONDS: Mapping[str, float] = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float | None:
    """A Go duration string in seconds; None if malformed (empty, no unit, unknown unit, stray text)."""
    s = text.strip()
    if not s:
        return None
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            return None
        total += float(m.group(1)) * UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total if pos else None


def seconds(value: Any) -> float | None:
    """A duration field's value in seconds: a Go duration string, a number of seconds, or a protobuf-JSON
    ``{seconds, nanos}`` mapping; None when absent or malformed."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    return parse_duration(str(value))
