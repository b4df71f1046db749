"""``mizzen load``: fortio's ``load`` for the local mesh - ``-c`` connections, ``-N`` requests (fortio's
``-n``; ``-n`` is the namespace, as in every mizzen command), sent from a workload's sidecar (``--from
productpage``) so that DestinationRule pools and VirtualService rules apply, exactly like ``kubectl exec
fortio -- fortio load ...`` in the seed's circuit-breaking walk. Without ``--from`` a mesh name such as
``ratings`` does not resolve on the host: that is one clear error, not a "Code -1" summary.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any

import typer

from mizzen.cli.common import api_call, client, fail
from mizzen.cli.contexts import context_namespace
from mizzen.loadgen import ERROR_CODE, run_load

__all__ = ["load", "pick_workload"]

HTTP_PROXY_PORT = 15080


def pick_workload(workloads: list[dict[str, Any]], ident: str, namespace: str | None,
                  prefer: str | None = None) -> dict[str, Any]:
    """A workload by exact pod name, unique pod-name prefix, or ``app`` label (first pod, sorted by name);
    ``namespace`` restricts the search, otherwise pods in ``prefer`` (the context's namespace) come first."""
    pool = sorted((w for w in workloads if namespace in (None, w.get("namespace"))),
                  key=lambda w: (w.get("namespace") != prefer, w.get("namespace", ""), w.get("name", "")))
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
    url: Annotated[str, typer.Argument(metavar="URL", help="URL to load, e.g. http://ratings:9080/ratings/0")],
    connections: Annotated[int, typer.Option(
        "--connections", "-c", metavar="N", help="Concurrent connections (fortio's -c)")] = 1,
    requests: Annotated[int, typer.Option(
        "--requests", "-N", metavar="N", help="Total requests (fortio's -n; -n is the namespace here)")] = 1,
    source: Annotated[str | None, typer.Option(
        "--from", metavar="POD",
        help="Send through this workload's sidecar (pod name, prefix or app label); needed for mesh "
             "names like ratings:9080")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", metavar="NAMESPACE", show_default="all, the current context's first",
        help="Namespace of --from")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", metavar="'NAME: VALUE'", help="Extra header (repeatable)")] = None,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Per-request timeout")] = 10.0,
) -> None:
    """Send a bounded burst of GETs and print the status codes like fortio (Code 200 : 20 (100.0 %)).

    Flags follow kubectl (-n is the namespace, as everywhere in mizzen); fortio's -n (requests) is -N.
    503s are split by cause as Envoy reports it: overflow (UO), no healthy upstream (UH), connect
    failure (UF), fault abort (FI), or from the application. Exits 1 when no request got an HTTP answer.
    """
    if namespace is not None and namespace.isdigit():
        fail(f"-n is the namespace (as in kubectl); for fortio's request count use -N {namespace}")
    if connections < 1 or requests < 1 or requests > 100_000:
        fail("-c must be >= 1 and -N between 1 and 100000")
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep:
            fail(f"header {h!r}: want 'Name: value'")
        headers[name.strip()] = value.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        fail(f"{url!r} is not an http:// URL (e.g. http://ratings:9080/ratings/0)")
    proxy = None
    if source:
        c = client(ctx)
        with api_call(c, "finding the workload..."):
            workloads = c.workloads()
        w = pick_workload(workloads, source, namespace, None if namespace else context_namespace())
        proxy = f"http://{w['address']}:{HTTP_PROXY_PORT}"
        typer.echo(f"from {w['namespace']}/{w['name']} (sidecar {proxy})")
    elif not _resolvable(parsed.hostname):
        fail(f'cannot resolve "{parsed.hostname}" from this machine: mesh service names resolve only inside '
             "the mesh; add --from POD (e.g. --from productpage) to send through that workload's sidecar")
    result = asyncio.run(run_load(url, concurrency=connections, total=requests, proxy=proxy,
                                  headers=headers, timeout=timeout, deadline=max(60.0, timeout * 3)))
    typer.echo(result.summary())
    if result.flags["overflow"]:
        typer.echo(f"{result.flags['overflow']} of the 503s were circuit-breaker overflows "
                   "(x-envoy-overloaded)")
    if result.total and result.codes[ERROR_CODE] == result.total:
        error = result.errors.most_common(1)[0][0] if result.errors else "no response"
        fail(f"no request got an HTTP response ({error})")


def _resolvable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True
