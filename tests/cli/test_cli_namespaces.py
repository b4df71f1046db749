"""Namespaces like kubectl (``-n``, ``-A``, a settable default namespace per context), ``get ns``,
``get all``, ``-l`` selectors, ``--show-labels`` and ``get -w``, against the real ControlPlane (in-process,
real HTTP)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import MIZZEN, REPO, SEED, RealControlPlane
from typer.testing import CliRunner

from mizzen.cli.main import app


def _invoke(*args: str, server: str | None = None) -> Any:
    pre = ["--server", server] if server else []
    return CliRunner().invoke(app, [*pre, *args])


def _objects(namespace: str, *docs: str) -> str:
    return "\n---\n".join(d.replace("NS", namespace) for d in docs)


def _svc(name: str, labels: dict[str, str]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": "NS", "labels": labels},
                           "spec": {"ports": [{"port": 9080, "name": "http"}], "selector": {"app": name}}})


RATINGS_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: NS}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
"""


@pytest.fixture
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own CLI config file (contexts), for the in-process CLI and its subprocesses."""
    path = tmp_path / "cli-config.yaml"
    monkeypatch.setenv("MIZZEN_CONFIG", str(path))
    return path


def _apply(url: str, tmp_path: Path, name: str, text: str, *args: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    res = _invoke("apply", "-f", str(f), *args, server=url)
    assert res.exit_code == 0, res.output


def test_get_named_object_in_another_namespace_is_only_not_found(control_plane: RealControlPlane,
                                                                  tmp_path: Path) -> None:
    """Defect 6: ``get vs ratings -o yaml`` without -n printed an empty List plus NotFound."""
    url = control_plane.url
    _apply(url, tmp_path, "vs.yaml", _objects("bookinfo", RATINGS_VS))
    for output in ("yaml", "json"):
        res = _invoke("get", "vs", "ratings", "-o", output, server=url)
        assert res.exit_code == 1
        assert res.stdout == ""
        assert res.stderr == ('Error from server (NotFound): virtualservices.networking.istio.io "ratings" '
                              "not found\n")
    res = _invoke("get", "vs", "ratings", "-n", "bookinfo", "-o", "yaml", server=url)
    assert res.exit_code == 0 and yaml.safe_load(res.stdout)["metadata"]["name"] == "ratings"


def test_get_ns_lists_namespaces_with_status_age_and_labels(control_plane: RealControlPlane,
                                                            tmp_path: Path) -> None:
    """Defect 6: ``get ns`` said "No resources found in default namespace"."""
    url = control_plane.url
    _apply(url, tmp_path, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n"
           "  labels: {istio-injection: enabled}\n")
    _apply(url, tmp_path, "vs.yaml",
           _objects("bookinfo", RATINGS_VS) + "\n---\n" + _objects("demo", RATINGS_VS))
    res = _invoke("get", "ns", server=url)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["bookinfo", "Active"], ["demo", "Active"]]
    assert all(re.fullmatch(r"\d+s", line.split()[2]) for line in lines[1:]), lines
    res = _invoke("get", "namespaces", "--show-labels", server=url)
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE", "LABELS"]
    assert lines[1].split()[0::3] == ["bookinfo", "istio-injection=enabled"]
    assert lines[2].split()[0::3] == ["demo", "<none>"]
    res = _invoke("get", "ns", "demo", "-o", "name", server=url)
    assert res.stdout == "namespace/demo\n"
    res = _invoke("get", "ns", "nope", server=url)
    assert res.exit_code == 1 and res.stderr == 'Error from server (NotFound): namespaces "nope" not found\n'


def test_context_namespace_is_the_default_for_get_apply_and_delete(
        control_plane: RealControlPlane, tmp_path: Path, own_config: Path) -> None:
    url = control_plane.url
    res = _invoke("config", "set-context", "--current", "--namespace", "bookinfo")
    assert res.exit_code == 0 and res.stdout == 'Context "default" created.\n'
    res = _invoke("config", "view")
    assert yaml.safe_load(res.stdout) == {
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "contexts": [{"name": "default", "context": {"namespace": "bookinfo"}}]}
    assert own_config.is_file()
    # an object without a namespace goes to the context's namespace, one naming its own keeps it
    no_ns = RATINGS_VS.replace(", namespace: NS", "")
    _apply(url, tmp_path, "vs.yaml", no_ns)
    _apply(url, tmp_path, "other.yaml", _objects("demo", RATINGS_VS).replace("name: ratings", "name: other"))
    assert {(c.namespace, c.name) for c in control_plane.cp.store.snapshot().list("VirtualService")} == {
        ("bookinfo", "ratings"), ("demo", "other")}
    res = _invoke("get", "vs", server=url)
    assert res.exit_code == 0, res.output
    assert [line.split()[0] for line in res.stdout.splitlines()] == ["NAME", "ratings"]
    res = _invoke("get", "vs", "-n", "demo", "-o", "name", server=url)
    assert res.stdout == "virtualservice.networking.istio.io/other\n"
    res = _invoke("get", "vs", "-A", "-o", "name", server=url)
    assert sorted(res.stdout.split()) == ["virtualservice.networking.istio.io/other",
                                          "virtualservice.networking.istio.io/ratings"]
    res = _invoke("delete", "vs", "ratings", server=url)
    assert res.exit_code == 0 and res.stdout == "virtualservice.networking.istio.io/ratings deleted\n"

    res = _invoke("config", "set-context", "lab", "--namespace", "demo", "--server", url)
    assert res.stdout == 'Context "lab" created.\n'
    res = _invoke("config", "use-context", "lab")
    assert res.stdout == 'Switched to context "lab".\n'
    assert _invoke("config", "current-context").stdout == "lab\n"
    res = _invoke("get", "vs", "-o", "name")        # no --server: the context's
    assert res.exit_code == 0 and res.stdout == "virtualservice.networking.istio.io/other\n"
    table = _invoke("config", "get-contexts").stdout.splitlines()
    assert table[0].split() == ["CURRENT", "NAME", "SERVER", "NAMESPACE"]
    assert table[1].split() == ["default", "bookinfo"] and table[2].split() == ["*", "lab", url, "demo"]
    res = _invoke("config", "use-context", "nope")
    assert res.exit_code == 1 and res.stderr == 'error: no context exists with the name: "nope"\n'
    res = _invoke("config", "set-context", "--current", "--namespace", "Not_A_Label")
    assert res.exit_code == 1 and "lowercase RFC 1123 label" in res.stderr


def test_broken_cli_config_is_one_line(own_config: Path) -> None:
    own_config.write_text("contexts: [\n")
    res = _invoke("get", "vs")
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: the CLI config {own_config} is not valid YAML")
    assert res.stderr.count("\n") == 1


def test_label_selectors_and_show_labels(control_plane: RealControlPlane, tmp_path: Path) -> None:
    url = control_plane.url
    _apply(url, tmp_path, "svc.yaml", _objects("shop", _svc("reviews", {"app": "reviews", "tier": "back"}),
                                                _svc("ratings", {"app": "ratings", "tier": "back"}),
                                                _svc("web", {"app": "web", "canary": "true"})))

    def names(*selector: str) -> list[str]:
        res = _invoke("get", "svc", "-n", "shop", "-o", "name", *selector, server=url)
        assert res.exit_code == 0, res.output
        return sorted(res.stdout.split())

    assert names("-l", "tier=back") == ["service/ratings", "service/reviews"]
    assert names("-l", "tier!=back") == ["service/web"]
    assert names("-l", "app in (web,reviews)") == ["service/reviews", "service/web"]
    assert names("-l", "app notin (web)") == ["service/ratings", "service/reviews"]
    assert names("-l", "canary") == ["service/web"]
    assert names("-l", "!canary,app==ratings") == ["service/ratings"]
    res = _invoke("get", "svc", "-n", "shop", "-l", "app=nothing", server=url)
    assert res.exit_code == 0 and res.stderr == "No resources found in shop namespace.\n"
    res = _invoke("get", "svc", "-n", "shop", "-l", "app in (x", server=url)
    assert res.exit_code == 1 and res.stderr == "error: invalid label selector: missing ')' in 'app in (x'\n"
    res = _invoke("get", "svc", "web", "-n", "shop", "--show-labels", server=url)
    lines = res.stdout.splitlines()
    assert lines[0].split()[-1] == "LABELS" and lines[1].split()[-1] == "app=web,canary=true"


def test_get_all_lists_services_and_deployments_without_a_pod_runner(control_plane: RealControlPlane,
                                                                      tmp_path: Path) -> None:
    url = control_plane.url
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}}
    _apply(url, tmp_path, "all.yaml", _objects("shop", _svc("web", {"app": "web"})) + "---\n"
           + yaml.safe_dump(deploy))
    res = _invoke("get", "all", "-n", "shop", server=url)
    assert res.exit_code == 0, res.output
    blocks = res.stdout.split("\n\n")
    assert [b.splitlines()[1].split()[0] for b in blocks] == ["service/web", "deployment.apps/web"]
    res = _invoke("get", "all", "-n", "shop", "-l", "app!=web", server=url)
    assert res.stdout == "" and res.stderr == "No resources found in shop namespace.\n"


def test_get_watch_prints_a_row_per_change_until_interrupted(control_plane: RealControlPlane,
                                                            tmp_path: Path) -> None:
    url = control_plane.url
    _apply(url, tmp_path, "vs.yaml", _objects("shop", RATINGS_VS))
    env = {**os.environ, "MIZZEN_SERVER": url}
    proc = subprocess.Popen([MIZZEN, "get", "vs", "-n", "shop", "-w"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline(), proc.stdout.readline()]
        assert first[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"], first
        assert first[1].startswith("ratings"), first
        shop = _objects("shop", RATINGS_VS)
        _apply(url, tmp_path, "other.yaml", shop.replace("name: ratings", "name: other"))
        _apply(url, tmp_path, "other-ns.yaml", _objects("elsewhere", RATINGS_VS))   # not watched
        _apply(url, tmp_path, "changed.yaml", shop.replace("[ratings]", "[ratings, r2]"))
        seen = [proc.stdout.readline(), proc.stdout.readline()]
        assert sorted(line.split()[0] for line in seen) == ["other", "ratings"], seen
        assert any('["ratings","r2"]' in line for line in seen), seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and out == "" and "Traceback" not in err, (out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_apply_refuses_a_mix_it_cannot_send_in_one_request(own_config: Path, tmp_path: Path) -> None:
    assert _invoke("config", "set-context", "--current", "--namespace", "bookinfo").exit_code == 0
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(RATINGS_VS.replace(", namespace: NS", "") + "---\n" + _objects("demo", RATINGS_VS))
    res = _invoke("validate", "-f", str(mixed))
    assert res.exit_code == 1
    assert res.stderr == ("error: objects without metadata.namespace would go to the context's namespace "
                          "'bookinfo' while others name demo: pass -n NAMESPACE, or set metadata.namespace "
                          "on every object\n")
    res = _invoke("validate", "-f", str(SEED / "demo-order-vs.yaml"))
    assert res.exit_code == 0, res.output
