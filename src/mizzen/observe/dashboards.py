"""Istio's Grafana dashboards as PromQL: the queries of every panel, and Grafana's template variables
expanded the way Grafana does it, so a test (or the console) can run what a user's Grafana would.

- :func:`load` reads a dashboard JSON (``manifests/addons/dashboards/*.json``); :func:`panel_queries` gives
  each panel's targets (rows and nested panels included).
- :class:`Variable` is one template variable: ``custom`` (a fixed list, e.g. ``qrep``: source,destination) or
  ``query`` with ``query_result(<PromQL>)``; :meth:`Variable.values_from` applies the variable's regex to
  Grafana's rendering of each result (``name{l="v",...} value timestamp``).
- :func:`interpolate` substitutes ``$var``/``${var}``/``$__rate_interval``: a single value as is, several (or
  "All" without an ``allValue``) as Grafana's regex form ``(a|b)`` with each value regex-escaped.

Pure: running the queries is the caller's (see :func:`mizzen.observe.prometheus.query`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PanelQuery", "Variable", "interpolate", "load", "panel_queries", "render_result", "variables"]

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.DOTALL)
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str


@dataclass(frozen=True)
class Variable:
    name: str
    type: str                      # custom | query | datasource | ...
    query: str
    regex: str = ""
    include_all: bool = False
    multi: bool = False

    @property
    def inner_query(self) -> str | None:
        """The PromQL inside ``query_result(...)`` (None when the variable is not a query_result one)."""
        m = _QUERY_RESULT.match(self.query)
        return m.group(1) if m else None

    def custom_values(self) -> list[str]:
        return [v.strip() for v in self.query.split(",") if v.strip()]

    def values_from(self, lines: Sequence[str]) -> list[str]:
        """Grafana's regex over ``query_result`` lines: the first capture group (the whole line when the
        variable has no regex); duplicates removed, order kept."""
        out: list[str] = []
        pattern = _grafana_regex(self.regex) if self.regex else None
        for line in lines:
            if pattern is None:
                value = line
            else:
                m = pattern.match(line)
                if m is None:
                    continue
                value = m.group(1) if m.groups() else m.group(0)
            if value not in out:
                out.append(value)
        return out


def _grafana_regex(text: str) -> re.Pattern[str]:
    m = re.fullmatch(r"/(.*)/([gimsuy]*)", text, re.DOTALL)
    if m is None:
        return re.compile(text)
    flags = re.IGNORECASE if "i" in m.group(2) else 0
    return re.compile(m.group(1), flags)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(container: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for p in container.get("panels") or []:
        yield p
        yield from _panels(p)


def panel_queries(dashboard: Mapping[str, Any], name: str = "") -> list[PanelQuery]:
    """Every PromQL target of every panel (hidden targets too: Grafana runs them)."""
    out = []
    for p in _panels(dashboard):
        for t in p.get("targets") or []:
            expr = str(t.get("expr") or "").strip()
            if expr:
                out.append(PanelQuery(name or str(dashboard.get("title", "")), str(p.get("title") or ""),
                                      str(t.get("refId") or ""), expr))
    return out


def variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    out = []
    for v in (dashboard.get("templating") or {}).get("list") or []:
        query = v.get("query")
        if isinstance(query, Mapping):
            query = query.get("query", "")
        out.append(Variable(name=str(v["name"]), type=str(v.get("type", "")), query=str(query or ""),
                            regex=str(v.get("regex") or ""), include_all=bool(v.get("includeAll")),
                            multi=bool(v.get("multi"))))
    return out


def render_result(result: Sequence[Mapping[str, Any]]) -> list[str]:
    """Grafana's ``query_result`` rendering of an instant vector: ``name{l="v",...} value timestamp``."""
    lines = []
    for r in result:
        metric = dict(r.get("metric") or {})
        name = metric.pop("__name__", "")
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
        ts, value = (r.get("value") or [0, ""])[:2]
        lines.append(f"{name}{{{labels}}} {value} {int(float(ts) * 1000)}")
    return lines


def _format(values: Sequence[str]) -> str:
    """Grafana's Prometheus interpolation of a multi-value variable (``prometheusSpecialRegexEscape``): each
    value regex-escaped, then written as a PromQL string, whose own escaping doubles every backslash (PromQL
    has no string escape for a dot: a single backslash before one is a parse error)."""
    if len(values) == 1:
        return values[0]
    return "(" + "|".join(_REGEX_SPECIAL.sub(r"\\\1", v).replace("\\", "\\\\") for v in values) + ")"


def interpolate(expr: str, values: Mapping[str, Sequence[str]], rate_interval: str = "1m") -> str:
    """Substitute the variables Grafana would; unknown ones are left as written (so a test sees them)."""
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": rate_interval}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name in values:
            return _format(values[name])
        return m.group(0)

    return _VAR.sub(sub, expr)
