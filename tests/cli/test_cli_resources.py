"""``mizzen apply / get / delete`` against the real ControlPlane (in-process, real HTTP), ``validate``
offline, and the error paths: invalid files (nothing sent), 422 answers, an unreachable control plane.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import FIXTURES, SEED, FakeApi, RealControlPlane, run_cli
from typer.testing import CliRunner

from mizzen.cli.main import app

UNREACHABLE = "http://127.0.91.3:9"
WEIGHT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 120
"""
UNKNOWN_FIELD = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simpel: RANDOM
"""
SYNTAX = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers: [
    {port: {number: 80}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: details
  labels:
    app: details
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: details
"""


def _invoke(*args: str, server: str | None = None) -> Any:
    pre = ["--server", server] if server else []
    return CliRunner().invoke(app, [*pre, *args])


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- validate (offline) ------------------------------------------------------------------------------------


def test_validate_reports_each_error_as_file_line_kind_path_reason(tmp_path: Path) -> None:
    weight = _write(tmp_path, "weight.yaml", WEIGHT)
    res = _invoke("validate", "-f", str(weight))
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr == (
        f"{weight}:17: VirtualService/reviews: spec.http[0].route[1].weight: must be 0..100\n")
    unknown = _write(tmp_path, "unknown.yaml", UNKNOWN_FIELD)
    res = _invoke("validate", "-f", str(unknown))
    assert res.exit_code == 1
    assert res.stderr == (f"{unknown}:9: DestinationRule/reviews: spec.trafficPolicy.loadBalancer.simpel: "
                          'unknown field "simpel"\n')
    syntax = _write(tmp_path, "syntax.yaml", SYNTAX)
    res = _invoke("validate", "-f", str(syntax))
    assert res.exit_code == 1
    assert res.stderr == (f"{syntax}:8: YAML syntax error: did not find expected ',' or '}}' "
                          "(while parsing a flow mapping at line 7)\n")
    # all three at once: every error on its own line, file order
    res = _invoke("validate", "-f", str(weight), "-f", str(unknown), "-f", str(syntax))
    assert res.exit_code == 1
    files = [line.split(":")[0] for line in res.stderr.splitlines()]
    assert files == [str(weight), str(unknown), str(syntax)]


def test_validate_directory_and_valid_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for name in ("demo-gateway.yaml", "demo-order-vs.yaml", "demo-handler-dr.yaml"):
        shutil.copy(SEED / name, good / name)
    res = _invoke("validate", "-f", str(good))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        f'"{good / "demo-gateway.yaml"}" is valid (1 object)',
        f'"{good / "demo-handler-dr.yaml"}" is valid (2 objects)',
        f'"{good / "demo-order-vs.yaml"}" is valid (1 object)',
    ]
    _write(good, "z-weight.yaml", WEIGHT)
    proc = run_cli("validate", "-f", str(good))
    assert proc.returncode == 1
    assert proc.stdout == ""
    bad = f"{good / 'z-weight.yaml'}:"
    assert all(line.startswith(bad) for line in proc.stderr.splitlines()), proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_path_is_one_line() -> None:
    res = _invoke("validate", "-f", "/nonexistent/x.yaml")
    assert res.exit_code == 1
    assert res.stderr == 'error: the path "/nonexistent/x.yaml" does not exist\n'


# --- apply / get / delete against the real control plane ----------------------------------------------------


def test_apply_get_delete_round_trip(control_plane: RealControlPlane, tmp_path: Path) -> None:
    url = control_plane.url
    gw, vs = str(SEED / "demo-gateway.yaml"), str(SEED / "demo-order-vs.yaml")
    svc = _write(tmp_path, "details-svc.yaml", SERVICE)
    res = _invoke("apply", "-f", gw, "-f", vs, "-f", str(svc), "-n", "demo", server=url)
    assert res.exit_code == 0, res.output
    assert sorted(res.stdout.splitlines()) == [
        "gateway.networking.istio.io/demo-gateway created",
        "service/details created",
        "virtualservice.networking.istio.io/demo-order created",
    ]
    res = _invoke("apply", "-f", vs, "-n", "demo", server=url)
    assert res.stdout == "virtualservice.networking.istio.io/demo-order unchanged\n"
    changed = _write(tmp_path, "order.yaml", (SEED / "demo-order-vs.yaml").read_text().replace(
        "prefix: /orders", "prefix: /orders/"))
    res = _invoke("apply", "-f", str(changed), "-n", "demo", server=url)
    assert res.stdout == "virtualservice.networking.istio.io/demo-order configured\n"

    res = _invoke("get", "vs", "-n", "demo", server=url)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert re.fullmatch(r'demo-order   \["demo-gateway"\]   \["demo.test.com"\]   \d+s', lines[1]), lines
    res = _invoke("get", "gateways,svc", "-A", server=url)
    assert res.exit_code == 0, res.output
    blocks = res.stdout.split("\n\n")
    assert blocks[0].splitlines()[0].split() == ["NAMESPACE", "NAME", "AGE"]
    assert blocks[0].splitlines()[1].split()[:2] == ["demo", "gateway.networking.istio.io/demo-gateway"]
    assert blocks[1].splitlines()[0].split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                                 "PORT(S)", "AGE"]
    assert blocks[1].splitlines()[1].split()[:6] == [
        "demo", "service/details", "ClusterIP", "<none>", "<none>", "9080/TCP"]
    res = _invoke("get", "gw", "demo-gateway", "-n", "demo", "-o", "yaml", server=url)
    doc = yaml.safe_load(res.stdout)
    assert doc["kind"] == "Gateway" and doc["metadata"]["name"] == "demo-gateway"
    assert doc["spec"] == yaml.safe_load((SEED / "demo-gateway.yaml").read_text())["spec"]
    res = _invoke("get", "dr", "-n", "demo", server=url)
    assert res.exit_code == 0 and res.stdout == ""
    assert res.stderr == "No resources found in demo namespace.\n"
    res = _invoke("get", "vs", "nope", "-n", "demo", server=url)
    assert res.exit_code == 1
    assert res.stderr == (
        'Error from server (NotFound): virtualservices.networking.istio.io "nope" not found\n')

    res = _invoke("delete", "-f", gw, "-n", "demo", server=url)
    assert res.exit_code == 0, res.output
    assert res.stdout == "gateway.networking.istio.io/demo-gateway deleted\n"
    res = _invoke("delete", "vs", "demo-order", "-n", "demo", server=url)
    assert res.stdout == "virtualservice.networking.istio.io/demo-order deleted\n"
    res = _invoke("delete", "svc", "details", "ghost", "-n", "demo", server=url)
    assert res.exit_code == 1
    assert res.stdout == "service/details deleted\n"
    assert res.stderr == 'Error from server (NotFound): services "ghost" not found\n'
    assert len(control_plane.cp.store) == 0


def test_invalid_files_are_not_sent(control_plane: RealControlPlane, tmp_path: Path) -> None:
    weight = _write(tmp_path, "weight.yaml", WEIGHT)
    good = str(SEED / "demo-gateway.yaml")
    res = _invoke("apply", "-f", good, "-f", str(weight), server=control_plane.url)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.startswith(f"{weight}:17: VirtualService/reviews: spec.http[0].route[1].weight: ")
    assert len(control_plane.cp.store) == 0


def test_dry_run_changes_nothing_and_subprocess_apply(control_plane: RealControlPlane) -> None:
    proc = run_cli("apply", "--dry-run", "-f", str(SEED / "reviews-dr.yaml"), server=control_plane.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "destinationrule.networking.istio.io/reviews created (dry run)\n"
    assert len(control_plane.cp.store) == 0
    proc = run_cli("apply", "-f", str(SEED / "reviews-dr.yaml"), server=control_plane.url)
    assert proc.stdout == "destinationrule.networking.istio.io/reviews created\n"
    proc = run_cli("get", "dr", server=control_plane.url)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].split() == ["NAME", "HOST", "AGE"]
    assert proc.stdout.splitlines()[1].split()[:2] == ["reviews", "reviews"]


SA = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-details
"""


def test_wide_output_and_stored_only_kinds(control_plane: RealControlPlane, tmp_path: Path) -> None:
    files = [_write(tmp_path, "svc.yaml", SERVICE), _write(tmp_path, "sa.yaml", SA)]
    res = _invoke("apply", *[a for f in files for a in ("-f", str(f))], server=control_plane.url)
    assert res.exit_code == 0, res.output
    assert sorted(res.stdout.splitlines()) == [
        "service/details created", "serviceaccount/bookinfo-details created"]
    res = _invoke("get", "svc", "-o", "wide", server=control_plane.url)
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert rows[1][:5] == ["details", "ClusterIP", "<none>", "<none>", "9080/TCP"]
    assert rows[1][6] == "app=details"
    res = _invoke("get", "sa", "-o", "name", server=control_plane.url)
    assert res.stdout == "serviceaccount/bookinfo-details\n"
    res = _invoke("get", "serviceaccounts", "bookinfo-details", "-o", "json", server=control_plane.url)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metadata"]["name"] == "bookinfo-details"
    res = _invoke("get", "-o", "table", "vs", server=control_plane.url)
    assert res.exit_code == 1
    assert res.stderr.startswith('error: unable to match a printer suitable for the output format "table"')


def test_convert_piped_into_apply_via_stdin(control_plane: RealControlPlane) -> None:
    converted = run_cli("convert", "ingress", "-f", str(FIXTURES / "demo-receive-ingress.yaml"))
    assert converted.returncode == 0, converted.stderr
    proc = run_cli("apply", "-f", "-", server=control_plane.url, stdin=converted.stdout)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["gateway.networking.istio.io/demo-gateway created",
                                        "virtualservice.networking.istio.io/demo-receive created"]
    proc = run_cli("apply", "-f", "-", server=control_plane.url, stdin=WEIGHT)
    assert proc.returncode == 1
    assert proc.stderr == "<stdin>:17: VirtualService/reviews: spec.http[0].route[1].weight: must be 0..100\n"
    assert len(control_plane.cp.store) == 2


def test_server_side_rejection_prints_its_lines(fake_api: FakeApi) -> None:
    line = "demo-gateway.yaml:4: Gateway/demo-gateway: metadata.name: conflicts with an existing object"
    fake_api.apply_status = 422
    fake_api.apply_body = {"errors": [{"text": line}, {"text": "second problem"}]}
    res = _invoke("apply", "-f", str(SEED / "demo-gateway.yaml"), server=fake_api.url)
    assert res.exit_code == 1
    assert res.stderr == f"{line}\nsecond problem\n"
    sent = fake_api.requests[-1][2]
    assert sent["documents"][0]["file"] == str(SEED / "demo-gateway.yaml")
    assert sent["documents"][0]["text"] == (SEED / "demo-gateway.yaml").read_text()
    assert sent["namespace"] is None and sent["dry_run"] is False


def test_apply_prints_warnings(fake_api: FakeApi) -> None:
    fake_api.apply_body = {
        "results": [{"kind": "VirtualService", "namespace": "default", "name": "r", "action": "created"}],
        "warnings": [{"text": "r.yaml:9: VirtualService/r: spec.http[0].mirror: warning: not honoured yet"}],
    }
    res = _invoke("apply", "-f", str(SEED / "reviews-v1-all.yaml"), server=fake_api.url)
    assert res.exit_code == 0
    assert res.stdout == "virtualservice.networking.istio.io/r created\n"
    assert res.stderr == "r.yaml:9: VirtualService/r: spec.http[0].mirror: warning: not honoured yet\n"


def test_process_commands_are_typer_commands_of_the_one_app() -> None:
    for cmd, usage in (("controlplane", "Usage: mizzen controlplane [OPTIONS]"),
                       ("agent", "Usage: mizzen agent [OPTIONS]"), ("demo", "Usage: mizzen demo [OPTIONS]")):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0, proc.stderr
        assert usage in proc.stdout, proc.stdout
        assert "<str>" not in proc.stdout and "<int>" not in proc.stdout and "<bool>" not in proc.stdout
    assert "--state-dir" in run_cli("demo", "--help").stdout
    for module in ("mizzen.controlplane", "mizzen.agent"):   # the python -m entries run the same commands
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              timeout=30, check=False)
        assert proc.returncode == 0 and f"Usage: python -m {module} [OPTIONS]" in proc.stdout, proc.stdout
    proc = run_cli("agent", "--no-such-flag")
    assert proc.returncode == 2
    assert "No such option: --no-such-flag" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("agent", "--labels", "app")
    assert proc.returncode == 2
    assert "Missing option '--ip'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("agent", "--ip", "127.0.0.1", "--labels", "app")
    assert (proc.returncode, proc.stderr) == (1, "error: label 'app': want key=value\n")


@pytest.mark.parametrize("args", [["get", "vs"], ["proxy-status"], ["proxy-config", "routes", "x"],
                                  ["delete", "vs", "x"], ["apply", "-f", str(SEED / "reviews-dr.yaml")]])
def test_unreachable_control_plane_is_one_line(args: list[str]) -> None:
    want = f'error: cannot reach the Mizzen control plane at {UNREACHABLE} (is "mizzen demo" running?)\n'
    res = _invoke(*args, server=UNREACHABLE)
    assert res.exit_code == 1
    assert res.stderr == want
    proc = run_cli(*args, server=UNREACHABLE)
    assert proc.returncode == 1
    assert proc.stderr == want
    assert proc.stdout == ""


def test_version_with_and_without_control_plane(fake_api: FakeApi) -> None:
    res = _invoke("version", server=fake_api.url)
    assert res.exit_code == 0
    assert res.stdout.splitlines()[1:] == [
        "control plane version: fake-1.0", "data plane: 0 proxies connected"]
    assert res.stdout.startswith("client version: ")
    res = _invoke("version", server=UNREACHABLE)
    assert res.exit_code == 0
    assert res.stderr == f"control plane: not reachable at {UNREACHABLE}\n"
