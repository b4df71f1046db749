"""Kubernetes Ingress (networking.k8s.io/v1) -> Istio Gateway + VirtualServices, as pure data.

One Gateway per namespace and ingress class (selector ``istio: ingressgateway``, port 80 with every rule host,
plus an HTTPS server with ``credentialName`` for each ``spec.tls`` entry that names a ``secretName``; an entry
without one gets no HTTPS server, as in Istio) and one VirtualService per Ingress and host.

Exact and Prefix paths follow the Ingress spec (Prefix matches whole path elements). ImplementationSpecific
paths depend on the class:

- nginx class (``ingressClassName: nginx`` or the ``kubernetes.io/ingress.class: nginx`` annotation) keeps
  ingress-nginx's semantics: a string prefix; with ``use-regex``/``rewrite-target`` a case-insensitive regex
  anchored at the start, and ``rewrite-target`` replacing the whole path (``$N`` capture groups; a group the
  path lacks is empty, as in nginx). Routes are ordered longest path first.
- every other class follows Istio's own Ingress conversion: exact, except ``*``, ``/*`` and ``.*`` (catch-all)
  and a ``/*`` or ``.*`` suffix (a prefix); routes ordered like Istio's (longest path first, exact before
  prefix at equal length).

Whatever cannot be expressed is reported in the warnings list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from mizzen.config.validation.common import re2_error

__all__ = ["GATEWAY_SELECTOR", "NGINX_CLASS", "convert", "is_nginx_class"]

GATEWAY_SELECTOR: Mapping[str, str] = {"istio": "ingressgateway"}
NGINX = "nginx.ingress.kubernetes.io/"
REWRITE_TARGET = NGINX + "rewrite-target"
USE_REGEX = NGINX + "use-regex"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
NGINX_CLASS = "nginx"
INGRESS_API_VERSIONS = ("networking.k8s.io/v1", "networking.k8s.io/v1beta1", "extensions/v1beta1")
NET_API = "networking.istio.io/v1"
_REGEX_CHARS = set("()[]{}*+?|$^\\")
# ``/receiveapi(/|$)(.*)``: the idiomatic ingress-nginx "strip this prefix" path
_STRIP_PREFIX = re.compile(r"\^?(?P<lit>/[^()\[\]{}*+?|$^\\]*?)/?\(/\|\$\)\(\.\*\)\$?")


@dataclass
class _Route:
    matches: list[dict[str, Any]]
    destination: dict[str, Any]
    rewrite: dict[str, Any] | None = None
    order: tuple[int, int] = (1, 1)     # (-len(path), 0 exact / 1 other): longest first, exact first

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.matches:
            out["match"] = self.matches
        if self.rewrite:
            out["rewrite"] = self.rewrite
        out["route"] = [{"destination": self.destination}]
        return out


@dataclass
class _Ingress:
    name: str
    namespace: str | None
    klass: str
    doc: Mapping[str, Any]
    hosts: dict[str, list[_Route]] = field(default_factory=dict)   # host -> routes (rule order)
    default: dict[str, Any] | None = None
    nginx: bool = False

    @property
    def label(self) -> str:
        return f"Ingress {self.namespace}/{self.name}" if self.namespace else f"Ingress {self.name}"


def convert(
    ingress_docs: list[dict[str, Any]], namespace: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Convert Ingress manifests; returns (Gateway and VirtualService manifests, warnings).

    ``namespace`` is used for Ingresses without ``metadata.namespace`` (like ``kubectl -n``). Documents that
    are not Ingresses are skipped with a warning.
    """
    warnings: list[str] = []
    ingresses: list[_Ingress] = []
    for doc in ingress_docs:
        if not isinstance(doc, Mapping):
            continue
        kind, api = doc.get("kind"), doc.get("apiVersion")
        meta = doc.get("metadata") or {}
        if kind != "Ingress" or api not in INGRESS_API_VERSIONS:
            warnings.append(f"skipped {kind or '<no kind>'}/{meta.get('name', '')}: not an Ingress ({api})")
            continue
        ing = _parse(doc, namespace, warnings)
        if ing is not None:
            ingresses.append(ing)

    _merge_istio_hosts(ingresses, warnings)
    gateways, gw_name_of = _gateways(ingresses, warnings)
    services: list[tuple[bool, dict[str, Any]]] = []
    for ing in ingresses:
        services.extend(_virtual_services(ing, gw_name_of[(ing.namespace, ing.klass)]))
    # VirtualServices for the same host are merged in creation order: catch-alls go last
    services.sort(key=lambda pair: pair[0])
    return gateways + [vs for _, vs in services], warnings


def _merge_istio_hosts(ingresses: list[_Ingress], warnings: list[str]) -> None:
    """Istio's conversion makes one VirtualService per host from the rules of every Ingress naming it, its
    routes sorted together (longest path first). For non-nginx classes, the rules of a host several Ingresses
    share (same namespace and class) move to the first of them, in creation (input) order."""
    owners: dict[tuple[str | None, str, str], _Ingress] = {}
    for ing in ingresses:
        if ing.nginx:
            continue
        for host in list(ing.hosts):
            owner = owners.setdefault((ing.namespace, ing.klass, host), ing)
            if owner is not ing:
                owner.hosts[host].extend(ing.hosts.pop(host))
                warnings.append(f"{ing.label}: the rules for host {host} join those of {owner.label} in one "
                                "VirtualService, ordered together (as Istio's Ingress conversion does)")


# -- parsing ---------------------------------------------------------------------------------------------


def _parse(doc: Mapping[str, Any], namespace: str | None, warnings: list[str]) -> _Ingress | None:
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    annotations: Mapping[str, str] = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    ing = _Ingress(
        name=str(meta.get("name") or "ingress"),
        namespace=str(meta.get("namespace") or namespace or "") or None,
        klass=str(spec.get("ingressClassName") or annotations.get(CLASS_ANNOTATION) or ""),
        doc=doc,
        nginx=is_nginx_class(doc),
    )
    for key in sorted(annotations):
        if key.startswith(NGINX) and key not in (REWRITE_TARGET, USE_REGEX):
            warnings.append(f"{ing.label}: annotation {key}={annotations[key]!r} is not converted")
    rewrite_target = annotations.get(REWRITE_TARGET)
    regex_mode = rewrite_target is not None or annotations.get(USE_REGEX, "").lower() == "true"
    if not ing.nginx and (regex_mode or rewrite_target is not None):
        warnings.append(f"{ing.label}: nginx annotations {USE_REGEX}/{REWRITE_TARGET} apply to the nginx "
                        f"class only; class {ing.klass or '(none)'} follows Istio's Ingress conversion, "
                        "which has no regex paths or rewrites")
        regex_mode, rewrite_target = False, None

    for i, rule in enumerate(spec.get("rules") or []):
        host = str(rule.get("host") or "*")
        http = rule.get("http")
        if not http:
            warnings.append(f"{ing.label}: spec.rules[{i}] has no http paths; nothing to route")
            continue
        routes = ing.hosts.setdefault(host, [])
        for j, p in enumerate(http.get("paths") or []):
            where = f"{ing.label}: spec.rules[{i}].http.paths[{j}]"
            dest = _destination(p.get("backend") or {}, where, warnings)
            if dest is None:
                continue
            path_type = str(p.get("pathType") or "ImplementationSpecific")
            if ing.nginx:
                route = _path_route(str(p.get("path") or "/"), path_type, regex_mode, rewrite_target, dest,
                                    where, warnings)
            else:
                route = _istio_path_route(str(p.get("path") or ""), path_type, dest, where, warnings)
            if route is not None:
                routes.append(route)
    backend = spec.get("defaultBackend") or spec.get("backend")
    if backend:
        ing.default = _destination(backend, f"{ing.label}: spec.defaultBackend", warnings)
    if not ing.hosts and ing.default is None:
        warnings.append(f"{ing.label}: no rules and no default backend; nothing to convert")
        return None
    return ing


def is_nginx_class(doc: Mapping[str, Any]) -> bool:
    """An Ingress of ingress-nginx's class: ``spec.ingressClassName`` or the ``kubernetes.io/ingress.class``
    annotation is ``nginx``."""
    spec = doc.get("spec") or {}
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return NGINX_CLASS in (str(spec.get("ingressClassName") or ""),
                           str(annotations.get(CLASS_ANNOTATION) or ""))


def _prefix_matches(path: str) -> list[dict[str, Any]]:
    """An Ingress Prefix match: whole path elements, so /foo matches /foo and /foo/bar, not /foobar."""
    trimmed = path.rstrip("/")
    if not trimmed:
        return [{"uri": {"prefix": "/"}}]
    return [{"uri": {"exact": trimmed}}, {"uri": {"prefix": trimmed + "/"}}]


def _istio_path_route(path: str, path_type: str, dest: dict[str, Any], where: str,
                      warnings: list[str]) -> _Route | None:
    """Istio's Ingress conversion (pilot/pkg/config/kube/ingress): Exact and Prefix as the spec says, every
    other path type through its fallback: ``""``/``*``/``/*``/``.*`` match everything, a ``.*`` or ``/*``
    suffix is a prefix, anything else is exact. Ordered as Istio sorts them: longer first, exact first."""
    if path_type == "Exact":
        return _Route([{"uri": {"exact": path or "/"}}], dest, order=(-len(path), 0))
    if path_type == "Prefix":
        return _Route(_prefix_matches(path or "/"), dest, order=(-len(path or "/"), 1))
    if path_type != "ImplementationSpecific":
        warnings.append(f"{where}: unknown pathType {path_type!r}; treated as ImplementationSpecific")
    if path in ("", "*", "/*", ".*"):
        return _Route([], dest, order=(0, 1))
    for suffix in (".*", "/*"):
        if path.endswith(suffix):
            prefix = path[: -len(suffix)]
            return _Route(_prefix_matches(prefix), dest, order=(-len(prefix), 1))
    if not path.startswith("/"):
        warnings.append(f"{where}: path {path!r} does not start with '/'; skipped")
        return None
    return _Route([{"uri": {"exact": path}}], dest, order=(-len(path), 0))


def _destination(backend: Mapping[str, Any], where: str, warnings: list[str]) -> dict[str, Any] | None:
    svc = backend.get("service")
    if svc is None and backend.get("serviceName"):          # extensions/v1beta1 shape
        port = backend.get("servicePort")
        svc = {"name": backend["serviceName"],
               "port": {"number": port} if isinstance(port, int) else {"name": port}}
    if not svc or not svc.get("name"):
        what = "resource backend" if backend.get("resource") else "backend without a service"
        warnings.append(f"{where}: {what} is not converted")
        return None
    dest: dict[str, Any] = {"host": str(svc["name"])}
    port = svc.get("port") or {}
    if port.get("number") is not None:
        dest["port"] = {"number": int(port["number"])}
    elif port.get("name"):
        warnings.append(
            f"{where}: service port name {port['name']!r} is not converted (VirtualService destinations "
            f"take port numbers); the destination has no port, which works when the service has one port"
        )
    return dest


def _path_route(
    path: str, path_type: str, regex_mode: bool, target: str | None, dest: dict[str, Any],
    where: str, warnings: list[str],
) -> _Route | None:
    """ingress-nginx's semantics (nginx class). Routes are ordered longest path first, exact first."""
    if not path.startswith("/") and not path.startswith("^"):
        warnings.append(f"{where}: path {path!r} does not start with '/'; skipped")
        return None
    if path_type == "Exact":
        return _Route([{"uri": {"exact": path}}], dest, order=(-len(path), 0))
    if regex_mode:
        return _regex_route(path, target, dest, where, warnings)
    if path_type == "Prefix":
        return _Route(_prefix_matches(path), dest, order=(-len(path), 1))
    if path_type != "ImplementationSpecific":
        warnings.append(f"{where}: unknown pathType {path_type!r}; treated as ImplementationSpecific")
    # ingress-nginx treats ImplementationSpecific paths as plain string prefixes; a "/*" or ".*" suffix
    # (a glob or regex habit) means "anything below"
    if path in ("/*", "/.*"):
        return _Route([{"uri": {"prefix": "/"}}], dest, order=(-1, 1))
    for suffix, keep in ((".*", ""), ("/*", "/")):
        if path.endswith(suffix):
            prefix = path[: -len(suffix)] + keep
            return _Route([{"uri": {"prefix": prefix}}], dest, order=(-len(prefix), 1))
    return _Route([{"uri": {"prefix": path}}], dest, order=(-len(path), 1))


def _regex_route(
    path: str, target: str | None, dest: dict[str, Any], where: str, warnings: list[str]
) -> _Route | None:
    order = (-len(path), 1)
    strip = _STRIP_PREFIX.fullmatch(path)
    if strip and (target is None or re.fullmatch(r"[^$\\]*\$2", target)):
        lit = strip.group("lit").rstrip("/") or ""
        matches = [{"uri": {"prefix": lit + "/"}}]
        if lit:
            matches.append({"uri": {"exact": lit}})
        rewrite: dict[str, Any] | None = None
        if target is not None:
            base = target[: -len("$2")] or "/"
            if base != lit + "/":
                rewrite = {"uri": base}
        return _Route(matches, dest, rewrite, order)
    body = path.lstrip("^")
    literal = body[:-2] if body.endswith(".*") else body
    if not any(c in _REGEX_CHARS for c in literal):     # a plain path (a "." is taken literally)
        matches = [{"uri": {"prefix": literal}}]
        if target is None or target == literal:
            return _Route(matches, dest, None, order)
        # nginx replaces the whole URI with the target; the path has no capture groups
        whole = {"uriRegexRewrite": {"match": "^" + re.escape(literal) + ".*",
                                     "rewrite": _groups(target, 0, where, warnings)}}
        return _Route(matches, dest, whole, order)
    problem = re2_error(body)
    if problem:
        warnings.append(f"{where}: path {path!r} is not a valid RE2 regex ({problem}); skipped")
        return None
    pattern = body if body.endswith("$") else body + ".*"
    warnings.append(
        f"{where}: regex path {path!r} becomes regex {pattern!r}; nginx matches it case-insensitively, "
        f"Istio case-sensitively"
    )
    regex_rewrite: dict[str, Any] | None = None
    if target is not None:
        groups = int(re2.compile(pattern).groups)
        regex_rewrite = {"uriRegexRewrite": {"match": "^" + pattern,
                                             "rewrite": _groups(target, groups, where, warnings)}}
    return _Route([{"uri": {"regex": pattern}}], dest, regex_rewrite, order)


def _groups(target: str, groups: int, where: str, warnings: list[str]) -> str:
    """nginx ``$N`` capture references -> RE2/Envoy ``\\N``; a group the path lacks is empty (nginx copies
    nothing for it), a literal backslash is escaped for RE2."""
    missing: list[str] = []

    def ref(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n > groups:
            missing.append(m.group(0))
            return ""
        return "\\" + m.group(1)

    out = re.sub(r"\$(\d)", ref, target.replace("\\", "\\\\"))
    if missing:
        have = f"{groups or 'no'} capture group{'s' if groups != 1 else ''}"
        warnings.append(f"{where}: rewrite-target {target!r} refers to {', '.join(missing)} but the path has "
                        f"{have}; like nginx, the missing groups are empty")
    return out


# -- output ----------------------------------------------------------------------------------------------


def _dns_label(s: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", s.lower().replace("*", "wildcard")).strip("-")
    return out[:63].strip("-") or "x"


def _meta(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _gateways(
    ingresses: list[_Ingress], warnings: list[str]
) -> tuple[list[dict[str, Any]], dict[tuple[str | None, str], str]]:
    classes: dict[str | None, list[str]] = {}
    for ing in ingresses:
        seen = classes.setdefault(ing.namespace, [])
        if ing.klass not in seen:
            seen.append(ing.klass)
    names: dict[tuple[str | None, str], str] = {}
    docs: list[dict[str, Any]] = []
    for ns, klasses in classes.items():
        for klass in klasses:
            if len(klasses) == 1:
                base = ns or klass or "ingress"
            else:
                base = "-".join(p for p in (ns, klass or "default") if p)
            name = _dns_label(base + "-gateway")
            names[(ns, klass)] = name
            members = [i for i in ingresses if i.namespace == ns and i.klass == klass]
            docs.append(_gateway(name, ns, members, warnings))
    return docs, names


def _gateway(name: str, ns: str | None, members: list[_Ingress], warnings: list[str]) -> dict[str, Any]:
    hosts: list[str] = []
    for ing in members:
        for h in [*ing.hosts, *(["*"] if ing.default else [])]:
            if h not in hosts:
                hosts.append(h)
    servers: list[dict[str, Any]] = [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts or ["*"]}
    ]
    for ing in members:
        for k, tls in enumerate((ing.doc.get("spec") or {}).get("tls") or []):
            tls_hosts = [str(h) for h in (tls or {}).get("hosts") or []] or ["*"]
            secret = (tls or {}).get("secretName")
            if not secret:   # as Istio's conversion: never an HTTPS server without a certificate
                warnings.append(f"{ing.label}: spec.tls[{k}] has no secretName: no HTTPS server for "
                                f"{', '.join(tls_hosts)} (the hosts are served on port 80 only)")
                continue
            servers.append({
                "port": {"number": 443, "name": f"https-{len(servers)}", "protocol": "HTTPS"},
                "hosts": tls_hosts,
                "tls": {"mode": "SIMPLE", "credentialName": str(secret)},
            })
            warnings.append(
                f"{ing.label}: spec.tls[{k}] uses secret {secret!r}; it must be readable by the gateway "
                f"(credentialName)"
            )
    return {
        "apiVersion": NET_API, "kind": "Gateway", "metadata": _meta(name, ns),
        "spec": {"selector": dict(GATEWAY_SELECTOR), "servers": servers},
    }


def _virtual_services(ing: _Ingress, gateway: str) -> list[tuple[bool, dict[str, Any]]]:
    out: list[tuple[bool, dict[str, Any]]] = []
    single = len(ing.hosts) + (1 if ing.default and "*" not in ing.hosts else 0) == 1
    for host, routes in ing.hosts.items():
        ordered = sorted(routes, key=lambda r: r.order)
        if ing.default is not None and not any(_catch_all(r) for r in ordered):
            ordered.append(_Route([], dict(ing.default)))
        if not ordered:
            continue
        name = ing.name if single else _dns_label(f"{ing.name}-{host}")
        out.append((any(_catch_all(r) for r in ordered), _vs(name, ing.namespace, host, gateway, ordered)))
    if ing.default is not None and "*" not in ing.hosts:
        name = ing.name if single else _dns_label(f"{ing.name}-default-backend")
        out.append((True, _vs(name, ing.namespace, "*", gateway, [_Route([], dict(ing.default))])))
    return out


def _catch_all(r: _Route) -> bool:
    return not r.matches or any(m.get("uri") == {"prefix": "/"} for m in r.matches)


def _vs(name: str, ns: str | None, host: str, gateway: str, routes: list[_Route]) -> dict[str, Any]:
    return {
        "apiVersion": NET_API, "kind": "VirtualService", "metadata": _meta(name, ns),
        "spec": {"hosts": [host], "gateways": [gateway], "http": [r.to_dict() for r in routes]},
    }
