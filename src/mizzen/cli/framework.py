"""How every ``mizzen`` command behaves as a command: one Typer app, one look, one failure mode.

Owns the click classes all commands are built with (:func:`finish` installs them on a Typer app and its
sub-apps): kubectl-style usage lines (``mizzen get KIND [NAME]...``), metavars instead of Python type names
(``--namespace NAMESPACE``, never ``<str>``), and the top-level handler: an unexpected exception becomes one
``error: internal error: ...`` line and exit 1 (``MIZZEN_DEBUG=1`` shows the traceback), Ctrl-C exits 130.
Also ``mizzen completion bash|zsh|fish`` (the scripts Typer's completion machinery answers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["DEBUG_ENV", "MizzenCommand", "MizzenGroup", "completion", "finish"]

DEBUG_ENV = "MIZZEN_DEBUG"
PROG = "mizzen"
COMPLETE_VAR = "_MIZZEN_COMPLETE"


try:    # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException as _ClickException  # type: ignore[assignment, no-redef, unused-ignore]


class _Option(TyperOption):
    """An option shown with its metavar (``--namespace NAMESPACE``); flags show no type at all."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or "VALUE"


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: ``KIND`` when required, ``[NAME]...`` when optional."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = str(self.metavar or (self.name or "").upper())
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required or name.startswith("[") else f"[{name}]"


# metavars for option names used across commands (the fallback is the option name in capitals)
METAVARS = {"output": "FORMAT", "filename": "FILE", "header": "'NAME: VALUE'", "request": "METHOD",
            "tail": "N", "container": "CONTAINER", "namespace": "NAMESPACE", "server": "URL",
            "timeout": "SECONDS", "port": "PORT", "admin": "URL", "cluster": "NAME", "fqdn": "FQDN"}


def _polish(params: Sequence[Any]) -> None:
    """Metavars instead of the ``<str>``/``<bool>``/``<list[str]>`` Typer would show (type names)."""
    for p in params:
        if isinstance(p, TyperOption) and not isinstance(p, _Option):
            if p.metavar is None and not (p.is_flag or p.count):
                longs = [o.lstrip("-") for o in p.opts if o.startswith("--")]
                name = longs[0] if longs else "value"
                p.metavar = METAVARS.get(name) or name.upper().replace("-", "_")
            p.__class__ = _Option
        elif isinstance(p, TyperArgument) and not isinstance(p, _Argument):
            if p.metavar is None:
                p.metavar = (p.name or "arg").upper()
            p.__class__ = _Argument


def _run_guarded(invoke: Any, ctx: Any) -> Any:
    """Call ``invoke(ctx)``; unexpected errors become one line (or a traceback with MIZZEN_DEBUG=1)."""
    try:
        return invoke(ctx)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # the reader went away (mizzen get ... | head): stop quietly, like kubectl
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        raise typer.Exit(0) from None
    except (typer.Exit, typer.Abort, _ClickException):
        raise
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"error: internal error: {type(e).__name__}{': ' + detail if detail else ''} "
                   f"(set {DEBUG_ENV}=1 for the traceback)", err=True)
        raise typer.Exit(1) from None


class MizzenCommand(TyperCommand):
    """A leaf command: metavars, kubectl-style usage, the top-level error handler."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _polish(params)
        return params

    def invoke(self, ctx: Any) -> Any:
        return _run_guarded(super().invoke, ctx)


class MizzenGroup(TyperGroup):
    """A command group (``mizzen``, ``mizzen proxy-config``, ...): same treatment as the leaves."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _polish(params)
        return params

    def invoke(self, ctx: Any) -> Any:
        return _run_guarded(super().invoke, ctx)


def finish(app: typer.Typer) -> typer.Typer:
    """Build ``app`` and every sub-app's commands with :class:`MizzenCommand`/:class:`MizzenGroup`."""
    if not isinstance(app.info.cls, type) or app.info.cls is TyperGroup:
        app.info.cls = MizzenGroup
    for cmd in app.registered_commands:
        if cmd.cls in (None, TyperCommand):
            cmd.cls = MizzenCommand
    for group in app.registered_groups:
        if not isinstance(group.cls, type) or group.cls is TyperGroup:
            group.cls = MizzenGroup
        if group.typer_instance is not None:
            finish(group.typer_instance)
    return app


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(
    shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish")],
) -> None:
    """Print the shell completion script.

    bash: source <(mizzen completion bash) (or put it in ~/.bashrc); zsh: source <(mizzen completion zsh);
    fish: mizzen completion fish | source.
    """
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    completion_init()
    typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value))


def enable_completion() -> None:
    """Register Typer's completion classes so ``_MIZZEN_COMPLETE=complete_bash mizzen`` answers."""
    if os.environ.get(COMPLETE_VAR):
        from typer._completion_classes import completion_init

        completion_init()
