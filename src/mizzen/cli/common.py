"""Shared plumbing for the ``mizzen`` commands: client from global options, error exits, spinner, tables.

Every failure leaves through :func:`fail` (one ``error: ...`` line on stderr, exit 1) or through
:func:`api_call`, which turns an unreachable control plane or an API error into those lines; no tracebacks.
Tables are plain kubectl-style text (3-space gutters) so output is greppable and stable.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

from mizzen.client import SERVER_ENV, ApiError, ControlPlaneClient, Document, Unreachable
from mizzen.config import kinds

__all__ = [
    "INPUT_SUFFIXES",
    "STDIN",
    "Options",
    "api_call",
    "client",
    "echo_err",
    "expand_paths",
    "fail",
    "format_table",
    "human_age",
    "read_inputs",
    "resource_ref",
    "spinner",
]

INPUT_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Options:
    """Global options (mizzen --server URL ...), stored on the typer context."""

    server: str | None = None
    token_file: str | None = None


def client(ctx: typer.Context, timeout: float = 30.0) -> ControlPlaneClient:
    """The control plane of ``--server``/``$MIZZEN_SERVER``, else the current context's, else the default."""
    from mizzen.cli.contexts import server_of_context

    opts = ctx.find_object(Options)
    server = (opts.server if opts else None) or os.environ.get(SERVER_ENV) or server_of_context()
    return ControlPlaneClient(server, timeout=timeout, token_file=opts.token_file if opts else None)


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    echo_err(f"error: {message}")
    raise typer.Exit(code)


@contextlib.contextmanager
def api_call(c: ControlPlaneClient, status: str | None = None) -> Iterator[None]:
    """Run control-plane calls; unreachable -> one line, API errors -> their lines; both exit 1."""
    try:
        with spinner(status):
            yield
    except Unreachable:
        fail(f'cannot reach the Mizzen control plane at {c.server} (is "mizzen demo" running?)')
    except ApiError as e:
        for line in e.errors:
            echo_err(line)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def spinner(status: str | None) -> Iterator[None]:
    """A rich status spinner on stderr, only when stderr is a terminal."""
    if not status or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(status):
        yield


def expand_paths(paths: Sequence[str], recursive: bool = False) -> list[Path]:
    """-f arguments -> input files (directories expand to their .yaml/.yml/.json files, sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix in INPUT_SUFFIXES)
            if not found:
                fail(f'no .yaml, .yml or .json files in directory "{raw}"')
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            fail(f'the path "{raw}" does not exist')
    return out


STDIN = "<stdin>"


def read_inputs(paths: Sequence[str], recursive: bool = False) -> list[Document]:
    """-f arguments -> documents (file name + text); - reads standard input."""
    docs: list[Document] = []
    for raw in paths:
        if raw == "-":
            docs.append(Document(STDIN, typer.get_text_stream("stdin").read()))
            continue
        for f in expand_paths([raw], recursive):
            try:
                docs.append(Document(str(f), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as e:
                fail(f"cannot read {f}: {e}")
    return docs


def resource_ref(kind: str, name: str) -> str:
    """kubectl's kind.group/name: virtualservice.networking.istio.io/reviews, service/details."""
    k = kinds.BY_NAME.get(kind)
    group = k.group if k else ""
    return f"{kind.lower()}.{group}/{name}" if group else f"{kind.lower()}/{name}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("   ".join(parts).rstrip())
    return "\n".join(lines)


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str) and value:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def human_age(value: Any, now: datetime | None = None) -> str:
    """kubectl's HumanDuration for a timestamp (RFC 3339 string or epoch seconds); <unknown> if absent."""
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - t).total_seconds())
    return human_duration(seconds)


def human_duration(seconds: int) -> str:
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"
