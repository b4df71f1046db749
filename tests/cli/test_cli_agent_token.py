"""``mizzen agent --istio-token``: the Kubernetes credential's flag errors are one line, no traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mizzen.cli.main import app


def test_istio_token_flag_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["agent", "--ip", "127.0.0.1", "--istio-token", str(tmp_path / "t")])
    assert res.exit_code != 0 and "go with --ca-address" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["agent", "--ip", "127.0.0.1", "--ca-address", "127.0.0.1:1", "--istio-token",
                              str(tmp_path / "t"), "--credential-file", str(tmp_path / "c")])
    assert res.exit_code != 0 and "give one credential" in res.output
    roots = tmp_path / "root-cert.pem"
    roots.write_text("not a certificate\n")
    res = runner.invoke(app, ["agent", "--ip", "127.0.0.1", "--ca-address", "127.0.0.1:1", "--istio-token",
                              str(tmp_path / "missing-token"), "--root-cert", str(roots),
                              "--work-dir", str(tmp_path / "work")])
    out = res.output.strip()
    assert res.exit_code == 1 and "Traceback" not in out, out
    assert out.endswith("(the kubelet writes the projected service-account token there)"), out
    (tmp_path / "token").write_text("a.b.c\n")
    res = runner.invoke(app, ["agent", "--ip", "127.0.0.1", "--ca-address", "127.0.0.1:1", "--istio-token",
                              str(tmp_path / "token"), "--root-cert", str(roots),
                              "--work-dir", str(tmp_path / "work")])
    out = res.output.strip()
    assert res.exit_code == 1 and "holds no PEM certificate" in out and "a.b.c" not in out, out
