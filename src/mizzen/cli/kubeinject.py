"""``mizzen kube-inject -f FILE``: istioctl kube-inject. Reads multi-document YAML (files, directories or
``-``), injects every pod template (and Pod) the injection policy selects with the same function the injection
webhook uses (:mod:`mizzen.kube.inject`), and prints the result as YAML; other kinds pass through.

The injector's config, values and mesh config come from ``--injectConfigFile``/``--valuesFile``/
``--meshConfigFile``; with ``--kubeconfig``, what no file gives is read from the cluster's ConfigMaps (the
revision's ``istio-sidecar-injector`` and ``istio`` in ``--istioNamespace``), as istioctl does; with
neither, the chart's defaults.
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
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", "-c", metavar="FILE", show_default="no cluster",
        help="Read the injector's and the mesh's ConfigMaps from this cluster (for what no file gives)")
    ] = None,
    context: Annotated[str | None, typer.Option(
        "--context", metavar="NAME", help="The kubeconfig context to use")] = None,
    istio_namespace: Annotated[str, typer.Option(
        "--istioNamespace", "-i", metavar="NAMESPACE", help="The control plane's namespace (its ConfigMaps)")
    ] = "istio-system",
    revision: Annotated[str, typer.Option(
        "--revision", "-r", metavar="REV", help="The control plane revision whose injector ConfigMap is read")
    ] = "",
) -> None:
    """Inject the Istio sidecar into Kubernetes workloads, offline (like istioctl kube-inject)."""
    from mizzen.kube.inject import InjectConfig, InjectError
    from mizzen.kube.inject.values import ValuesError
    from mizzen.kube.inject.workloads import inject_yaml

    values = _read(values_file, "--valuesFile")
    mesh = _read(mesh_config_file, "--meshConfigFile")
    inject_config = _read(inject_config_file, "--injectConfigFile")
    if kubeconfig is not None and (values is None or mesh is None or inject_config is None):
        injector, mesh_cm = _cluster_configmaps(kubeconfig, context, istio_namespace, revision)
        values = values if values is not None else injector.get("values")
        inject_config = inject_config if inject_config is not None else injector.get("config")
        mesh = mesh if mesh is not None else mesh_cm.get("mesh")
    try:
        cfg = InjectConfig.parse(values, mesh, inject_config)
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


def _cluster_configmaps(kubeconfig: Path, context: str | None, namespace: str,
                        revision: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ``data`` of the revision's ``istio-sidecar-injector`` and ``istio`` ConfigMaps (the injector's is
    required, as istioctl requires it; a missing mesh config means Istio's defaults)."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    from mizzen.cli.install import _on_cluster
    from mizzen.kube.inject.webhook import injector_configmap_name

    injector_name = injector_configmap_name(revision)
    mesh_name = "istio" + ("" if revision in ("", "default") else f"-{revision}")

    async def read(api: client.ApiClient) -> tuple[dict[str, str], dict[str, str]]:
        core = client.CoreV1Api(api)
        out: list[dict[str, str]] = []
        for name, required in ((injector_name, True), (mesh_name, False)):
            try:
                cm = await core.read_namespaced_config_map(name, namespace)
            except ApiException as e:
                if e.status == 404 and not required:
                    out.append({})
                    continue
                if e.status == 404:
                    fail(f"ConfigMap {namespace}/{name} not found: is the control plane installed "
                         f"(--istioNamespace, --revision), or give --injectConfigFile and --valuesFile")
                raise
            out.append({str(k): str(v) for k, v in (cm.data or {}).items()})
        return out[0], out[1]

    return _on_cluster(kubeconfig, context, read)
