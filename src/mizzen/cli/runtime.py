"""``mizzen version`` and the process commands ``demo``, ``controlplane``, ``agent``.

The process commands import their modules lazily (they pull in gRPC, aiohttp and the runner, which the other
commands do not need) and pass the remaining command-line arguments through.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Annotated, Any

import typer

from mizzen.cli.common import client, echo_err
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
    from mizzen.demo import run

    _call(run, list(ctx.args))


def controlplane(ctx: typer.Context) -> None:
    """Run the control plane (istiod-like: xDS + HTTP API) in the foreground."""
    from mizzen.controlplane.__main__ import main

    _call(main, list(ctx.args))


def agent(ctx: typer.Context) -> None:
    """Run a proxy agent (pilot-agent-like: bootstrap and supervise Envoy) in the foreground."""
    from mizzen.agent.__main__ import main

    _call(main, list(ctx.args))
