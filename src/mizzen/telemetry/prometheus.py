"""The Prometheus text the agent serves: Envoy's stats with Istio's metric names (Envoy renders the stats
logger's ``istiocustom.<name>`` as ``envoy_istiocustom_<name>``; Istio's own custom stat namespace renders as
``<name>``; the HTTP metrics' one packed tag expanded into Istio's labels, :mod:`mizzen.telemetry.packed`),
and Istio's merged endpoint (Envoy's stats plus the app's own metrics, when the pod is annotated
``prometheus.io/scrape``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mizzen.telemetry import packed
from mizzen.telemetry.metrics import COUNTED_DURATION, Metric
from mizzen.telemetry.packed import SeriesSum

__all__ = ["AppScrape", "app_scrape", "istio_names", "merge", "with_request_count"]

_ENVOY_PREFIX = "envoy_istiocustom_"
_LEADS = ("", "# TYPE ", "# HELP ")


def _without_envoy_prefix(text: str) -> str:
    """``envoy_istiocustom_`` dropped where a line, or a TYPE/HELP line's name, starts with it (plain string
    replacements: a regex over every line cost ~2 ms per scrape)."""
    if _ENVOY_PREFIX not in text:
        return text
    for lead in _LEADS:
        text = text.replace(f"\n{lead}{_ENVOY_PREFIX}", f"\n{lead}")
    for lead in _LEADS:
        if text.startswith(lead + _ENVOY_PREFIX):
            return lead + text[len(lead) + len(_ENVOY_PREFIX):]
    return text


def istio_names(text: str) -> str:
    """``envoy_istiocustom_istio_requests_total{...}`` -> ``istio_requests_total{...}`` (TYPE lines too), the
    packed ``mizzen_istio`` tag -> Istio's labels, and ``istio_requests_total`` from the counted duration
    histogram (:func:`with_request_count`)."""
    return with_request_count(packed.expand(_without_envoy_prefix(text)))


_DURATION = Metric.REQUEST_DURATION.value
_REQUESTS = Metric.REQUEST_COUNT.value
_COUNT = _DURATION + "_count"
_REWRITTEN = (COUNTED_DURATION, _DURATION, _REQUESTS)


def with_request_count(text: str) -> str:
    """The counted duration histogram (:data:`mizzen.telemetry.metrics.COUNTED_DURATION`: the stats loggers
    count requests only there) as ``istio_request_duration_milliseconds``, and each of its series' ``_count``
    as ``istio_requests_total`` with the same labels. Exact when Envoy merged its workers' histograms just
    before the text was rendered (the agent makes sure: :mod:`mizzen.agent.metrics_server`). Series that
    coincide with real ones (a proxy whose other direction has a real counter) are added up, and each family
    keeps one ``# TYPE`` line: a scrape never holds a series or a family twice. Only these three families are
    read line by line; the others' blocks are kept as they are."""
    if COUNTED_DURATION not in text:
        return text
    out: list[str | SeriesSum] = []
    families: dict[str, SeriesSum] = {}

    def family(name: str, kind: str) -> SeriesSum:
        if (f := families.get(name)) is None:
            f = families[name] = SeriesSum()
            f.line(f"# TYPE {name} {kind}")
            out.append(f)
        return f

    for block in packed.family_blocks(text):
        head, _, body = block.partition("\n")
        name, _, kind = head[7:].partition(" ")
        if not head.startswith("# TYPE ") or name not in _REWRITTEN:
            out.append(block)
            continue
        counted = name == COUNTED_DURATION
        if counted:
            name = _DURATION
            family(_REQUESTS, "counter")
        cur = family(name, kind)
        for line in body.rstrip("\n").split("\n") if body.strip("\n") else ():
            if not line or line.startswith("#"):
                cur.line(line)
                continue
            series, _, value = line.rpartition(" ")
            if counted:
                series = _DURATION + series[len(COUNTED_DURATION):]
                if series.startswith(_COUNT) and series[len(_COUNT):len(_COUNT) + 1] in ("{", ""):
                    families[_REQUESTS].series(_REQUESTS + series[len(_COUNT):], value)
            cur.series(series, value)
    return "".join(p if isinstance(p, str) else p.text() + "\n" for p in out)


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
