"""``mizzen kube-inject -f FILE``: istioctl kube-inject. Reads multi-document YAML (files, directories or
``-``), injects every pod template (and Pod) the injection policy selects with the same function the injection
webhook uses (:mod:`mizzen.kube.inject`), and prints the result as YAML; other kinds pass through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mizzen.cli.common import fail, read_inputs

__all__ = ["kube_inject"]


def _read(path: Path | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{flag} {path}: {e.strerror if isinstance(e, OSError) and e.strerror else e}")


def kube_inject(
    filename: Annotated[list[str], typer.Option(
        "--filename", "-f", metavar="FILE", help="Kubernetes YAML to inject (file, directory or -)")],
    mesh_config_file: Annotated[Path | None, typer.Option(
        "--meshConfigFile", metavar="FILE", show_default="Istio's defaults",
        help="Mesh config (MeshConfig YAML, or the istio ConfigMap)")] = None,
    inject_config_file: Annotated[Path | None, typer.Option(
        "--injectConfigFile", metavar="FILE",
        help="Injector config (policy, selectors, injectedAnnotations; or the istio-sidecar-injector "
             "ConfigMap)")] = None,
    values_file: Annotated[Path | None, typer.Option(
        "--valuesFile", metavar="FILE", show_default="the istio-discovery chart's defaults",
        help="Injection values (global.proxy.*, global.hub, ...; or the istio-sidecar-injector ConfigMap)")
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", show_default="stdout", help="Write the injected YAML here")] = None,
    namespace: Annotated[str, typer.Option(
        "--namespace", "-n", metavar="NAMESPACE", help="Namespace of objects that name none")] = "default",
) -> None:
    """Inject the Istio sidecar into Kubernetes workloads, offline (like istioctl kube-inject)."""
    from mizzen.kube.inject import InjectConfig, InjectError
    from mizzen.kube.inject.values import ValuesError
    from mizzen.kube.inject.workloads import inject_yaml

    try:
        cfg = InjectConfig.parse(_read(values_file, "--valuesFile"),
                                 _read(mesh_config_file, "--meshConfigFile"),
                                 _read(inject_config_file, "--injectConfigFile"))
    except ValuesError as e:
        fail(str(e))
    parts = []
    for doc in read_inputs(filename):
        try:
            parts.append(inject_yaml(doc.text, cfg, namespace, doc.file))
        except (InjectError, ValuesError) as e:
            fail(str(e) if str(e).startswith(doc.file) else f"{doc.file}: {e}")
    text = "---\n".join(p for p in parts if p)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"--output {output}: {e.strerror or e}")
