"""VirtualService delegation: a root VS rule with ``delegate: {name, namespace}`` is replaced by the
delegate VS's http rules, each with the root rule's match merged in, source conditions (sourceLabels,
sourceNamespace, gateways) included (Istio's mergeVirtualServicesIfNeeded, mergeHTTPRoute, hasConflict).

Delegate VSs have no hosts and are never bound on their own; a delegate child whose match conflicts with every
root match is dropped, and a delegate that is missing or not exported to the root's namespace drops the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mizzen.config.model import Config
from mizzen.core.push_context import exported_to

Rule = Mapping[str, Any]
LookupVS = Callable[[str, str], Config | None]

_ROOT_INHERITED = ("rewrite", "directResponse", "timeout", "retries", "fault", "mirror", "mirrorPercent",
                   "mirror_percent", "mirrorPercentage", "corsPolicy", "mirrors", "headers")


def expand_delegates(rules: list[Rule], vs_namespace: str, lookup: LookupVS) -> list[Rule]:
    """The VS's http rules with every delegate rule replaced by the merged delegate rules."""
    out: list[Rule] = []
    for rule in rules:
        ref = rule.get("delegate")
        if not ref:
            out.append(rule)
            continue
        ns = str(ref.get("namespace") or vs_namespace)
        child = lookup(ns, str(ref.get("name", "")))
        if child is None or child.spec.get("hosts"):
            continue
        if not exported_to(child.spec.get("exportTo"), child.namespace, vs_namespace):
            continue
        for sub in child.spec.get("http") or ():
            merged = merge_http_route(rule, sub)
            if merged is not None:
                out.append(merged)
    return out


def merge_http_route(root: Rule, child: Rule) -> Rule | None:
    matches, conflict = merge_match_requests(list(root.get("match") or ()), list(child.get("match") or ()))
    if conflict:
        return None
    out: dict[str, Any] = {k: v for k, v in child.items()}
    if matches:
        out["match"] = matches
    else:
        out.pop("match", None)
    root_name, child_name = str(root.get("name") or ""), str(child.get("name") or "")
    if not child_name:
        if root_name:
            out["name"] = root_name
    elif root_name:
        out["name"] = f"{root_name}-{child_name}"
    for key in _ROOT_INHERITED:
        if out.get(key) is None and root.get(key) is not None:
            out[key] = root[key]
    return out


def merge_match_requests(root: list[Rule], child: list[Rule]) -> tuple[list[Rule], bool]:
    """Each child match must fit inside some root match; returns the merged matches and a conflict flag."""
    if not root:
        return child, False
    if not child:
        return root, False
    out: list[Rule] = []
    for sub in child:
        found = False
        for rm in root:
            if _has_conflict(rm, sub):
                continue
            out.append(_merge_match(rm, sub))
            found = True
        if not found:
            return [], True
    return out, not out


def _merge_match(root: Rule, child: Rule) -> Rule:
    out: dict[str, Any] = dict(child)
    rn, cn = str(root.get("name") or ""), str(child.get("name") or "")
    if not cn and rn:
        out["name"] = rn
    elif cn and rn:
        out["name"] = f"{rn}-{cn}"
    for key in ("uri", "scheme", "method", "authority"):
        if out.get(key) is None and root.get(key) is not None:
            out[key] = root[key]
    for key in ("headers", "withoutHeaders", "queryParams"):
        merged = {**(root.get(key) or {}), **(child.get(key) or {})}
        if merged:
            out[key] = merged
    if not out.get("port") and root.get("port"):
        out["port"] = root["port"]
    labels = {**(root.get("sourceLabels") or {}), **(child.get("sourceLabels") or {})}
    if labels:
        out["sourceLabels"] = labels
    for key in ("sourceNamespace", "gateways", "statPrefix"):   # the root's, unless the child sets its own
        if not out.get(key) and root.get(key):
            out[key] = root[key]
    return out


def _has_conflict(root: Rule, leaf: Rule) -> bool:
    for key in ("uri", "scheme", "method", "authority"):
        if _string_conflict(root.get(key), leaf.get(key)):
            return True
    root_headers = root.get("headers") or {}
    for k, v in (leaf.get("headers") or {}).items():
        if _string_conflict(root_headers.get(k), v):
            return True
    root_without = root.get("withoutHeaders") or {}
    for k, v in (leaf.get("withoutHeaders") or {}).items():
        if _string_conflict(root_without.get(k), v):
            return True
    root_q = root.get("queryParams") or {}
    for k, v in (leaf.get("queryParams") or {}).items():
        if _string_conflict(root_q.get(k), v):
            return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    rp, lp = int(root.get("port") or 0), int(leaf.get("port") or 0)
    if rp > 0 and lp > 0 and rp != lp:
        return True
    if root.get("sourceNamespace") and leaf.get("sourceNamespace") != root["sourceNamespace"]:
        return True
    root_labels = root.get("sourceLabels") or {}
    if any(k in root_labels and root_labels[k] != v for k, v in (leaf.get("sourceLabels") or {}).items()):
        return True
    root_gws, leaf_gws = list(root.get("gateways") or ()), list(leaf.get("gateways") or ())
    return bool(root_gws and leaf_gws and not set(leaf_gws) <= set(root_gws))


def _string_conflict(root: Mapping[str, Any] | None, leaf: Mapping[str, Any] | None) -> bool:
    if root is None or leaf is None:
        return False
    if root.get("regex") or leaf.get("regex"):
        return True
    if root.get("exact"):
        return bool(leaf.get("prefix")) or leaf.get("exact") != root["exact"]
    if root.get("prefix"):
        prefix = str(root["prefix"])
        if leaf.get("prefix"):
            return not str(leaf["prefix"]).startswith(prefix)
        if leaf.get("exact"):
            return not str(leaf["exact"]).startswith(prefix)
    return True
