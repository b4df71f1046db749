"""``mizzen proxy-status`` and ``mizzen proxy-config clusters|listeners|routes|endpoints PROXY``.

Both read the control plane's debug endpoints (``/debug/syncz``, ``/debug/config_dump``); PROXY may be the
full node id, the ``pod.namespace`` name, the pod name, or a unique prefix or substring of either.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mizzen.cli import proxy_tables as pt
from mizzen.cli.common import api_call, client, echo_err, fail
from mizzen.cli.contexts import context_namespace
from mizzen.client import ApiError, Unreachable, envoy_clusters

__all__ = ["config_app", "proxy_status"]

config_app = typer.Typer(help="Show the xDS configuration the control plane sends to one proxy (alias: pc).",
                         no_args_is_help=True)


def resolve(arg: str, entries: list[dict[str, Any]], namespace: str | None = None) -> str:
    """PROXY -> one node id: ``-n`` restricts the search to that namespace, otherwise every namespace is
    searched and the current context's namespace breaks a tie (else one clear error)."""
    ids = [str(e.get("proxy", "")) for e in entries]
    found, candidates = pt.resolve_proxy(arg, ids, namespace, context_namespace())
    if found:
        return found
    if candidates:
        fail(f'"{arg}" matches several proxies: ' + ", ".join(sorted(pt.proxy_name(p) for p in candidates))
             + " (use -n NAMESPACE or a longer name)")
    scope = [p for p in ids if not namespace or pt.proxy_namespace(p) == namespace]
    known = ", ".join(sorted(pt.proxy_name(p) for p in scope)) or "none connected"
    where = f" in namespace {namespace}" if namespace else ""
    fail(f'no proxy matches "{arg}"{where} (proxies: {known})')



ProxyNamespace = Annotated[str | None, typer.Option(
    "--namespace", "-n", metavar="NAMESPACE", show_default="all, the current context's first",
    help="Namespace of the proxy's pod")]


def proxy_status(
    ctx: typer.Context,
    proxy: Annotated[str | None, typer.Argument(
        metavar="[PROXY]", help="Only this proxy (id, pod, prefix)")] = None,
    namespace: ProxyNamespace = None,
) -> None:
    """Sync status of every connected proxy per xDS type (SYNCED, STALE, NACKED, NOT SENT); alias: ps."""
    c = client(ctx)
    with api_call(c, "Fetching proxy status..."):
        entries = c.syncz()
    if proxy:
        pid = resolve(proxy, entries, namespace)
        entries = [e for e in entries if e.get("proxy") == pid]
    elif namespace:
        entries = [e for e in entries if pt.proxy_namespace(str(e.get("proxy", ""))) == namespace]
    if not entries:
        echo_err("No proxies connected.")
        return
    typer.echo(pt.status_table(entries))
    nacks = pt.nack_lines(entries)
    if nacks:
        typer.echo("\nNACKs:")
        for line in nacks:
            typer.echo(f"  {line}")
    if proxy:
        e = entries[0]
        typer.echo(f"\nProxy ID: {e.get('proxy')}")
        for t in pt.TYPES:
            st = (e.get("types") or {}).get(t) or {}
            typer.echo(f"  {t}: sent={st.get('sent') or '-'} acked={st.get('acked') or '-'} "
                       f"nonce={st.get('nonce') or '-'}")


def _syncz(ctx: typer.Context) -> list[dict[str, Any]]:
    c = client(ctx)
    with api_call(c, "Fetching proxy status..."):
        return c.syncz()


def _dump(ctx: typer.Context, proxy: str, type_key: str, namespace: str | None) -> list[dict[str, Any]]:
    c = client(ctx)
    with api_call(c, "Fetching proxy configuration..."):
        pid = resolve(proxy, c.syncz(), namespace)
        dump = c.config_dump(pid)
    items = dump.get(type_key) or []
    return [i for i in items if isinstance(i, dict)]


def _print_json(items: list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(items, indent=2))


Output = Annotated[str | None, typer.Option("--output", "-o", metavar="FORMAT",
                                            help="json for the full resources")]
ProxyArg = Annotated[str, typer.Argument(metavar="PROXY",
                                         help="Proxy id, pod name, or a unique prefix/substring")]


def _check_output(output: str | None) -> None:
    if output not in (None, "json", "short"):
        fail(f'unknown output format "{output}" (want json)')


@config_app.command("clusters")
def clusters(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    namespace: ProxyNamespace = None,
    fqdn: Annotated[str | None, typer.Option("--fqdn", help="Only FQDNs containing this")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    subset: Annotated[str | None, typer.Option("--subset")] = None,
    direction: Annotated[str | None, typer.Option("--direction", help="inbound | outbound")] = None,
) -> None:
    """Clusters (CDS): SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, DESTINATION RULE."""
    _check_output(output)
    items = _dump(ctx, proxy, "CDS", namespace)
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.clusters_table(items, fqdn, port, subset, direction))


@config_app.command("routes")
def routes(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    namespace: ProxyNamespace = None,
    name: Annotated[str | None, typer.Option(
        "--name", metavar="NAME", help="Only this route config (e.g. 9080, http.8080, http_proxy)")] = None,
) -> None:
    """Routes (RDS): NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE."""
    _check_output(output)
    items = _dump(ctx, proxy, "RDS", namespace)
    names = sorted(str(pt.f(i, "name") or "") for i in items)
    if name and name not in names:
        fail(f'no route configuration named "{name}" in this proxy; its route configurations: '
             + (", ".join(names) or "none"))
    if output == "json":
        _print_json([i for i in items if not name or pt.f(i, "name") == name])
    else:
        typer.echo(pt.routes_table(items, name))


@config_app.command("listeners")
def listeners(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    namespace: ProxyNamespace = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
) -> None:
    """Listeners (LDS): ADDRESS, PORT, MATCH, DESTINATION per filter chain."""
    _check_output(output)
    items = _dump(ctx, proxy, "LDS", namespace)
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.listeners_table(items, port))


@config_app.command("endpoints")
def endpoints(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    namespace: ProxyNamespace = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Only clusters containing this")] = None,
    admin: Annotated[str | None, typer.Option(
        "--admin", help="Envoy admin URL: show Envoy's own health and outlier view")] = None,
) -> None:
    """Endpoints (EDS): ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER.

    From the control plane by default (OUTLIER CHECK is then unknown: "-"); with --admin, from Envoy.
    """
    _check_output(output)
    if admin:
        resolve(proxy, _syncz(ctx), namespace)
        try:
            statuses = envoy_clusters(admin)
        except Unreachable:
            fail(f"cannot reach the Envoy admin interface at {admin}")
        except ApiError as e:
            fail("; ".join(e.errors))
        if output == "json":
            _print_json(statuses)
        else:
            typer.echo(pt.admin_endpoints_table(statuses, cluster))
        return
    items = _dump(ctx, proxy, "EDS", namespace)
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.endpoints_table(items, cluster))
