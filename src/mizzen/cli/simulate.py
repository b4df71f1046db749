"""``mizzen simulate PROXY URL``: which virtual host, route (VirtualService), destinations with weights,
subset, cluster policy and endpoints one request would hit in that proxy's configuration, and why (``-v``).

Asks the control plane's ``/debug/simulate`` (the resources of ``/debug/config_dump``); PROXY resolves like
``mizzen proxy-config`` (full id, ``pod.namespace``, pod name, unique prefix or substring).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mizzen.cli.common import api_call, client, fail
from mizzen.cli.proxy import ProxyNamespace, resolve
from mizzen.simulate import DIRECTIONS, render

__all__ = ["simulate"]


def _headers(raw: list[str]) -> list[str]:
    out = []
    for h in raw:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            fail(f"header {h!r}: want 'Name: value'")
        out.append(f"{name.strip()}: {value.strip()}")
    return out


def simulate(
    ctx: typer.Context,
    proxy: Annotated[str, typer.Argument(help="Proxy id, pod name, or a unique prefix/substring")],
    url: Annotated[str, typer.Argument(help="http://reviews:9080/path, or /path with -H 'Host: ...'")],
    method: Annotated[str, typer.Option("--request", "-X", help="HTTP method")] = "GET",
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", help="'Name: value' (repeatable)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port (gateways, inbound)")] = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="auto (gateway or sidecar outbound), outbound, inbound, gateway")] = "auto",
    output: Annotated[str | None, typer.Option("--output", "-o", help="json for the full result")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the why-trail")] = False,
    namespace: ProxyNamespace = None,
) -> None:
    """Which route, subset and endpoints would this request hit, and why?"""
    if output not in (None, "json"):
        fail(f'unknown output format "{output}" (want json)')
    if direction not in DIRECTIONS:
        fail(f"--direction must be one of {', '.join(DIRECTIONS)}")
    headers = _headers(header or [])
    c = client(ctx)
    with api_call(c, "Simulating..."):
        found = resolve(proxy, c.syncz(), namespace)
        result = c.simulate(found, {"url": url, "method": method, "header": headers, "port": port,
                                    "direction": direction})
    if output == "json":
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(render(result, verbose=verbose))
    if result.get("status") == "error":
        raise typer.Exit(1)
