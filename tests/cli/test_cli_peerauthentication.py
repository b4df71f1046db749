"""PeerAuthentication through the CLI as kubectl users know it: apply from stdin, ``get pa`` with the CRD's
MODE column, ``validate`` with Istio's rules (one line per error), delete."""

from __future__ import annotations

import re
from pathlib import Path

from cli_helpers import RealControlPlane
from typer.testing import CliRunner

from mizzen.cli.main import app

STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"""
BAD = """apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: ports}
spec:
  portLevelMtls:
    "80": {mode: STRICT}
"""


def test_cli_peer_authentication_apply_get_validate_delete(control_plane: RealControlPlane,
                                                           tmp_path: Path) -> None:
    url = ["--server", control_plane.url]
    res = CliRunner().invoke(app, [*url, "apply", "-f", "-", "-n", "foo"], input=STRICT)
    assert res.exit_code == 0, res.output
    assert res.stdout == "peerauthentication.security.istio.io/default created\n"
    res = CliRunner().invoke(app, [*url, "get", "pa", "-n", "foo"])
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODE", "AGE"]
    assert re.fullmatch(r"default\s+STRICT\s+\d+s", lines[1]), lines
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    res = CliRunner().invoke(app, ["validate", "-f", str(bad)])
    assert res.exit_code == 1
    want = f"{bad}:5: PeerAuthentication/ports: spec.portLevelMtls: portLevelMtls requires selector"
    assert want in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, [*url, "delete", "peerauthentication", "default", "-n", "foo"])
    assert res.stdout == "peerauthentication.security.istio.io/default deleted\n"
