"""``mizzen proxy-status`` and ``mizzen proxy-config clusters|listeners|routes|endpoints|secret|log|bootstrap|
all PROXY``.

``proxy-status`` and ``clusters|listeners|routes`` read the control plane's debug endpoints (``/debug/syncz``,
``/debug/config_dump``: what the control plane sends). ``endpoints``, ``secret``, ``log``, ``bootstrap`` and
``all`` ask the proxy itself, like istioctl does, through its agent's admin proxy (``http://<pod ip>:15004``,
with the API token; the address comes from the demo's pods or the registered workloads, never from what a
proxy claims) or ``--admin`` (a socket path, ``host:port`` or a URL). PROXY may be the full node id, the
``pod.namespace`` name, the pod name, or a unique prefix or substring of either.

With several control-plane replicas a proxy's xDS stream is held by one of them; asked of another, a proxy
that is not connected here but is a pod the control plane reaches (a cluster's ``/apis/pods`` ``admin``,
the pod agent's debug channel, forwarded to the replica holding it) is read from Envoy itself, as istioctl
reads it: ``clusters|listeners|routes`` then come from Envoy's config_dump.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
import yaml

from mizzen.admin_client import AdminClient, parse_admin_target
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT
from mizzen.cli import proxy_tables as pt
from mizzen.cli import secret_tables
from mizzen.cli.common import api_call, client, echo_err, fail
from mizzen.cli.contexts import context_namespace
from mizzen.client import ApiError, ControlPlaneClient, Unreachable

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
    """Sync status of every connected proxy per xDS type (SYNCED, STALE, NACKED, NOT SENT); alias: ps.
    With several control-plane replicas every replica's proxies are listed (the ISTIOD column)."""
    c = client(ctx)
    with api_call(c, "Fetching proxy status..."):
        entries, silent = c.syncz_all()
    for peer in silent:
        echo_err(f"control-plane replica {peer} did not answer: its proxies are not listed")
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


def _pods_with_admin(c: ControlPlaneClient, namespace: str | None) -> dict[str, str]:
    """Node-id-shaped names (``sidecar~~pod.ns~``) of the pods whose admin the control plane reaches, to
    their admin URL (an API path on a cluster)."""
    query = "?" + urllib.parse.urlencode({"namespace": namespace}) if namespace else ""
    try:
        body = c._request("GET", "/apis/pods" + query)
    except ApiError as e:
        if e.status != 404:
            raise
        return {}
    items = body.get("items") if isinstance(body, dict) else body
    out: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        admin = str(item.get("admin") or "") if isinstance(item, dict) else ""
        if admin:
            out[f"sidecar~~{item.get('name')}.{item.get('namespace')}~"] = (
                c.server + admin if admin.startswith("/") else admin)
    return out


def _locate(c: ControlPlaneClient, proxy: str, namespace: str | None) -> tuple[str | None, str | None]:
    """(node id connected to this control plane, None), or (None, admin URL) for a pod not connected here
    whose admin it reaches (another replica's proxy); else the usual one-line failure."""
    entries = c.syncz()
    ids = [str(e.get("proxy", "")) for e in entries]
    found, candidates = pt.resolve_proxy(proxy, ids, namespace, context_namespace())
    if found or candidates:
        return resolve(proxy, entries, namespace), None
    pods = _pods_with_admin(c, namespace)
    hit, _ = pt.resolve_proxy(proxy, list(pods), namespace, context_namespace())
    if hit is not None:
        return None, pods[hit]
    return resolve(proxy, entries, namespace), None


_SECTIONS = {
    "CDS": ("ClustersConfigDump", (("static_clusters", ("cluster",)),
                                   ("dynamic_active_clusters", ("cluster",)))),
    "LDS": ("ListenersConfigDump", (("static_listeners", ("listener",)),
                                    ("dynamic_listeners", ("active_state", "listener")))),
    "RDS": ("RoutesConfigDump", (("static_route_configs", ("route_config",)),
                                 ("dynamic_route_configs", ("route_config",)))),
}


def _from_envoy(dump: dict[str, Any], type_key: str) -> list[dict[str, Any]]:
    """The resources of one type in Envoy's config_dump (static and dynamic)."""
    suffix, parts = _SECTIONS[type_key]
    section = _dump_section(dump, suffix)
    return [i for key, inner in parts for i in _dynamic(section, key, inner)]


def _dump(ctx: typer.Context, proxy: str, type_key: str, namespace: str | None) -> list[dict[str, Any]]:
    c = client(ctx)
    with api_call(c, "Fetching proxy configuration..."):
        pid, admin = _locate(c, proxy, namespace)
        if pid is not None:
            dump = c.config_dump(pid)
    if pid is None and admin is not None and type_key in _SECTIONS:
        return _from_envoy(_config_dump(_admin_client(admin, c)), type_key)
    if pid is None:
        fail(f"{proxy} is connected to another control-plane replica; its {type_key} is read from Envoy "
             "only for clusters, listeners and routes")
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


AdminOpt = Annotated[str | None, typer.Option(
    "--admin", help="The proxy's admin: its agent (host:port or http://host:port, default: found from the "
                    "pod) or Envoy's admin socket path")]


def _discover_admin(c: ControlPlaneClient, proxy_id: str) -> str | None:
    """The agent admin proxy URL of ``proxy_id`` from sources the control plane trusts: the demo's pods
    (``/apis/pods``), else the registered workloads' addresses; None when neither knows the proxy."""
    pod, _, namespace = pt.proxy_name(proxy_id).partition(".")
    try:
        body = c._request("GET", "/apis/pods?" + urllib.parse.urlencode({"namespace": namespace}))
    except ApiError as e:
        if e.status != 404:
            raise
        body = None
    items = body.get("items") if isinstance(body, dict) else body
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == pod and item.get("namespace") == namespace:
            admin = str(item.get("admin") or "")
            # on a cluster: a path of the control plane's API (the pod agent's debug channel)
            return (c.server + admin if admin.startswith("/") else admin) or None
    try:
        workloads = c.workloads()
    except ApiError as e:
        if e.status != 404:
            raise
        workloads = []
    for w in workloads:
        if w.get("name") == pod and w.get("namespace") == namespace and w.get("address"):
            return f"http://{w['address']}:{AGENT_ADMIN_PORT}"
    return None


@contextmanager
def _admin_call(target: str) -> Iterator[None]:
    try:
        yield
    except Unreachable:
        fail(f"cannot reach the proxy's admin at {target}")
    except ApiError as e:
        fail("; ".join(e.errors))


def _admin(ctx: typer.Context, proxy: str, namespace: str | None, admin: str | None,
           required: bool = True) -> AdminClient | None:
    """The admin client for PROXY (``--admin`` wins); None when not found and not ``required``."""
    c = client(ctx)
    with api_call(c, "Finding the proxy..."):
        pid, pod_admin = _locate(c, proxy, namespace)
        url = admin or pod_admin or (_discover_admin(c, pid) if pid is not None else None)
    if not url:
        if required:
            fail(f"no admin address known for {pt.proxy_name(pid or proxy)} (not a pod of this control "
                 "plane's runner nor a registered workload): pass --admin HOST:PORT or the admin socket path")
        return None
    return _admin_client(url, c)


def _admin_client(url: str, c: ControlPlaneClient) -> AdminClient:
    try:
        target = parse_admin_target(url)
    except ValueError as e:
        fail(str(e))
    return AdminClient(target, c.token_source if target.url else None)


@config_app.command("endpoints")
def endpoints(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None,
    namespace: ProxyNamespace = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Only clusters containing this")] = None,
    admin: AdminOpt = None,
) -> None:
    """Endpoints as Envoy sees them now: ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER.

    Read from the proxy's admin (/clusters?format=json) like istioctl, so outlier ejections show as
    OUTLIER CHECK FAILED. A proxy whose admin is unknown gets the control plane's EDS view (OUTLIER CHECK -).
    """
    _check_output(output)
    ac = _admin(ctx, proxy, namespace, admin, required=False)
    if ac is not None:
        with _admin_call(str(ac.target)):
            statuses = ac.clusters()
        if output == "json":
            _print_json(statuses)
        else:
            typer.echo(pt.admin_endpoints_table(statuses, cluster))
        return
    echo_err("note: this proxy's admin is unknown here; showing the control plane's EDS view (pass --admin "
             "for Envoy's live health)")
    items = _dump(ctx, proxy, "EDS", namespace)
    if output == "json":
        _print_json(items)
    else:
        typer.echo(pt.endpoints_table(items, cluster))


@config_app.command("log")
def log_levels(
    ctx: typer.Context, proxy: ProxyArg, namespace: ProxyNamespace = None,
    level: Annotated[str | None, typer.Option(
        "--level", help="Set the level of every logger (debug, info, warning, ...) or some: "
                        "'http:debug,router:info'")] = None,
    admin: AdminOpt = None,
) -> None:
    """Envoy's loggers and their levels (admin /logging); --level changes them."""
    ac = _admin(ctx, proxy, namespace, admin)
    assert ac is not None
    with _admin_call(str(ac.target)):
        text = ac.logging(level)
    typer.echo(text.rstrip("\n"))


def _config_dump(ac: AdminClient) -> dict[str, Any]:
    with _admin_call(str(ac.target)):
        return ac.config_dump()


def _dump_section(dump: dict[str, Any], suffix: str) -> dict[str, Any]:
    for c in dump.get("configs") or []:
        if isinstance(c, dict) and str(c.get("@type", "")).endswith(suffix):
            return c
    return {}


@config_app.command("secret")
def secret(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None, namespace: ProxyNamespace = None,
    admin: AdminOpt = None,
) -> None:
    """The proxy's certificates as Envoy holds them, like istioctl proxy-config secret: workload identity
    (default), roots (ROOTCA) and gateway credentials (kubernetes://NAME); -o json: Envoy's SecretsConfigDump
    (private keys redacted)."""
    _check_output(output)
    ac = _admin(ctx, proxy, namespace, admin)
    assert ac is not None
    section = secret_tables.secrets_section(_config_dump(ac))
    if output == "json":
        typer.echo(json.dumps(section, indent=2))
        return
    typer.echo(secret_tables.secrets_table(section))


@config_app.command("bootstrap")
def bootstrap(
    ctx: typer.Context, proxy: ProxyArg, namespace: ProxyNamespace = None,
    output: Annotated[str, typer.Option("--output", "-o", help="json or yaml")] = "json",
    admin: AdminOpt = None,
) -> None:
    """The proxy's bootstrap as Envoy runs it (config_dump's BootstrapConfigDump)."""
    if output not in ("json", "yaml"):
        fail(f'unknown output format "{output}" (want json or yaml)')
    ac = _admin(ctx, proxy, namespace, admin)
    assert ac is not None
    found = _dump_section(_config_dump(ac), "BootstrapConfigDump")
    section = {k: v for k, v in found.items() if k != "@type"}
    if not section:
        fail("the proxy's config_dump has no bootstrap")
    typer.echo(json.dumps(section, indent=2) if output == "json"
               else yaml.safe_dump(section, sort_keys=False).rstrip())


def _dynamic(section: dict[str, Any], key: str, inner: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for entry in section.get(key) or []:
        for k in inner:
            entry = entry.get(k) if isinstance(entry, dict) else None
        if isinstance(entry, dict):
            out.append(entry)
    return out


@config_app.command("all")
def all_config(
    ctx: typer.Context, proxy: ProxyArg, output: Output = None, namespace: ProxyNamespace = None,
    admin: AdminOpt = None,
) -> None:
    """Everything the proxy runs, from Envoy: clusters, listeners, routes and endpoints tables (-o json: the
    whole config_dump, secrets redacted)."""
    _check_output(output)
    ac = _admin(ctx, proxy, namespace, admin)
    assert ac is not None
    dump = _config_dump(ac)
    if output == "json":
        typer.echo(json.dumps(dump, indent=2))
        return
    cds, lds = _dump_section(dump, "ClustersConfigDump"), _dump_section(dump, "ListenersConfigDump")
    rds = _dump_section(dump, "RoutesConfigDump")
    clusters = [*_dynamic(cds, "static_clusters", ("cluster",)),
                *_dynamic(cds, "dynamic_active_clusters", ("cluster",))]
    listeners = [*_dynamic(lds, "static_listeners", ("listener",)),
                 *_dynamic(lds, "dynamic_listeners", ("active_state", "listener"))]
    routes = [*_dynamic(rds, "static_route_configs", ("route_config",)),
              *_dynamic(rds, "dynamic_route_configs", ("route_config",))]
    with _admin_call(str(ac.target)):
        statuses = ac.clusters()
    typer.echo(pt.clusters_table(clusters, None, None, None, None))
    typer.echo("")
    typer.echo(pt.listeners_table(listeners, None))
    typer.echo("")
    typer.echo(pt.routes_table(routes, None))
    typer.echo("")
    typer.echo(pt.admin_endpoints_table(statuses, None))
