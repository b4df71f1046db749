"""``mizzen version`` and the process commands ``demo``, ``controlplane``, ``agent``.

The process commands import their modules lazily (they are written elsewhere and pull in gRPC and Envoy) and
pass the remaining command-line arguments through; a missing module is one clear error line, not a traceback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Annotated, Any

import typer

from mizzen.cli.common import client, echo_err, fail
from mizzen.client import ApiError, Unreachable

__all__ = ["PASSTHROUGH", "agent", "client_version", "controlplane", "demo", "version"]

# commands whose own options are parsed by the target module
PASSTHROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}


def client_version() -> str:
    try:
        return dist_version("mizzen")
    except PackageNotFoundError:
        return "unknown"


def version(
    ctx: typer.Context,
    client_only: Annotated[bool, typer.Option("--client", help="Only the client version")] = False,
) -> None:
    """Client version, and the control plane's (plus connected proxies) when reachable."""
    typer.echo(f"client version: {client_version()}")
    if client_only:
        return
    c = client(ctx, timeout=5.0)
    try:
        typer.echo(f"control plane version: {c.version()}")
        proxies = c.syncz()
    except Unreachable:
        echo_err(f"control plane: not reachable at {c.server}")
        return
    except ApiError as e:
        echo_err(f"control plane: {'; '.join(e.errors)}")
        return
    typer.echo(f"data plane: {len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} connected")


def _entry(candidates: Sequence[tuple[str, str]], what: str) -> Callable[..., Any]:
    missing = []
    for module, attr in candidates:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                missing.append(module)
                continue
            raise
        fn = getattr(mod, attr, None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    fail(f"{what} is not available yet ({' / '.join(f'{m}.{a}' for m, a in candidates)} not found)")


def _call(fn: Callable[..., Any], args: list[str]) -> None:
    try:
        takes_args = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes_args = True
    try:
        rc = fn(args) if takes_args else fn()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if isinstance(rc, int) and rc:
        raise typer.Exit(rc)


def demo(ctx: typer.Context) -> None:
    """Run the local demo mesh (control plane, Bookinfo, sidecars, ingress gateway)."""
    _call(_entry([("mizzen.demo", "run")], '"mizzen demo"'), list(ctx.args))


def controlplane(ctx: typer.Context) -> None:
    """Run the control plane (istiod-like: xDS + HTTP API) in the foreground."""
    _call(_entry([("mizzen.controlplane.main", "main"), ("mizzen.controlplane", "main"),
                  ("mizzen.controlplane.__main__", "main")], '"mizzen controlplane"'), list(ctx.args))


def agent(ctx: typer.Context) -> None:
    """Run a proxy agent (pilot-agent-like: bootstrap and supervise Envoy) in the foreground."""
    _call(_entry([("mizzen.agent.main", "main"), ("mizzen.agent", "main"),
                  ("mizzen.agent.__main__", "main")], '"mizzen agent"'), list(ctx.args))
