"""Telemetry semantic checks as Istio's ValidateTelemetry does them: selector labels, selector and
targetRef(s) not together, provider names, tracing sampling 0-100 and custom tags, metrics overrides' tag
names and reporting interval, access-log filters.
"""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config
from mizzen.config.schema import index_path, key_path
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_list,
    as_str,
    check_duration,
    check_labels,
    register,
)


def _providers(r: Report, path: str, providers: Any) -> None:
    for i, p in enumerate(as_list(providers)):
        if not as_str(as_dict(p).get("name")):
            r.error(key_path(index_path(key_path(path, "providers"), i), "name"), "must set provider name")


@register("Telemetry")
def validate_telemetry(config: Config, r: Report) -> None:
    spec = config.spec
    sel = as_dict(spec.get("selector"))
    if sel:
        check_labels(r, "spec.selector.matchLabels", sel.get("matchLabels"))
        if spec.get("targetRef") or spec.get("targetRefs"):
            r.error("spec", "only one of selector or targetRefs can be set")
    if spec.get("targetRef") and spec.get("targetRefs"):
        r.error("spec", "only one of targetRefs or targetRef can be set")
    for i, t in enumerate(as_list(spec.get("tracing"))):
        path = index_path("spec.tracing", i)
        t = as_dict(t)
        _providers(r, path, t.get("providers"))
        pct = t.get("randomSamplingPercentage")
        if pct is not None and (not isinstance(pct, (int, float)) or not 0 <= float(pct) <= 100):
            r.error(key_path(path, "randomSamplingPercentage"), "must be in range [0.0, 100.0]")
        for name, tag in as_dict(t.get("customTags")).items():
            tp = key_path(key_path(path, "customTags"), str(name))
            tag = as_dict(tag)
            if not tag:
                r.error(tp, "tag must have a type")
            elif as_dict(tag.get("literal")) and not as_str(as_dict(tag["literal"]).get("value")):
                r.error(key_path(tp, "literal.value"), "literal tag value may not be empty")
            elif as_dict(tag.get("header")) and not as_str(as_dict(tag["header"]).get("name")):
                r.error(key_path(tp, "header.name"), "header tag name may not be empty")
            elif as_dict(tag.get("environment")) and not as_str(as_dict(tag["environment"]).get("name")):
                r.error(key_path(tp, "environment.name"), "environment tag name may not be empty")
    for i, m in enumerate(as_list(spec.get("metrics"))):
        path = index_path("spec.metrics", i)
        m = as_dict(m)
        _providers(r, path, m.get("providers"))
        if m.get("reportingInterval") is not None:
            secs = check_duration(r, key_path(path, "reportingInterval"), m.get("reportingInterval"))
            if secs is not None and secs <= 0:
                r.error(key_path(path, "reportingInterval"), "reporting interval must be greater than 0")
        for j, o in enumerate(as_list(m.get("overrides"))):
            op = index_path(key_path(path, "overrides"), j)
            for tag, tov in as_dict(as_dict(o).get("tagOverrides")).items():
                tp = key_path(key_path(op, "tagOverrides"), str(tag))
                if not str(tag):
                    r.error(tp, "tag name must not be empty")
                tov = as_dict(tov)
                operation = as_str(tov.get("operation")) or "UPSERT"
                if operation == "UPSERT" and not as_str(tov.get("value")):
                    r.error(key_path(tp, "value"), "must be set when operation is UPSERT")
                elif operation == "REMOVE" and as_str(tov.get("value")):
                    r.error(key_path(tp, "value"), "must not be set when operation is REMOVE")
    for i, a in enumerate(as_list(spec.get("accessLogging"))):
        path = index_path("spec.accessLogging", i)
        a = as_dict(a)
        _providers(r, path, a.get("providers"))
        flt = as_dict(a.get("filter"))
        if a.get("filter") is not None and not as_str(flt.get("expression")):
            r.error(key_path(path, "filter.expression"), "must set an expression")
