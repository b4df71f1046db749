"""The Prometheus text the agent serves: Envoy's stats with Istio's metric names (Envoy renders the stats
logger's ``istiocustom.<name>`` as ``envoy_istiocustom_<name>``; Istio's own custom stat namespace renders as
``<name>``; the HTTP metrics' one packed tag expanded into Istio's labels, :mod:`mizzen.telemetry.packed`),
and Istio's merged endpoint (Envoy's stats plus the app's own metrics, when the pod is annotated
``prometheus.io/scrape``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mizzen.telemetry import packed

__all__ = ["AppScrape", "app_scrape", "istio_names", "merge"]

_ISTIO = re.compile(r"^(# (?:TYPE|HELP) )?envoy_istiocustom_", re.MULTILINE)


def istio_names(text: str) -> str:
    """``envoy_istiocustom_istio_requests_total{...}`` -> ``istio_requests_total{...}`` (TYPE lines too), and
    the packed ``mizzen_istio`` tag -> Istio's labels."""
    return packed.expand(_ISTIO.sub(r"\1", text))


def merge(*parts: str) -> str:
    """Concatenate Prometheus texts (each ending with a newline)."""
    return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts)


@dataclass(frozen=True)
class AppScrape:
    """Where the app's own metrics are, from Istio's ``prometheus.io/*`` pod annotations."""

    port: int
    path: str = "/metrics"


def app_scrape(annotations: Mapping[str, str]) -> AppScrape | None:
    """``prometheus.io/scrape: "true"`` with ``prometheus.io/port`` (and ``prometheus.io/path``, default
    ``/metrics``), as Istio's metrics merging reads them; None when not annotated or the port is bad."""
    if str(annotations.get("prometheus.io/scrape", "")).lower() != "true":
        return None
    port = str(annotations.get("prometheus.io/port", ""))
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    path = str(annotations.get("prometheus.io/path") or "/metrics")
    return AppScrape(int(port), path if path.startswith("/") else "/" + path)
