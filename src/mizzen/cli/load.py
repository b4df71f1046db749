"""``mizzen load``: fortio's ``load`` for the local mesh - ``-c`` connections, ``-n`` requests, sent from a
workload's sidecar (``--from productpage``) so that DestinationRule pools and VirtualService rules apply,
exactly like ``kubectl exec fortio -- fortio load ...`` in the seed's circuit-breaking walk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import typer

from mizzen.cli.common import api_call, client, fail
from mizzen.loadgen import run_load

__all__ = ["load", "pick_workload"]

HTTP_PROXY_PORT = 15080


def pick_workload(workloads: list[dict[str, Any]], ident: str, namespace: str | None) -> dict[str, Any]:
    """A workload by exact pod name, unique pod-name prefix, or ``app`` label (first pod, sorted by name)."""
    pool = sorted((w for w in workloads if namespace in (None, w.get("namespace"))),
                  key=lambda w: (w.get("namespace", ""), w.get("name", "")))
    def name(w: dict[str, Any]) -> str:
        return str(w.get("name", ""))

    matchers: list[Callable[[dict[str, Any]], bool]] = [
        lambda w: name(w) == ident,
        lambda w: name(w).startswith(ident),
        lambda w: (w.get("labels") or {}).get("app") == ident,
    ]
    for match in matchers:
        found = [w for w in pool if match(w)]
        if found:
            return found[0]
    names = ", ".join(str(w.get("name")) for w in pool[:8]) or "none registered"
    fail(f'no workload "{ident}" (workloads: {names})')


def load(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="URL to load, e.g. http://ratings:9080/ratings/0")],
    connections: Annotated[int, typer.Option("-c", help="concurrent connections (fortio -c)")] = 1,
    requests: Annotated[int, typer.Option("-n", help="total requests (fortio -n)")] = 1,
    source: Annotated[str | None, typer.Option(
        "--from", help="send through this workload's sidecar (pod name, prefix or app label)")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="namespace of --from")] = None,
    header: Annotated[list[str] | None, typer.Option("-H", help="extra header 'Name: value'")] = None,
    timeout: Annotated[float, typer.Option(help="per-request timeout, seconds")] = 10.0,
) -> None:
    """Send a bounded burst of GETs and print the status codes like fortio (Code 200 : 20 (100.0 %))."""
    if connections < 1 or requests < 1 or requests > 100_000:
        fail("-c must be >= 1 and -n between 1 and 100000")
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep:
            fail(f"header {h!r}: want 'Name: value'")
        headers[name.strip()] = value.strip()
    proxy = None
    if source:
        c = client(ctx)
        with api_call(c, "finding the workload..."):
            workloads = c.workloads()
        w = pick_workload(workloads, source, namespace)
        proxy = f"http://{w['address']}:{HTTP_PROXY_PORT}"
        typer.echo(f"from {w['namespace']}/{w['name']} (sidecar {proxy})")
    result = asyncio.run(run_load(url, concurrency=connections, total=requests, proxy=proxy,
                                  headers=headers, timeout=timeout, deadline=max(60.0, timeout * 3)))
    typer.echo(result.summary())
    if result.flags["overflow"]:
        typer.echo(f"{result.flags['overflow']} of the 503s were circuit-breaker overflows "
                   "(x-envoy-overloaded)")
