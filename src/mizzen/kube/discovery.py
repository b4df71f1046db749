"""meshConfig ``discoverySelectors``: which namespaces of the cluster the control plane reads, as istiod's
discovery namespaces filter does.

``discoverySelectors`` is a list of Kubernetes LabelSelectors over Namespace labels: a namespace is selected
when any of them matches its labels (an empty selector ``{}`` matches every namespace); no selectors (the
field absent or ``[]``) selects every namespace. Cluster-scoped objects always pass. A
:class:`NamespaceFilter` keeps the selectors (from the mesh config) and the labels of every Namespace (from
the registry's Namespace watch) and answers :meth:`NamespaceFilter.admits`; when a change of either selects
or deselects namespaces, it tells its listeners which (``None``: any may have changed), and they re-read
the objects of those namespaces: the config source adds or removes their Istio config and Services, the
registry their endpoints and Pods. Nothing restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mizzen.config.labelselector import DOES_NOT_EXIST, EXISTS, IN, NOT_IN, matches

__all__ = ["DiscoverySelectorError", "NamespaceFilter", "parse_discovery_selectors"]

log = logging.getLogger(__name__)

Selector = Mapping[str, Any]
# which namespaces' membership changed (None: any may have: re-read everything)
Listener = Callable[[frozenset[str] | None], None]


class DiscoverySelectorError(ValueError):
    """``discoverySelectors`` is not a list of LabelSelectors (one line)."""


def _selector(sel: Any, where: str) -> dict[str, Any]:
    if sel is None:
        sel = {}
    if not isinstance(sel, dict):
        raise DiscoverySelectorError(f"{where}: expected a LabelSelector mapping, got {type(sel).__name__}")
    unknown = sorted(set(sel) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise DiscoverySelectorError(f"{where}: unknown field {unknown[0]!r} (want matchLabels, "
                                     "matchExpressions)")
    labels = sel.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise DiscoverySelectorError(f"{where}.matchLabels: expected a mapping of label to string value")
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise DiscoverySelectorError(f"{where}.matchExpressions: expected a list")
    for i, e in enumerate(exprs):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("key"), str) or not e["key"]:
            raise DiscoverySelectorError(f"{at}: expected a mapping with a key")
        op, values = e.get("operator"), e.get("values") or []
        if op not in (IN, NOT_IN, EXISTS, DOES_NOT_EXIST):
            raise DiscoverySelectorError(f"{at}.operator: {op!r} is not a valid label selector operator "
                                         "(In, NotIn, Exists, DoesNotExist)")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DiscoverySelectorError(f"{at}.values: expected a list of strings")
        if op in (IN, NOT_IN) and not values:
            raise DiscoverySelectorError(f"{at}.values: must not be empty for operator {op}")
        if op in (EXISTS, DOES_NOT_EXIST) and values:
            raise DiscoverySelectorError(f"{at}.values: must be empty for operator {op}")
    return {"matchLabels": {str(k): v for k, v in labels.items()}, "matchExpressions": exprs}


def parse_discovery_selectors(value: Any) -> tuple[dict[str, Any], ...]:
    """The ``discoverySelectors`` of a mesh config document (absent/null: ``()``, every namespace)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DiscoverySelectorError(f"discoverySelectors: expected a list of LabelSelectors, got "
                                     f"{type(value).__name__}")
    return tuple(_selector(s, f"discoverySelectors[{i}]") for i, s in enumerate(value))


class NamespaceFilter:
    """The namespaces the control plane reads (see the module's docstring)."""

    def __init__(self) -> None:
        self.selectors: tuple[dict[str, Any], ...] = ()
        self.labels: dict[str, dict[str, str]] = {}   # every known Namespace's labels
        self.selected: frozenset[str] = frozenset()   # the known namespaces selected (with selectors)
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def admits(self, namespace: str) -> bool:
        """Whether objects of ``namespace`` are read ("" is cluster scope: always)."""
        return not namespace or not self.selectors or namespace in self.selected

    def set_selectors(self, selectors: tuple[dict[str, Any], ...]) -> None:
        """The mesh config's selectors (from :func:`parse_discovery_selectors`)."""
        if selectors == self.selectors:
            return
        had = bool(self.selectors)
        self.selectors = selectors
        before = self.selected
        self.selected = self._select()
        log.info("discoverySelectors %s: %s", "set" if selectors else "removed",
                 f"{len(self.selected)} of {len(self.labels)} namespaces selected" if selectors
                 else "every namespace selected")
        # from or to "every namespace": anything may change; else the difference
        self._notify(None if not had or not selectors else before ^ self.selected)

    def set_namespaces(self, labels: Mapping[str, Mapping[str, str]]) -> None:
        """Every Namespace's labels (after any Namespace change)."""
        self.labels = {name: dict(ls) for name, ls in labels.items()}
        before = self.selected
        self.selected = self._select()
        if self.selectors and before != self.selected:
            self._notify(before ^ self.selected)

    def _select(self) -> frozenset[str]:
        if not self.selectors:
            return frozenset()
        return frozenset(name for name, ls in self.labels.items()
                         if any(matches(s, ls) for s in self.selectors))

    def _notify(self, changed: frozenset[str] | None) -> None:
        for listener in list(self._listeners):
            listener(changed)
