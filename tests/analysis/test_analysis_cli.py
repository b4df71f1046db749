"""``mizzen analyze`` (the real console script) offline and against an in-process ControlPlane, the
``/debug/analyze`` endpoint, and analyzer warnings in apply responses (which never block the apply)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from cli.cli_helpers import RealControlPlane, run_cli
from mizzen.client import ControlPlaneClient, Document

BOOKINFO = Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "samples" / "bookinfo"
APP = str(BOOKINFO / "platform" / "kube" / "bookinfo.yaml")
GATEWAY = str(BOOKINFO / "networking" / "bookinfo-gateway.yaml")
TYPO = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviwes
"""
UNREACHABLE = "http://127.0.94.9:9"   # nothing listens there


def _typo(tmp_path: Path) -> Path:
    p = tmp_path / "reviews-typo.yaml"
    p.write_text(TYPO)
    return p


def test_analysis_cli_offline_clean_and_errors(tmp_path: Path) -> None:
    clean = run_cli("analyze", "--offline", "-f", APP, "-f", GATEWAY, "-n", "bookinfo")
    assert (clean.returncode, clean.stdout) == (
        0, "\u2714 No validation issues found when analyzing namespace: bookinfo.\n"), clean.stderr
    typo = _typo(tmp_path)
    bad = run_cli("analyze", "--offline", "-f", APP, "-f", str(typo), "-n", "bookinfo")
    assert bad.returncode == 79
    assert bad.stdout == (f'Error [IST0101] (VirtualService bookinfo/reviews {typo}:11) Referenced host not '
                          'found: "reviwes"\n')
    assert "Error: Analyzers found issues when analyzing namespace: bookinfo." in bad.stderr
    # -n and -A together are refused
    other = run_cli("analyze", "--offline", "-f", str(typo), "-n", "bookinfo", "-A")
    assert other.returncode == 1 and "either -n NAMESPACE or -A" in other.stderr


def test_analysis_cli_falls_back_to_files_without_a_control_plane(tmp_path: Path) -> None:
    typo = _typo(tmp_path)
    res = run_cli("analyze", "-f", APP, "-f", str(typo), server=UNREACHABLE)
    assert res.returncode == 79
    assert f"note: no control plane at {UNREACHABLE}; analyzing the files alone" in res.stderr
    assert res.stdout.startswith("Error [IST0101] (VirtualService default/reviews")
    assert "analyzing all namespaces" in res.stderr
    # without files there is nothing to analyze offline
    none = run_cli("analyze", server=UNREACHABLE)
    assert none.returncode == 1 and "cannot reach the Mizzen control plane" in none.stderr
    offline = run_cli("analyze", "--offline")
    assert offline.returncode == 1 and "--offline needs files" in offline.stderr
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(TYPO.replace("host: reviwes", "host: reviews\n      weight: 900"))
    broken = run_cli("analyze", "--offline", "-f", str(invalid))
    # an object that fails validation is a message (IST0106), like istioctl's schema analyzer
    assert broken.returncode == 79, broken.stderr
    assert broken.stdout == (f"Error [IST0106] (VirtualService default/reviews {invalid}:12) Schema "
                             "validation error: spec.http[0].route[0].weight: must be 0..100\n")


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ['MIZZEN_TOKEN']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_analysis_apply_warns_without_blocking_and_analyze_reads_the_store(
        control_plane: RealControlPlane, tmp_path: Path) -> None:
    url = control_plane.url
    c = ControlPlaneClient(url)
    c.apply([Document(APP, Path(APP).read_text())], "bookinfo")
    typo = _typo(tmp_path)
    applied = c.apply([Document(str(typo), TYPO)], "bookinfo")
    assert applied.results == [{"kind": "VirtualService", "namespace": "bookinfo", "name": "reviews",
                                "action": "created"}]
    assert applied.warnings == [f'{typo}:11: VirtualService/reviews: spec.http[0].route[0].destination.host: '
                                'warning: [IST0101] Referenced host not found: "reviwes"']
    assert control_plane.cp.store.get("VirtualService", "bookinfo", "reviews") is not None

    body = _get(url + "/debug/analyze")
    assert [(m["code"], m["namespace"], m["name"], m["severity"], m["line"]) for m in body["messages"]] == [
        ("IST0101", "bookinfo", "reviews", "error", 11)]
    assert _get(url + "/debug/analyze?namespace=default") == {"messages": [], "skipped": [],
                                                              "parse_errors": []}

    res = run_cli("analyze", "-n", "bookinfo", server=url)
    assert res.returncode == 79, res.stderr
    assert res.stdout == (f'Error [IST0101] (VirtualService bookinfo/reviews {typo}:11) Referenced host not '
                          'found: "reviwes"\n')
    # what-if: the fixed file replaces the stored object for the analysis only
    fixed = tmp_path / "reviews.yaml"
    fixed.write_text(TYPO.replace("reviwes", "reviews"))
    whatif = run_cli("analyze", "-f", str(fixed), "-n", "bookinfo", server=url)
    assert (whatif.returncode, whatif.stdout) == (
        0, "\u2714 No validation issues found when analyzing namespace: bookinfo.\n"), whatif.stderr
    assert control_plane.cp.store.get("VirtualService", "bookinfo", "reviews").spec["http"][0]["route"][0][
        "destination"]["host"] == "reviwes"
    # a what-if Service makes the host known (the registry the files would make, not the live one)
    svc = tmp_path / "svc.yaml"
    svc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: reviwes}\n"
                   "spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n")
    assert run_cli("analyze", "-f", str(svc), "-n", "bookinfo", server=url).returncode == 0
    assert control_plane.cp.store.get("Service", "bookinfo", "reviwes") is None

    # the apply command prints the analyzer warning and its usual result line
    second = tmp_path / "ratings.yaml"
    second.write_text(TYPO.replace("name: reviews", "name: ratings").replace("- reviews", "- ratings")
                      .replace("reviwes", "ratingz"))
    out = run_cli("apply", "-f", str(second), "-n", "bookinfo", server=url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "virtualservice.networking.istio.io/ratings created\n"
    assert '[IST0101] Referenced host not found: "ratingz"' in out.stderr
    # a conflict is reported on the object applied, naming the older one that wins
    dup = tmp_path / "dup.yaml"
    dup.write_text(TYPO.replace("name: reviews", "name: reviews-2").replace("reviwes", "reviews"))
    warned = c.apply([Document(str(dup), dup.read_text())], "bookinfo").warnings
    assert len(warned) == 1 and "[IST0109]" in warned[0]
    assert ("The VirtualServices bookinfo/reviews,bookinfo/reviews-2 associated with mesh gateway define "
            "the same host */reviews.bookinfo.svc.cluster.local") in warned[0]


def test_analysis_apply_checks_registered_workloads(control_plane: RealControlPlane) -> None:
    url = control_plane.url
    c = ControlPlaneClient(url)
    c.apply([Document(APP, Path(APP).read_text())], "bookinfo")
    pod = {"name": "reviews-v1-abc", "namespace": "bookinfo", "address": "127.0.94.20",
           "labels": {"app": "reviews", "version": "v1"}}
    req = urllib.request.Request(url + "/apis/workloads", method="POST", data=json.dumps(pod).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {control_plane.token}"})
    urllib.request.urlopen(req, timeout=10).close()
    # workloads are known now, and none is a gateway: the Gateway selects nothing
    gw = c.apply([Document(GATEWAY, Path(GATEWAY).read_text())], "bookinfo")
    assert [w.split(": ", 2)[1:] for w in gw.warnings] == [
        ["Gateway/bookinfo-gateway", 'spec.selector: warning: [IST0101] Referenced selector not found: '
                                     '"istio=ingressgateway"']]
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n"
          "spec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n"
          "  - {name: v2, labels: {version: v2}}\n")
    warned = c.apply([Document("dr.yaml", dr)], "bookinfo").warnings
    assert warned == ["dr.yaml:8: DestinationRule/reviews: spec.subsets[1]: warning: [IST0173] The Subset v2 "
                      "defined in the DestinationRule does not select any pods. Which may lead to 503 UH "
                      "(NoHealthyUpstream)."]


MIXED = """apiVersion: v1
kind: Pod
metadata: {name: sleep}
spec: {containers: [{name: sleep, image: curl}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec: {rules: []}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 900
---
""" + TYPO


def test_analysis_cli_skips_unmodelled_kinds_reports_invalid_objects_and_analyzes_the_rest(
        tmp_path: Path) -> None:
    f = tmp_path / "mixed.yaml"
    f.write_text(MIXED)
    res = run_cli("analyze", "--offline", "-f", APP, "-f", str(f), "-n", "bookinfo")
    assert res.returncode == 79, res.stderr
    lines = MIXED.splitlines()
    assert res.stdout.splitlines() == [
        f"Error [IST0106] (VirtualService bookinfo/broken {f}:{lines.index('      weight: 900') + 1}) Schema "
        "validation error: spec.http[0].route[0].weight: must be 0..100",
        f'Error [IST0101] (VirtualService bookinfo/reviews {f}:{len(lines)}) Referenced host not found: '
        '"reviwes"',
    ]
    for kind, name, api in (("Pod", "sleep", "v1"), ("Ingress", "web", "networking.k8s.io/v1"),
                            ("HTTPRoute", "route", "gateway.networking.k8s.io/v1")):
        assert f"{kind} {name} ({api}) skipped: Mizzen does not model this kind" in res.stderr
    assert "Traceback" not in res.stderr


def test_analysis_cli_exit_codes_and_thresholds_like_istioctl(tmp_path: Path) -> None:
    warn = tmp_path / "warn.yaml"     # a Warning only (IST0134): exit 0, shown
    warn.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\n"
                    "spec: {hosts: [db.example.com], ports: [{number: 5432, name: tcp, protocol: TCP}], "
                    "resolution: DNS}\n")
    res = run_cli("analyze", "--offline", "-f", str(warn))
    assert res.returncode == 0 and res.stdout.startswith("Warning [IST0134] (ServiceEntry default/db"), res
    # --failure-threshold Warning makes it fail; --output-threshold Error hides it
    assert run_cli("analyze", "--offline", "-f", str(warn), "--failure-threshold", "Warning").returncode == 79
    hidden = run_cli("analyze", "--offline", "-f", str(warn), "--output-threshold", "Error")
    assert hidden.returncode == 0 and hidden.stdout.startswith("\u2714 No validation issues found")
    bad_level = run_cli("analyze", "--offline", "-f", str(warn), "--output-threshold", "Loud")
    assert bad_level.returncode == 1
    assert "--output-threshold must be one of Info, Warning, Error" in bad_level.stderr
    # input that is not YAML: istioctl's ExitDataError (65), after analyzing what could be read
    unparsable = tmp_path / "broken.yaml"
    unparsable.write_text("kind: [\n")
    res = run_cli("analyze", "--offline", "-f", APP, "-f", str(unparsable), "-n", "bookinfo")
    assert res.returncode == 65, res
    assert f"Error(s) adding files: {unparsable}:" in res.stderr
    assert "Some files couldn't be parsed." in res.stderr
    # an Info message (IST0118) is shown but never fails
    info = tmp_path / "info.yaml"
    info.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                    "spec: {selector: {app: web}, ports: [{name: web, port: 8080}]}\n")
    res = run_cli("analyze", "--offline", "-f", str(info))
    assert res.returncode == 0
    assert res.stdout == (f"Info [IST0118] (Service default/web {info}:4) Port name web (port: 8080, "
                          "targetPort: 0) doesn't follow the naming convention of Istio port.\n")


def test_analysis_cli_suppressions_like_istioctl(tmp_path: Path) -> None:
    """``--suppress CODE=RESOURCE`` (glob on ``Kind namespace/name``) and the
    ``galley.istio.io/analyze-suppress`` annotation leave messages out, as istioctl does."""
    two = tmp_path / "two.yaml"
    two.write_text(TYPO + "---\n" + TYPO.replace("name: reviews", "name: ratings").replace("- reviews",
                                                                                             "- ratings"))
    both = run_cli("analyze", "--offline", "-f", str(two))
    assert both.returncode == 79 and both.stdout.count("[IST0101]") == 2
    one = run_cli("analyze", "--offline", "-f", str(two), "-S", "IST0101=VirtualService default/rev*")
    assert one.returncode == 79 and one.stdout.count("[IST0101]") == 1 and "default/ratings" in one.stdout
    none = run_cli("analyze", "--offline", "-f", str(two), "-S", "IST0101=VirtualService *")
    assert none.returncode == 0, none
    other_code = run_cli("analyze", "--offline", "-f", str(two), "-S", "IST9999=VirtualService *")
    assert other_code.returncode == 79
    assert "Supplied message code 'IST9999' is an unknown message code" in other_code.stderr
    assert run_cli("analyze", "--offline", "-f", str(two), "-S", "IST0101").returncode == 1
    annotated = tmp_path / "annotated.yaml"
    annotated.write_text(TYPO.replace("  name: reviews\n", "  name: reviews\n  annotations:\n"
                                      "    galley.istio.io/analyze-suppress: IST0101,IST0102\n"))
    quiet = run_cli("analyze", "--offline", "-f", str(annotated))
    assert quiet.returncode == 0 and "No validation issues found" in quiet.stdout, quiet
