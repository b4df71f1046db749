"""``mizzen describe KIND NAME`` (kubectl describe) and ``mizzen x describe pod|svc NAME`` (istioctl x
describe): fetch what the control plane has (pods, stored objects, registry endpoints, generated xDS) and
print the text the pure modules :mod:`mizzen.cli.describe_kube` and :mod:`mizzen.cli.describe_mesh` assemble.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mizzen.cli import describe_kube, describe_mesh
from mizzen.cli import proxy_tables as pt
from mizzen.cli.common import api_call, client, fail
from mizzen.cli.contexts import namespace_of
from mizzen.cli.pods import POD_KINDS, list_pods, pod_object, resolve_pod
from mizzen.cli.resources import Namespace
from mizzen.client import ControlPlaneClient
from mizzen.config import kinds

__all__ = ["describe", "x_app"]

SERVICE_KINDS = ("svc", "service", "services")
MESH_KINDS = ("VirtualService", "DestinationRule", "Gateway", "Sidecar", "ServiceEntry",
              "PeerAuthentication")


x_app = typer.Typer(help="Experimental commands, like istioctl x.", no_args_is_help=True,
                    context_settings={"help_option_names": ["-h", "--help"]})


def _namespace(namespace: str | None) -> str:
    return namespace_of(namespace)          # -n, else the current context's, else default (kubectl's order)


def _pod(c: ControlPlaneClient, name: str, ns: str) -> dict[str, Any]:
    pods = list_pods(c, ns)
    if not any(p.get("name") == name or str(p.get("name", "")).startswith(name) for p in pods):
        fail(f'pods "{name}" not found in namespace {ns}')
    return dict(resolve_pod(pods, name))


def _one(c: ControlPlaneClient, kind: str, name: str, ns: str | None) -> dict[str, Any]:
    got = c.objects(kind, ns, name)
    if not got:
        k = kinds.BY_NAME.get(kind)
        plural = f"{k.plural}.{k.group}" if k and k.group else kind.lower() + "s"
        fail(f'{plural} "{name}" not found' + (f" in namespace {ns}" if ns else ""))
    return got[0]


def _config(c: ControlPlaneClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in MESH_KINDS:
        out.extend(c.objects(kind))
    return out


def _endpoints(c: ControlPlaneClient, fqdn: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for entry in c.registryz().get("endpoints") or []:
        if entry.get("hostname") == fqdn:
            out[int(entry.get("port", 0))] = [f"{e.get('address')}:{e.get('port')}"
                                              for e in entry.get("endpoints") or []]
    return out


def describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="pod, svc, vs, dr, gw, se, sidecar, ...")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Name (pods: or a unique prefix)")],
    namespace: Namespace = None,
) -> None:
    """Show details of one object, like kubectl describe (pods: containers, state, events)."""
    c = client(ctx)
    ns = _namespace(namespace)
    if kind.lower() in POD_KINDS:
        with api_call(c, "Describing..."):
            pod = _pod(c, name, ns)
        typer.echo(describe_kube.describe_pod(pod_object(pod), pod.get("events") or []))
        return
    if kind.lower() in SERVICE_KINDS:
        with api_call(c, "Describing..."):
            svc = _one(c, "Service", name, ns)
            eps = _endpoints(c, f"{name}.{ns}.svc.cluster.local")
        typer.echo(describe_kube.describe_service(svc, eps))
        return
    k = kinds.lookup(kind)
    if k is None:
        fail(f'the server doesn\'t have a resource type "{kind}"')
    if k.kind == "Secret":   # kubectl describe secret: keys and sizes (the API never returns the values)
        with api_call(c, "Describing..."):
            obj = _one(c, k.kind, name, ns)
        typer.echo(describe_kube.describe_secret(obj))
        return
    with api_call(c, "Describing..."):
        obj = _one(c, k.kind, name, ns if k.namespaced else None)
        others = _config(c) + c.objects("Service")
        pods = [pod_object(p) for p in list_pods(c, None)] if k.kind in ("Gateway", "Sidecar") else []
    typer.echo(describe_kube.describe_object(obj, others, pods))


def _proxies(c: ControlPlaneClient) -> list[str]:
    return [str(e.get("proxy", "")) for e in c.syncz()]


def _dump(c: ControlPlaneClient, proxy_id: str) -> describe_mesh.ProxyConfig:
    return describe_mesh.decode_proxy(c.config_dump(proxy_id))


def _gateways(c: ControlPlaneClient, ids: list[str]) -> list[describe_mesh.ProxyConfig]:
    return [_dump(c, p) for p in sorted(ids) if p.startswith("router~")]


@x_app.command("describe")
def x_describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="pod or svc")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Pod name (or unique prefix) or Service name")],
    namespace: Namespace = None,
) -> None:
    """Which Services, DestinationRules (subsets), VirtualServices (routes, weights), Sidecars and gateways
    apply to a pod or Service, read from the config Envoy was sent (like istioctl x describe)."""
    c = client(ctx)
    ns = _namespace(namespace)
    if kind.lower() in POD_KINDS:
        with api_call(c, "Describing..."):
            pod = pod_object(_pod(c, name, ns))
            ids = _proxies(c)
            me = f"{pod['metadata']['name']}.{ns}"
            sidecars = sorted(p for p in ids if p.startswith("sidecar~"))
            # its own sidecar's view; a gateway pod has none: the mesh's view, as any sidecar has it
            own_id = next((p for p in sidecars if pt.proxy_name(p) == me), sidecars[0] if sidecars else None)
            own = _dump(c, own_id) if own_id else None
            text = describe_mesh.describe_pod_mesh(pod, c.objects("Service"), _config(c), own,
                                                   _gateways(c, ids))
            mine = next((p for p in ids if pt.proxy_name(p) == me), None)
            text += describe_mesh.skipped_config_lines(c.proxy_warnings(mine) if mine else [])
        typer.echo(text)
        return
    if kind.lower() in SERVICE_KINDS:
        with api_call(c, "Describing..."):
            svc = _one(c, "Service", name, ns)
            pods = [pod_object(p) for p in list_pods(c, ns)]
            ids = _proxies(c)
            names = {f"{p['metadata']['name']}.{ns}" for p in pods if describe_mesh.selects(svc, p)}
            sidecars = sorted(p for p in ids if p.startswith("sidecar~"))
            # the routes as a pod of the service sees them, else as any sidecar of the mesh does
            own_id = next((p for p in sidecars if pt.proxy_name(p) in names),
                          sidecars[0] if sidecars else None)
            own = _dump(c, own_id) if own_id else None
            text = describe_mesh.describe_service_mesh(svc, pods, _config(c), own, _gateways(c, ids))
        typer.echo(text)
        return
    fail(f'x describe supports "pod" and "svc", not "{kind}"')

