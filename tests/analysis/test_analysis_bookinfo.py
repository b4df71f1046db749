"""Istio's bookinfo samples analyzed with bookinfo.yaml, as the CLI does offline: only the messages the
samples warrant (istioctl reports the same: IST0173 for subsets no pod backs); typos in them give the right
code at the right file:line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mizzen.analysis import AnalysisIssue, analyze, workloads_from_deployments
from mizzen.config.errors import Severity
from mizzen.config.loader import load_paths
from mizzen.config.model import ConfigSnapshot
from mizzen.registry.registry import build_snapshot

BOOKINFO = Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "samples" / "bookinfo"
NET = BOOKINFO / "networking"
BASE = [BOOKINFO / "platform" / "kube" / "bookinfo.yaml", NET / "bookinfo-gateway.yaml",
        NET / "destination-rule-all.yaml"]
# bookinfo.yaml runs ratings-v1 and details-v1 only: these subsets of destination-rule-all.yaml select nothing
EXPECTED = {("IST0173", "ratings", "spec.subsets[1]"), ("IST0173", "ratings", "spec.subsets[2]"),
            ("IST0173", "ratings", "spec.subsets[3]"), ("IST0173", "details", "spec.subsets[1]")}


def analyze_files(paths: list[Path]) -> list[AnalysisIssue]:
    result = load_paths(paths, "bookinfo")
    assert not result.errors, [str(e) for e in result.errors]
    snap = ConfigSnapshot.of(dataclasses.replace(c, created=float(i)) for i, c in enumerate(result.configs))
    return analyze(snap, build_snapshot(snap, workloads_from_deployments(snap)))


@pytest.mark.parametrize("sample", sorted(p.name for p in NET.glob("virtual-service-*.yaml")))
def test_analysis_bookinfo_samples_have_only_the_expected_messages(sample: str) -> None:
    found = [i for i in analyze_files([*BASE, NET / sample]) if i.severity is not Severity.INFO]
    assert {(i.code, i.name, i.path) for i in found} == EXPECTED, [str(i) for i in found]


def test_analysis_bookinfo_typos(tmp_path: Path) -> None:
    text = (NET / "virtual-service-reviews-jason-v2-v3.yaml").read_text()
    typo = tmp_path / "reviews.yaml"
    typo.write_text(text.replace("subset: v3", "subset: v33").replace("host: reviews\n        subset: v2",
                                                                     "host: reviwes\n        subset: v2"))
    gw = tmp_path / "gw.yaml"
    gw.write_text((NET / "bookinfo-gateway.yaml").read_text().replace("- bookinfo-gateway", "- bookinfo-gw"))
    found = [i for i in analyze_files([*BASE[:1], NET / "destination-rule-all.yaml", gw, typo])
             if i.code != "IST0173" and i.severity is not Severity.INFO]
    lines = typo.read_text().splitlines()
    assert [(i.file, i.line, i.code, i.text) for i in found] == [
        (str(gw), gw.read_text().splitlines().index("  - bookinfo-gw") + 1, "IST0101",
         'Referenced gateway not found: "bookinfo-gw"'),
        (str(typo), lines.index("        host: reviwes") + 1, "IST0101",
         'Referenced host not found: "reviwes"'),
        (str(typo), lines.index("        subset: v33") + 1, "IST0101",
         'Referenced host+subset in destinationrule not found: "reviews+v33"'),
    ]
