"""Envoy's ``/stats/prometheus?filter=REGEX`` with Istio's metric names, on the agent's metrics endpoints.

Envoy keeps the filter's RE2 semantics: a stat is shown when the regex matches part of its full name
(``re2::RE2::PartialMatch`` on e.g. ``istiocustom.istio_requests_total.<tags>`` in Istio). Two of Istio's
families are not Envoy stats here: ``istio_requests_total`` and (when both are enabled) Istio's
``istio_request_duration_milliseconds`` come from the one histogram the stats loggers record,
:data:`mizzen.telemetry.metrics.COUNTED_DURATION` (:func:`mizzen.telemetry.prometheus.with_request_count`).
So a filter naming either (as it would match in Istio: ``istiocustom.<name>``) is widened for Envoy to that
histogram too, and the text, once renamed, keeps only the derived families the filter names: ``filter=
istio_requests_total`` returns that family and nothing of the duration, ``filter=istio_request_duration``
the histogram under Istio's name and no request count. Everything else Envoy filters itself, as in Istio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import re2

from mizzen.config.validation.common import re2_error
from mizzen.telemetry.metrics import COUNTED_DURATION, STAT_NAMESPACE, Metric

__all__ = ["BadFilter", "StatsFilter", "filter_families", "stats_filter"]

# the families derived from the counted histogram
DERIVED = (Metric.REQUEST_COUNT.value, Metric.REQUEST_DURATION.value)
# the counted histogram's full Envoy names: ``istiocustom.<name>`` then its tags, if any
COUNTED_STAT = "^" + re2.escape(f"{STAT_NAMESPACE}.{COUNTED_DURATION}") + r"(?:\.|$)"
_SUFFIXES = ("", "_bucket", "_sum", "_count")


class BadFilter(ValueError):
    """A ``filter=`` that is no RE2 regex (Envoy answers 400 ``Invalid re2 regex`` too)."""


@dataclass(frozen=True)
class StatsFilter:
    """One ``filter=``: ``envoy`` is the regex to send Envoy, ``derived`` the derived families it keeps."""

    regex: str
    envoy: str
    derived: frozenset[str]

    def matches(self, name: str) -> bool:
        """Envoy's test: the regex matches part of ``name``."""
        return re2.search(self.regex, name) is not None

    def renamed(self, text: str) -> str:
        """Envoy's text with Istio's names (:func:`mizzen.telemetry.prometheus.istio_names`) without the
        derived families the filter does not name."""
        if not self.derived and COUNTED_DURATION not in text:
            return text            # nothing derived could be there (Envoy filtered its own stats)
        drop = frozenset(DERIVED) - self.derived
        return filter_families(text, lambda family: family not in drop) if drop else text


def stats_filter(regex: str) -> StatsFilter:
    """The filter for ``regex`` (Istio's names); :class:`BadFilter` when RE2 does not compile it."""
    if (err := re2_error(regex)) is not None:
        raise BadFilter(f"invalid filter= regex {regex!r}: {err}")
    derived = frozenset(name for name in DERIVED
                        if re2.search(regex, f"{STAT_NAMESPACE}.{name}") is not None)
    envoy = f"(?:{regex})|{COUNTED_STAT}" if derived else regex
    return StatsFilter(regex, envoy, derived)


def _name(line: str) -> str:
    end = len(line)
    for sep in ("{", " "):
        if (i := line.find(sep)) >= 0:
            end = min(end, i)
    return line[:end]


def filter_families(text: str, keep: Callable[[str], bool]) -> str:
    """Prometheus text with only the families ``keep`` accepts: a family is named by its ``# TYPE`` /
    ``# HELP`` line, and its series are that name with a histogram's or summary's suffixes (a series
    without such a line is a family of its own). Other comments go with the family they are in."""
    out, family, kept = [], "", True
    for line in text.splitlines():
        if line.startswith(("# TYPE ", "# HELP ")):
            family = line[7:].partition(" ")[0]
            kept = keep(family)
        elif line and not line.startswith("#"):
            name = _name(line)
            if not (name.startswith(family) and name[len(family):] in _SUFFIXES):
                family, kept = name, keep(name)
        if kept:
            out.append(line)
    return "\n".join(out) + "\n" if out else ""
