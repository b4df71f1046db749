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
from mizzen.client import ApiError, Unreachable, envoy_clusters

__all__ = ["config_app", "proxy_status"]

config_app = typer.Typer(help="Show the xDS configuration the control plane sends to one proxy.",
                         no_args_is_help=True)


def _resolve(arg: str, entries: list[dict[str, Any]]) -> str:
    ids = [str(e.get("proxy", "")) for e in entries]
    found, candidates = pt.resolve_proxy(arg, ids)
    if found:
        return found
    if candidates:
        fail(f'"{arg}" matches several proxies: ' + ", ".join(sorted(pt.proxy_name(p) for p in candidates)))
    known = ", ".join(sorted(pt.proxy_name(p) for p in ids)) or "none connected"
    fail(f'no proxy matches "{arg}" (proxies: {known})')


def proxy_status(
    ctx: typer.Context,
    proxy: Annotated[str | None, typer.Argument(help="Only this proxy (id, pod, prefix)")] = None,
) -> None:
    """Sync status of every connected proxy per xDS type (SYNCED, STALE, NACKED, NOT SENT)."""
    c = client(ctx)
    with api_call(c, "Fetching proxy status..."):
        entries = c.syncz()
    if proxy:
        pid = _resolve(proxy, entries)
        entries = [e for e in entries if e.get("proxy") == pid]
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


def _dump(ctx: typer.Context, proxy: str, type_key: str) -> list[dict[str, Any]]:
    c = client(ctx)
    with api_call(c, "Fetching proxy configuration..."):
        pid = _resolve(proxy, c.syncz())
        dump = c.config_dump(pid)
    items = dump.get(type_key) or []
    return [i for i in items if isinstance(i, dict)]


def _print_json(items: list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(items, indent=2))


Output = Annotated[str | None, typer.Option("--output", "-o", help="json for the full resources")]
ProxyArg = Annotated[str, typer.Argument(help="Proxy id, pod name, or a unique prefix/substring")]


def _check_output(output: str | None) -> None:
    if output not in (None, "json", "short"):
        fail(f'unknown output format "{output}" (want json)')


@config_app.command("clusters")
def clusters(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    fqdn: Annotated[str | None, typer.Option("--fqdn", help="Only FQDNs containing this")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    subset: Annotated[str | None, typer.Option("--subset")] = None,
    direction: Annotated[str | None, typer.Option("--direction", help="inbound | outbound")] = None,
) -> None:
    """Clusters (CDS): SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, DESTINATION RULE."""
    _check_output(output)
    items = _dump(ctx, proxy, "CDS")
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.clusters_table(items, fqdn, port, subset, direction))


@config_app.command("routes")
def routes(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    name: Annotated[str | None, typer.Option("--name", help="Only this route configuration")] = None,
) -> None:
    """Routes (RDS): NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE."""
    _check_output(output)
    items = _dump(ctx, proxy, "RDS")
    if output == "json":
        _print_json([i for i in items if not name or pt.f(i, "name") == name])
    else:
        typer.echo(pt.routes_table(items, name))


@config_app.command("listeners")
def listeners(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
) -> None:
    """Listeners (LDS): ADDRESS, PORT, MATCH, DESTINATION per filter chain."""
    _check_output(output)
    items = _dump(ctx, proxy, "LDS")
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.listeners_table(items, port))


@config_app.command("endpoints")
def endpoints(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Only clusters containing this")] = None,
    admin: Annotated[str | None, typer.Option(
        "--admin", help="Envoy admin URL: show Envoy's own health and outlier view")] = None,
) -> None:
    """Endpoints (EDS): ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER.

    From the control plane by default (OUTLIER CHECK is then unknown: "-"); with --admin, from Envoy.
    """
    _check_output(output)
    if admin:
        _resolve(proxy, _syncz(ctx))
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
    items = _dump(ctx, proxy, "EDS")
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.endpoints_table(items, cluster))
