"""Distribution reports without a cluster: a replica's report built from its proxies' progress, its
ConfigMap text read back (and refused when malformed), and the leader's index of the other replicas'
reports: summed per object at a generation, its own ignored, stale ones dropped, changes announced."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mizzen.config.model import Config, ConfigKey
from mizzen.kube.distribution_report import (
    DATA_KEY,
    LABEL,
    Report,
    ReportError,
    ReportIndex,
    build_report,
    parse_report,
    report_name,
    resource_key,
)

T0 = dt.datetime(2026, 12, 7, 8, 0, 0, tzinfo=dt.UTC)


def vs(name: str, ns: str = "app") -> Config:
    return Config("VirtualService", "networking.istio.io/v1", name, ns, {"hosts": [name]})


def configmap(report: Report, name: str | None = None, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name or report_name(report.reporter), "namespace": "istio-system",
                         "labels": {LABEL: "true"}, "resourceVersion": version},
            "data": {DATA_KEY: report.to_yaml()}}


def test_resource_key_is_istios_shape() -> None:
    key = ConfigKey("VirtualService", "app", "reviews")
    assert resource_key(key, 3) == "networking.istio.io/v1/virtualservices/app/reviews/3"
    assert resource_key(ConfigKey("Service", "app", "reviews"), 1) is None     # not an Istio kind
    assert report_name("istiod-abc") == "istiod-abc-distribution"


def test_report_built_and_read_back() -> None:
    a, b, rejected, unknown = vs("a"), vs("b"), vs("bad"), vs("new")
    generations = {a.key: 2, b.key: 5, rejected.key: 1}
    acked = {"a": 2, "b": 0, "bad": 2, "new": 2}
    report = build_report("istiod-1", [a, b, rejected, unknown], generations, {rejected.key: "refused"},
                          lambda c: (acked[c.name], 2), 2, now=T0)
    # only objects some proxy has at their generation; rejected and generation-less ones left out
    assert report == Report("istiod-1", "2026-12-07T08:00:00.000000Z", 2,
                            {"networking.istio.io/v1/virtualservices/app/a/2": 2})
    text = report.to_yaml()
    assert text.splitlines()[:4] == ["reporter: istiod-1", "timestamp: '2026-12-07T08:00:00.000000Z'",
                                     "dataPlaneCount: 2", "inProgressResources:"]
    assert parse_report(text) == report
    assert report.same_counts(parse_report(text.replace("08:00:00", "08:00:15")))
    assert not report.same_counts(build_report("istiod-1", [a], generations, {}, lambda c: (1, 2), 2))
    # no proxy: nothing in progress
    assert build_report("istiod-1", [a], generations, {}, lambda c: (0, 0), 0).in_progress == {}


@pytest.mark.parametrize(("text", "why"), [
    (None, "no 'distribution-report' key"),
    ("[1, 2", "not YAML"),
    ("- 1\n", "not a mapping"),
    ("timestamp: '2026-12-07T08:00:00Z'\ndataPlaneCount: 1\n", "no reporter"),
    ("reporter: x\ndataPlaneCount: 1\n", "no timestamp"),
    ("reporter: x\ntimestamp: yesterday\ndataPlaneCount: 1\n", "timestamp 'yesterday' is not an RFC 3339"),
    ("reporter: x\ntimestamp: '2026-12-07T08:00:00Z'\ndataPlaneCount: -1\n", "dataPlaneCount -1 is not"),
    ("reporter: x\ntimestamp: '2026-12-07T08:00:00Z'\ndataPlaneCount: 1\ninProgressResources: {k: two}\n",
     "inProgressResources['k'] is not a count"),
])
def test_malformed_reports_are_refused_in_one_line(text: str | None, why: str) -> None:
    with pytest.raises(ReportError) as e:
        parse_report(text)
    assert str(e.value).startswith(why) and "\n" not in str(e.value)


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += dt.timedelta(seconds=seconds)


def test_leader_sums_fresh_reports_of_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clocks = Clocks()
    index = ReportIndex("istio-system", "istiod-0", stale_s=60.0, clock=lambda: clocks.mono,
                        wall=lambda: clocks.wall)
    changes: list[int] = []
    index.on_change = lambda: changes.append(1)
    key = ConfigKey("VirtualService", "app", "reviews")
    g2 = resource_key(key, 2)
    assert g2 is not None
    stamp = "2026-12-07T08:00:00.000000Z"
    mine = Report("istiod-0", stamp, 7, {g2: 7})
    one = Report("istiod-1", stamp, 2, {g2: 1, resource_key(key, 1) or "": 1})
    two = Report("istiod-2", "2026-12-07T07:59:30.000000Z", 3, {g2: 3})   # written 30 s before first sight
    index.replace([configmap(mine), configmap(one), configmap(two),
                   {"metadata": {"name": "junk", "namespace": "istio-system", "resourceVersion": "9"},
                    "data": {DATA_KEY: "reporter: [x"}}])
    assert changes == [1]
    assert "distribution report istio-system/junk ignored: not YAML" in caplog.text
    assert index.progress(key, 2) == (4, 5)       # its own report ignored; the other two summed
    assert index.progress(key, 1) == (1, 5)       # counts are per generation
    assert index.progress(ConfigKey("VirtualService", "app", "other"), 2) == (0, 5)
    assert index.next_expiry() == pytest.approx(30.01)     # istiod-2's report is 30 s old

    # istiod-1 refreshes (a heartbeat), istiod-2 does not: after 31 s only istiod-1 counts
    clocks.advance(20)
    index.upsert(configmap(Report("istiod-1", "2026-12-07T08:00:20.000000Z", 2, {g2: 2}), version="2"))
    assert index.progress(key, 2) == (5, 5)
    clocks.advance(11)
    assert index.progress(key, 2) == (2, 2)
    assert ("report istio-system/istiod-2-distribution of istiod-2 not refreshed for 61s: ignored"
            in caplog.text)
    assert index.next_expiry() == pytest.approx(49.01)
    # a stale report that is written again counts again; a deleted one is gone
    index.upsert(configmap(Report("istiod-2", "2026-12-07T08:00:31.000000Z", 3, {}), version="3"))
    assert index.progress(key, 2) == (2, 5)
    index.delete(configmap(one))
    assert index.progress(key, 2) == (0, 3)
    assert len(changes) == 4
    # the same timestamp seen again (a relist) does not make a report younger
    clocks.advance(59)
    index.replace([configmap(Report("istiod-2", "2026-12-07T08:00:31.000000Z", 3, {}), version="3")])
    clocks.advance(2)
    assert index.progress(key, 2) == (0, 0) and index.next_expiry() is None
