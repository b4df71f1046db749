"""istioctl's install commands: ``mizzen manifest generate``, ``mizzen install``, ``mizzen uninstall --purge``
and ``mizzen verify-install``, over :mod:`mizzen.kube.install` (the IstioOperator spec, the rendered
manifests, applying them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mizzen.cli.common import echo_err, fail

__all__ = ["install", "manifest_app", "uninstall", "verify_install"]

T = TypeVar("T")

manifest_app = typer.Typer(help="Render the manifests an install applies (istioctl manifest).",
                           no_args_is_help=True)

FilesOpt = Annotated[list[Path] | None, typer.Option(
    "--filename", "-f", metavar="FILE", help="An IstioOperator file (repeatable; later files win)")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="PATH=VALUE",
    help="Override an IstioOperator field by Istio's path, e.g. meshConfig.accessLogFile=/dev/stdout, "
         "components.ingressGateways[0].enabled=false, profile=demo")]
KubeconfigOpt = Annotated[Path | None, typer.Option(
    "--kubeconfig", "-c", metavar="FILE", show_default="$KUBECONFIG, else ~/.kube/config",
    help="The cluster's kubeconfig")]
YesOpt = Annotated[bool, typer.Option("--skip-confirmation", "-y", help="Do not ask to proceed")]
ContextOpt = Annotated[str | None, typer.Option("--context", metavar="NAME",
                                                help="The kubeconfig context to use")]


def _components(files: list[Path] | None, sets: list[str] | None) -> tuple[str, list[Any]]:
    from mizzen.kube.install.manifests import render
    from mizzen.kube.install.operator import InstallError, load_spec

    try:
        spec = load_spec(files, sets)
    except InstallError as e:
        fail(str(e))
    return str(spec["profile"]), render(spec)


def _on_cluster(kubeconfig: Path | None, context: str | None,
                work: Callable[[Any], Awaitable[T]]) -> T:
    from kubernetes_asyncio.client.exceptions import ApiException

    from mizzen.kube.client import KubeConfigError, connect
    from mizzen.kube.install.apply import ApplyError

    async def run() -> T:
        api = await connect(kubeconfig, context)
        try:
            return await work(api)
        finally:
            await api.close()

    try:
        return asyncio.run(run())
    except (KubeConfigError, ApplyError) as e:
        fail(str(e))
    except ApiException as e:
        fail(f"the API server answered {e.status}: {e.reason}")
    except OSError as e:
        fail(f"cannot reach the API server: {e.strerror or e}")


@manifest_app.command("generate")
def generate(files: FilesOpt = None, sets: SetOpt = None) -> None:
    """Print the manifests of an install (YAML documents on stdout), like istioctl manifest generate."""
    from mizzen.kube.install.manifests import to_yaml

    _, comps = _components(files, sets)
    typer.echo(to_yaml(comps), nl=False)


def install(files: FilesOpt = None, sets: SetOpt = None, kubeconfig: KubeconfigOpt = None,
            context: ContextOpt = None,
            yes: YesOpt = False,
            timeout: Annotated[float, typer.Option(
                metavar="SECONDS", help="How long to wait for each component to be ready")] = 300.0) -> None:
    """Install Mizzen's control plane on a Kubernetes cluster (like istioctl install): the istio-system
    namespace, Istio's CRDs, RBAC, the istiod Deployment and Service, webhooks and gateways."""
    from mizzen.kube.install.apply import install as do_install

    profile, comps = _components(files, sets)
    if not comps:
        fail(f"profile {profile!r} with these settings installs nothing")
    if not yes and not typer.confirm(f"This will install the Mizzen profile {profile!r} into the cluster. "
                                     "Proceed?", default=False):
        fail("cancelled")
    _on_cluster(kubeconfig, context, lambda api: do_install(api, comps, typer.echo, timeout))
    typer.echo("✔ Installation complete")


def uninstall(purge: Annotated[bool, typer.Option("--purge", help="Remove everything install created")
                                ] = False,
              kubeconfig: KubeconfigOpt = None, context: ContextOpt = None, yes: YesOpt = False,
              timeout: Annotated[float, typer.Option(
                  metavar="SECONDS", help="How long to wait for the objects to be gone")] = 120.0) -> None:
    """Remove what mizzen install created (by its install.operator.istio.io/owning-resource label)."""
    from mizzen.kube.install.apply import uninstall as do_uninstall

    if not purge:
        fail("give --purge: it removes every object mizzen install created (there is one control plane "
             "revision)")
    if not yes and not typer.confirm("All Mizzen resources will be removed from the cluster. Proceed?",
                                     default=False):
        fail("cancelled")
    n = _on_cluster(kubeconfig, context, lambda api: do_uninstall(api, typer.echo, timeout))
    typer.echo(f"✔ Uninstall complete ({n} objects removed)" if n else "Nothing installed: nothing removed")


def verify_install(files: FilesOpt = None, sets: SetOpt = None, kubeconfig: KubeconfigOpt = None,
                   context: ContextOpt = None) -> None:
    """Check that every object of an install (same -f/--set as install) exists and its Deployments are
    ready; exit 1 with the list when not."""
    from mizzen.kube.install.apply import verify

    profile, comps = _components(files, sets)
    problems = _on_cluster(kubeconfig, context, lambda api: verify(api, comps))
    total = sum(len(c.objects) for c in comps)
    if problems:
        for p in problems:
            echo_err(f"✘ {p}")
        fail(f"{len(problems)} of {total} checks failed: the {profile!r} install is not complete")
    typer.echo(f"✔ {total} objects of the {profile!r} profile are present and their Deployments are ready")
