"""``mizzen get``: kubectl get for config objects, the demo's pods and namespaces.

Namespaces resolve like kubectl (``-n``, else the current context's namespace, else ``default``; ``-A`` for
all); ``-l`` takes kubectl's selector syntax (:mod:`mizzen.config.labelselector`); ``--show-labels`` adds a
LABELS column; ``get all`` lists pods, services and deployments; ``get ns`` lists every namespace in use
(declared by a Namespace object or holding an object or pod); ``-w`` prints the table, then one row per change
until Ctrl-C (polling the API every :data:`WATCH_PERIOD_S`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer
import yaml

from mizzen.cli import get_tables, pods
from mizzen.cli.common import api_call, client, echo_err, fail, parse_time, resource_ref
from mizzen.cli.contexts import namespace_of
from mizzen.cli.resources import Namespace, not_found, resolve_kind
from mizzen.client import ApiError, ControlPlaneClient
from mizzen.config import kinds
from mizzen.config.labelselector import SelectorError, matches, parse

__all__ = ["ALL_KINDS", "WATCH_PERIOD_S", "get", "labels_text"]

ALL_KINDS = ("pods", "services", "deployments")     # kubectl's "all" category, as far as Mizzen models it
WATCH_PERIOD_S = 0.5
OUTPUTS = (None, "yaml", "json", "wide", "name")
POD = "Pod"
# fields of a pod that change without the pod changing (not a reason to print a watch row)
_VOLATILE_POD_FIELDS = ("age_s", "start_time")


@dataclass
class Listing:
    """One kind's items as fetched (kind name ``Pod`` for the demo's pods)."""

    kind: str
    items: list[dict[str, Any]] = field(default_factory=list)
    plural: str = ""


def _meta(item: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = item.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(kind: str, item: Mapping[str, Any]) -> dict[str, str]:
    raw = item.get("labels") if kind == POD else _meta(item).get("labels")
    return {str(k): str(v) for k, v in (raw or {}).items()} if isinstance(raw, Mapping) else {}


def _name(kind: str, item: Mapping[str, Any]) -> str:
    return str(item.get("name", "") if kind == POD else _meta(item).get("name", ""))


def _namespace(kind: str, item: Mapping[str, Any]) -> str:
    return str(item.get("namespace", "") if kind == POD else _meta(item).get("namespace", ""))


def labels_text(labels: Mapping[str, str]) -> str:
    """kubectl's LABELS column: ``app=reviews,version=v1`` (sorted), ``<none>`` when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _pods(c: ControlPlaneClient, ns: str | None) -> list[dict[str, Any]]:
    return pods.list_pods(c, ns)


def _namespaces(c: ControlPlaneClient) -> list[dict[str, Any]]:
    """Every namespace in use: Namespace objects, plus namespaces holding objects or (demo) pods; the AGE of
    an undeclared one is that of its oldest object or pod."""
    declared = {_meta(o).get("name"): o for o in c.objects("Namespace")}
    created: dict[str, datetime | None] = {}

    def seen(ns: str, when: Any) -> None:
        t = parse_time(when)
        old = created.get(ns)
        if ns and (ns not in created or (t is not None and (old is None or t < old))):
            created[ns] = t

    for o in c.objects(""):
        seen(str(_meta(o).get("namespace") or ""), _meta(o).get("creationTimestamp"))
    try:
        for p in _pods(c, None):
            seen(str(p.get("namespace", "")), p.get("start_time"))
    except ApiError:
        pass                      # a plain control plane runs no pods
    out = []
    for name in sorted(set(created) | {str(n) for n in declared if n}):
        if name in declared:
            out.append(declared[name])
        else:
            t = created.get(name)
            out.append({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": name, "creationTimestamp": t.isoformat() if t else None},
                        "status": {"phase": "Active"}})
    return out


def _fetch(c: ControlPlaneClient, kind: kinds.Kind | None, ns: str | None, names: Sequence[str],
           missing: list[str]) -> Listing:
    """One kind's items (``kind`` None: pods); names not found are added to ``missing``."""
    if kind is None:
        items = pods.with_mtls(c, _pods(c, ns))   # the MTLS column (-o wide)
        if names:
            missing.extend(f'Error from server (NotFound): pods "{n}" not found'
                           for n in names if not any(p.get("name") == n for p in items))
            items = [p for p in items if p.get("name") in names]
        return Listing(POD, items, "pods")
    if kind.kind == "Namespace":
        items = _namespaces(c)
    elif names:
        items = []
        for n in names:
            got = c.objects(kind.kind, ns if kind.namespaced else None, n)
            items.extend(got)
    else:
        items = c.objects(kind.kind, ns if kind.namespaced else None)
    if names:
        found = {_name(kind.kind, i) for i in items}
        missing.extend(not_found(kind, n) for n in names if n not in found)
        items = [i for i in items if _name(kind.kind, i) in names]
    return Listing(kind.kind, items, kind.plural)


def _rows_text(listing: Listing, all_ns: bool, wide: bool, show_labels: bool, prefix: bool) -> str:
    items = listing.items
    if listing.kind == POD:
        if prefix:
            items = [{**p, "name": f"pod/{p.get('name', '')}"} for p in items]
        text = pods.pod_rows(items, all_ns, wide)
        if show_labels:
            text = _add_labels_column(text, [_labels(POD, p) for p in items])
        return text
    if prefix:
        items = [{**i, "metadata": {**_meta(i), "name": resource_ref(listing.kind, _name(listing.kind, i))}}
                 for i in items]
    kind = kinds.BY_NAME.get(listing.kind)
    namespaced = kind is None or kind.namespaced        # no NAMESPACE column for cluster-scoped kinds
    return get_tables.render(listing.kind, items, all_ns and namespaced, wide, labels=show_labels)


def _add_labels_column(table: str, labels: Sequence[Mapping[str, str]]) -> str:
    lines = table.splitlines()
    if not lines:
        return table
    width = max(len(line) for line in lines)
    out = [lines[0].ljust(width) + "   LABELS"]
    out.extend(line.ljust(width) + "   " + labels_text(lab)
               for line, lab in zip(lines[1:], labels, strict=False))
    return "\n".join(out)


def _document(listings: Sequence[Listing], single_named: bool) -> Any:
    items = [i for lst in listings for i in lst.items]
    if single_named and len(items) == 1:
        return items[0]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _print(listings: Sequence[Listing], output: str | None, all_ns: bool, show_labels: bool,
           single_named: bool) -> bool:
    """Print what was found; False when there was nothing to print."""
    nonempty = [lst for lst in listings if lst.items]
    if not nonempty:
        return False
    if output in ("yaml", "json"):
        doc = _document(nonempty, single_named)
        typer.echo(json.dumps(doc, indent=2) if output == "json"
                   else yaml.safe_dump(doc, sort_keys=False).rstrip())
    elif output == "name":
        for lst in nonempty:
            for i in lst.items:
                typer.echo(f"pod/{i.get('name', '')}" if lst.kind == POD
                           else resource_ref(lst.kind, _name(lst.kind, i)))
    else:
        prefix = len(listings) > 1
        typer.echo("\n\n".join(_rows_text(lst, all_ns, output == "wide", show_labels, prefix)
                               for lst in nonempty))
    return True


def _no_resources(ns: str | None) -> str:
    return "No resources found" if ns is None else f"No resources found in {ns} namespace."


def _kinds(kind_arg: str) -> list[kinds.Kind | None]:
    """The kinds named by ``KIND`` (``a,b``: several; ``all``: pods,services,deployments); None = pods."""
    args = [a.strip() for a in kind_arg.split(",") if a.strip()]
    if not args:
        fail("you must specify the type of resource to get")
    out: list[kinds.Kind | None] = []
    for a in args:
        for one in (ALL_KINDS if a.lower() == "all" else (a,)):
            k = None if one.lower() in pods.POD_KINDS else resolve_kind(one)
            if k not in out:
                out.append(k)
    return out


def get(
    ctx: typer.Context,
    kind_arg: Annotated[str, typer.Argument(
        metavar="KIND", help="vs, dr, gw, se, svc, deploy, pods, ns, all, ... (several: vs,dr)")],
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...", help="Only these objects")] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="List across all namespaces")] = False,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", metavar="FORMAT", help="yaml, json, wide or name")] = None,
    selector: Annotated[str | None, typer.Option(
        "--selector", "-l", metavar="SELECTOR",
        help="Label selector, kubectl syntax: a=b, a!=b, 'a in (x,y)', 'a notin (x)', a, '!a' (comma = and)",
    )] = None,
    show_labels: Annotated[bool, typer.Option("--show-labels", help="Add a LABELS column")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="After the list, print a row for every change (until Ctrl-C)")] = False,
) -> None:
    """List objects, pods or namespaces, like kubectl get."""
    if output not in OUTPUTS:
        fail(f'unable to match a printer suitable for the output format "{output}", '
             "allowed formats are: json,name,wide,yaml")
    if all_namespaces and namespace:
        all_namespaces = False      # kubectl: an explicit -n wins over -A
    try:
        label_selector = parse(selector) if selector else None
    except SelectorError as e:
        fail(f"invalid label selector: {e}")
    if names and selector:
        fail("name cannot be provided when a selector is specified")
    kind_list = _kinds(kind_arg)
    if names and len(kind_list) > 1:
        fail("a NAME can only be given with one KIND (use KIND/NAME pairs one kind at a time)")
    ns = None if all_namespaces else namespace_of(namespace)
    if kind_list == [None] and not watch and not selector and not show_labels:
        pods.get_pods(ctx, list(names or []), ns, all_namespaces, output)   # the pod owner's printing
        return
    c = client(ctx)
    listings, missing = _list(c, kind_list, ns, list(names or []), label_selector)
    printed = _print(listings, output, all_namespaces, show_labels, len(names or []) == 1)
    if not printed and not names and not watch:
        scoped = all(k is not None and not k.namespaced for k in kind_list)
        echo_err(_no_resources(None if scoped else ns))
    for line in missing:
        echo_err(line)
    if watch:
        _watch(c, kind_list, ns, list(names or []), label_selector, listings, output, all_namespaces,
               show_labels)
    if missing:
        raise typer.Exit(1)


def _list(c: ControlPlaneClient, kind_list: Sequence[kinds.Kind | None], ns: str | None, names: list[str],
          selector: Mapping[str, Any] | None) -> tuple[list[Listing], list[str]]:
    missing: list[str] = []
    listings = []
    with api_call(c, "Listing..."):
        for k in kind_list:
            try:
                lst = _fetch(c, k, ns, names, missing)
            except ApiError:
                if k is None and len(kind_list) > 1:
                    continue      # "get all" against a control plane without pods: the rest still lists
                raise
            if selector is not None:
                lst.items = [i for i in lst.items if matches(selector, _labels(lst.kind, i))]
            listings.append(lst)
    return listings, missing


def _fingerprint(kind: str, item: Mapping[str, Any]) -> str:
    if kind == POD:
        item = {k: v for k, v in item.items() if k not in _VOLATILE_POD_FIELDS}
    return json.dumps(item, sort_keys=True, default=str)


def _key(kind: str, item: Mapping[str, Any]) -> tuple[str, str, str]:
    return kind, _namespace(kind, item), _name(kind, item)


def _watch(c: ControlPlaneClient, kind_list: Sequence[kinds.Kind | None], ns: str | None, names: list[str],
           selector: Mapping[str, Any] | None, first: Sequence[Listing], output: str | None, all_ns: bool,
           show_labels: bool) -> None:
    """Poll and print one row (or document) per added, changed or deleted item until Ctrl-C."""
    seen = {_key(lst.kind, i): _fingerprint(lst.kind, i) for lst in first for i in lst.items}
    last_items = {_key(lst.kind, i): i for lst in first for i in lst.items}
    prefix = len(kind_list) > 1
    try:
        while True:
            time.sleep(WATCH_PERIOD_S)
            listings, _ = _list(c, kind_list, ns, names, selector)
            now: dict[tuple[str, str, str], dict[str, Any]] = {}
            for lst in listings:
                for i in lst.items:
                    now[_key(lst.kind, i)] = i
            changed: list[tuple[str, dict[str, Any]]] = []
            for key, item in now.items():
                fp = _fingerprint(key[0], item)
                if seen.get(key) != fp:
                    seen[key] = fp
                    changed.append((key[0], item))
            for key in [k for k in seen if k not in now]:      # deleted: kubectl prints the last state
                del seen[key]
                changed.append((key[0], last_items[key]))
            last_items = now
            for kind, item in changed:
                _print_change(kind, item, output, all_ns, show_labels, prefix)
    except KeyboardInterrupt:
        return


def _print_change(kind: str, item: dict[str, Any], output: str | None, all_ns: bool, show_labels: bool,
                  prefix: bool) -> None:
    if output in ("yaml", "json"):
        typer.echo(json.dumps(item, indent=2) if output == "json"
                   else "---\n" + yaml.safe_dump(item, sort_keys=False).rstrip())
        return
    if output == "name":
        typer.echo(f"pod/{item.get('name', '')}" if kind == POD else resource_ref(kind, _name(kind, item)))
        return
    table = _rows_text(Listing(kind, [item]), all_ns, output == "wide", show_labels, prefix)
    lines = table.splitlines()
    typer.echo(lines[-1] if len(lines) > 1 else table)
    typer.get_text_stream("stdout").flush()
