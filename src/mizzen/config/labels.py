"""The one label-selector matcher (Kubernetes equality-based ``matchLabels``) for the whole code base."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["labels_match", "selects"]


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Every selector label is present in ``labels`` with the same value; an empty selector matches all
    (Gateway ``selector``, Sidecar and DestinationRule subsets' labels)."""
    return not selector or all(labels.get(str(k)) == str(v) for k, v in selector.items())


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Service's or ServiceEntry's workload selector: like :func:`labels_match`, but an empty selector
    selects nothing (Kubernetes: a Service without a selector has no managed endpoints)."""
    return bool(selector) and labels_match(selector, labels)
