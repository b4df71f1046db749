"""The control plane's HTTP API (apply/delete/get objects, register workloads) and debug endpoints, as JSON.

Every bad request is answered 400 with a one-line ``{"error": ...}``; validation failures are 422 with every
issue (``file:line: Kind/name: path: reason``); nothing is ever half-applied. A request body is at most 3 MiB
and one request at most 1,000 objects (413 beyond, see :mod:`.parse_worker`); a body not received within
``ControlPlaneOptions.body_timeout_s`` (10 s) is answered 408 and its connection closed. Debug endpoints
follow istiod's names: ``/debug/syncz``, ``/debug/config_dump``, ``/debug/registryz``, ``/debug/configz``,
``/debug/push_status``, and ``/debug/analyze`` (``istioctl analyze``'s cross-object messages over the stored
config and registry; POST adds candidate documents as a what-if); ``/debug/proxy_warnings`` is Mizzen's:
what generation skipped for a proxy. Apply responses carry the analyzer messages about the applied objects
as warnings, never blocking the apply. ``/debug/simulate`` answers which route,
subset and endpoints one request would hit in a proxy's config, and why. ``PUT /apis/workloads`` replaces the
whole set of registered workloads (a runner's reconcile); ``GET /apis/events?epoch=&since=&timeout=`` is the
long-polled config-change feed (:mod:`.events`).

Every endpoint but readiness (``/ready``), ``/version`` and ``/metrics`` needs the API token, and writes are
checked for Host, Origin and Content-Type (see :mod:`mizzen.auth.guard`). ``POST /apis/workloads`` (and each
item of ``PUT /apis/workloads``) takes only a valid IP address and ports 1-65535, and only addresses the
embedder's ``workload_address_check`` accepts (``mizzen demo``: those its runner allocated).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
import json
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from google.protobuf import json_format

import mizzen
from mizzen.agent.admin_proxy import redact_secrets
from mizzen.analysis import AnalysisIssue, analyze, merge, read_documents
from mizzen.auth.guard import Guard
from mizzen.config import credentials, kinds
from mizzen.config.errors import ConfigError, Issue, Severity
from mizzen.config.loader import TooManyObjects, namespace_error
from mizzen.config.model import Config
from mizzen.config.validation.common import is_k8s_dns_subdomain
from mizzen.controlplane.parse_worker import MAX_BODY, MAX_OBJECTS, ParsePool, ParserCrashed
from mizzen.controlplane.push import iso
from mizzen.core.listeners import generation_warnings
from mizzen.registry.model import Workload
from mizzen.registry.registry import build_snapshot
from mizzen.security import inbound_mtls
from mizzen.simulate import DIRECTIONS, InvalidRequest, SimRequest, resources_from_any
from mizzen.simulate import simulate as simulate_request
from mizzen.xds.resources import LISTENER, SECRET, SHORT

if TYPE_CHECKING:
    from mizzen.controlplane.server import ControlPlane

log = logging.getLogger(__name__)

__all__ = [
    "NO_PODS",
    "Api",
    "BadRequest",
    "LoadResultLike",
    "Loader",
    "default_loader",
    "manifest",
    "resource_to_dict",
    "workload_from_json",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# an embedder's say on a workload address: None to accept, else why it is refused
AddressCheck = Callable[[str], str | Awaitable[str | None] | None]
BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)
# the analyzer runs over the whole store on the event loop: a larger apply gets a note instead of its warnings
ANALYZE_MAX_OBJECTS = 100
# kinds the registry is built from (a what-if analysis with other kinds reuses the live registry snapshot)
REGISTRY_KINDS = frozenset({"Service", "ServiceEntry", "WorkloadEntry"})
# what a control plane that runs no workloads answers on the pod endpoints (an embedder such as ``mizzen
# demo`` serves them through Api.add_routes)
NO_PODS = ("this control plane runs no pods: pods and their logs are served by \"mizzen demo\", which "
           "runs the workloads (a plain \"mizzen controlplane\" only has config and registered workloads)")


class BadRequest(Exception):
    """A client error, answered 400 (or ``status``) with the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LoadResultLike(Protocol):
    @property
    def configs(self) -> Sequence[Config]: ...
    @property
    def errors(self) -> Sequence[Issue]: ...
    @property
    def warnings(self) -> Sequence[Issue]: ...


Loader = Callable[[str, str, str | None], LoadResultLike]


def default_loader() -> Loader:
    from mizzen.config.loader import load_text  # deferred: YAML loading is only needed for applies

    fn: Loader = load_text
    return fn


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        resp = _json({"error": str(e).replace("\n", " ")}, e.status)
        if e.status in (408, 413):
            resp.force_close()   # the rest of the body is not read
        return resp
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json({"error": e.reason}, e.status)
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"error": f"internal error: {type(e).__name__}: {e}".replace("\n", " ")}, 500)


def check_namespace(namespace: str, where: str) -> str:
    """``namespace`` if it is a valid namespace name, else BadRequest naming ``where`` it came from."""
    bad = namespace_error(namespace)
    if bad is not None:
        raise BadRequest(f"{where}: {bad}")
    return namespace


async def _read_body(request: web.Request, timeout: float) -> bytes:
    """The body, within the size limit and ``timeout`` seconds (413 / 408 otherwise)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"request body too large: {request.content_length} bytes (at most {MAX_BODY} bytes, "
                         "3 MiB; split the files into several applies)", 413)
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"request body too large (at most {MAX_BODY} bytes, 3 MiB; split the files into "
                         "several applies)", 413) from None
    except TimeoutError:
        raise BadRequest(f"request body not received within {timeout:g}s", 408) from None


async def _body(request: web.Request) -> dict[str, Any]:
    timeout = request.app.get(BODY_TIMEOUT_KEY, 10.0)
    raw = await _read_body(request, timeout)
    try:
        data = json.loads(raw)
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise BadRequest(f"request body is not valid JSON: {e}".split("; use sys.")[0]) from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def manifest(config: Config) -> dict[str, Any]:
    """The object as the API shows it: a kind without ``spec`` (Secret) has its fields at the top level, and
    a Secret's values are never shown, only their sizes."""
    m = config.to_manifest()
    m["metadata"]["creationTimestamp"] = iso(config.created) if config.created else None
    k = kinds.BY_NAME.get(config.kind)
    if k is not None and k.body:
        m.update(m.pop("spec") or {})
    if config.kind == "Secret":
        m = credentials.redacted_manifest(m)
    return m


def _port_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def workload_from_json(data: dict[str, Any]) -> Workload:
    """A :class:`Workload` from JSON, checking types, the address (an IP) and ports (raises BadRequest)."""
    known = {f.name for f in dataclasses.fields(Workload)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"unknown workload field(s): {', '.join(unknown)}")
    for req in ("name", "namespace", "address"):
        if not isinstance(data.get(req), str) or not data[req]:
            raise BadRequest(f"workload field {req!r} is required (a non-empty string)")
    try:
        ipaddress.ip_address(data["address"])
    except ValueError:
        raise BadRequest(f"workload field 'address': {data['address']!r} is not an IP address") from None
    for f in ("service_account", "locality", "network"):
        if f in data and not isinstance(data[f], str):
            raise BadRequest(f"workload field {f!r} must be a string")
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("workload field 'labels' must be an object of strings")
    ports = data.get("ports") or {}
    if not isinstance(ports, dict):
        raise BadRequest("workload field 'ports' must map names to port numbers")
    for pname, number in ports.items():
        if not _port_number(number):
            raise BadRequest(f"workload field 'ports.{pname}': {json.dumps(number)} is not a port number "
                             "(1-65535)")
    weight = data.get("weight", 0)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise BadRequest("workload field 'weight' must be a non-negative integer")
    healthy = data.get("healthy", True)
    if not isinstance(healthy, bool):
        raise BadRequest("workload field 'healthy' must be a boolean")
    return Workload(**{**data, "labels": dict(labels), "ports": dict(ports)})


def check_workload_names(namespace: str, name: str) -> None:
    """A workload's namespace is a namespace name and its name a Kubernetes object name (BadRequest)."""
    check_namespace(namespace, "workload namespace")
    if not is_k8s_dns_subdomain(name):
        raise BadRequest(f"workload name {name!r} is not a valid Kubernetes name: a lowercase RFC 1123 "
                         "subdomain of at most 253 characters (letters, digits, '-' and '.')")


def resource_to_dict(any_msg: Any) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json_format.MessageToDict(any_msg)
        return out
    except (TypeError, KeyError, json_format.Error) as e:
        return {"@type": any_msg.type_url, "error": f"cannot decode: {e}"}


class Api:
    """Builds the aiohttp application over a :class:`ControlPlane`."""

    def __init__(self, cp: ControlPlane, loader: Loader | None = None, guard: Guard | None = None) -> None:
        self.cp = cp
        self._loader = loader
        self._custom_loader = loader is not None   # else the default one, run in the parse worker
        self._extra: list[web.AbstractRouteDef] = []
        self._mtls_by_version: dict[str, str] = {}
        self.guard = guard
        self.workload_address_check: AddressCheck | None = None
        self.parser = ParsePool()

    def close(self) -> None:
        """Stop the parse worker process."""
        self.parser.close()

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Serve extra routes next to the built-in ones (the demo's ``/apis/pods``); call before start."""
        self._extra.extend(routes)

    @property
    def loader(self) -> Loader:
        if self._loader is None:
            self._loader = default_loader()
        return self._loader

    def app(self) -> web.Application:
        middlewares = [self.guard.middleware] if self.guard is not None else []
        app = web.Application(middlewares=[*middlewares, _errors], client_max_size=MAX_BODY)
        app[BODY_TIMEOUT_KEY] = self.cp.options.body_timeout_s
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/ready", self.ready)
        r.add_get("/metrics", self.metrics)
        r.add_post("/apis/apply", self.apply)
        r.add_post("/apis/delete", self.delete)
        r.add_get("/apis/objects", self.objects)
        r.add_post("/apis/workloads", self.add_workload)
        r.add_put("/apis/workloads", self.sync_workloads)
        r.add_get("/apis/events", self.events)
        r.add_get("/apis/workloads", self.list_workloads)
        r.add_delete("/apis/workloads/{namespace}/{name}", self.remove_workload)
        r.add_post("/apis/credentials", self.issue_credential)
        r.add_delete("/apis/credentials/{namespace}/{pod}", self.revoke_credential)
        r.add_get("/debug/syncz", self.syncz)
        r.add_get("/debug/config_dump", self.config_dump)
        r.add_get("/debug/registryz", self.registryz)
        r.add_get("/debug/configz", self.configz)
        r.add_get("/debug/push_status", self.push_status)
        r.add_get("/debug/proxy_warnings", self.proxy_warnings)
        r.add_get("/debug/analyze", self.analyze)
        r.add_post("/debug/analyze", self.analyze)
        r.add_get("/debug/simulate", self.simulate)
        r.add_post("/debug/simulate", self.simulate)
        app.add_routes(self._extra)
        if not any(getattr(d, "path", "").startswith("/apis/pods") for d in self._extra):
            r.add_get("/apis/pods", self.no_pods)
            r.add_get("/apis/pods/{tail:.*}", self.no_pods)
        return app

    # --- basics ---------------------------------------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        return _json({"version": mizzen.__version__})

    async def metrics(self, request: web.Request) -> web.Response:
        """istiod's metrics in Prometheus text format (unauthenticated, like istiod's :15014/metrics)."""
        body = self.cp.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def ready(self, request: web.Request) -> web.Response:
        """200 once the control plane serves xDS (started, and its workloads reconciled when it waits)."""
        synced = self.cp.workloads_synced.is_set()
        if not self.cp.started or not synced:
            return _json({"ready": False, "workloads_synced": synced}, 503)
        return _json({"ready": True, "workloads_synced": True})

    async def no_pods(self, request: web.Request) -> web.Response:
        return _json({"error": NO_PODS}, 404)

    # --- objects --------------------------------------------------------------------------------------------
    @staticmethod
    def _documents(data: dict[str, Any]) -> list[tuple[str, str]]:
        """The ``documents`` of a request body as (file, text) pairs; ``namespace`` checked too."""
        docs = data.get("documents")
        if not isinstance(docs, list) or not docs:
            raise BadRequest("'documents' must be a non-empty list of {file, text}")
        namespace = data.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise BadRequest("'namespace' must be a non-empty string or null")
        if namespace is not None:
            check_namespace(namespace, "'namespace'")
        out: list[tuple[str, str]] = []
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise BadRequest(f"documents[{i}] must be an object with a string 'text'")
            file = doc.get("file") or f"documents[{i}]"
            if not isinstance(file, str):
                raise BadRequest(f"documents[{i}].file must be a string")
            if "\n" in file or len(file) > 1024:
                raise BadRequest(f"documents[{i}].file must be one line of at most 1024 characters")
            out.append((file, doc["text"]))
        return out

    async def _load(self, data: dict[str, Any]) -> tuple[list[Config], list[Issue], list[Issue]]:
        namespace = data.get("namespace")
        texts = [(text, file) for file, text in self._documents(data)]
        if self._custom_loader:   # an embedder's own loader: called in place, per document
            configs: list[Config] = []
            errors: list[Issue] = []
            warnings: list[Issue] = []
            for text, file in texts:
                result = self.loader(text, file, namespace)
                configs.extend(result.configs)
                errors.extend(result.errors)
                warnings.extend(result.warnings)
            if len(configs) > MAX_OBJECTS:
                raise BadRequest(str(TooManyObjects(len(configs), MAX_OBJECTS)), 413)
            return configs, errors, warnings
        try:
            loaded = await self.parser.load(texts, namespace, MAX_OBJECTS)
        except TooManyObjects as e:
            raise BadRequest(str(e), 413) from None
        except ParserCrashed as e:
            raise BadRequest(str(e)) from None
        return loaded.configs, loaded.errors, loaded.warnings

    @staticmethod
    def _dry_run(data: dict[str, Any]) -> bool:
        dry = data.get("dry_run", False)
        if not isinstance(dry, bool):
            raise BadRequest("'dry_run' must be a boolean")
        return dry

    def _owned_by_cluster(self, dry_run: bool) -> web.Response | None:
        """409 for a write while the config comes from a Kubernetes API server (dry runs still validate)."""
        if dry_run or self.cp.kube_source is None:
            return None
        return _json({"errors": [{"message": "this control plane reads its config from the Kubernetes API "
                                             "server: change it there (kubectl apply/delete); --dry-run "
                                             "still validates here"}]}, 409)

    async def apply(self, request: web.Request) -> web.Response:
        data = await _body(request)
        dry_run = self._dry_run(data)
        if (refused := self._owned_by_cluster(dry_run)) is not None:
            return refused
        configs, errors, warnings = await self._load(data)
        if errors:
            self._count_validation([], errors)
            return _json({"errors": [i.to_dict() for i in errors]}, 422)
        # the default loader validated every object with the store's validator: not again on the loop
        prevalidated = None if self._custom_loader else list(warnings)
        try:
            results = await self.cp.store.apply_async(configs, dry_run=dry_run, issues=prevalidated)
        except ConfigError as e:
            self._count_validation([], e.issues)
            return _json({"errors": [i.to_dict() for i in e.issues]}, 422)
        self._count_validation(configs, [])
        store_warnings = list(self.cp.store.last_warnings)   # this apply's (read before any await)
        if not dry_run and len(configs) <= ANALYZE_MAX_OBJECTS:
            # the push this apply started (at once: the debounce's leading edge) goes before the analysis
            # for the answer, which would hold the loop in the middle of it (0.3-0.6 ms of CPU for
            # bench_push.py's mesh, growing with the store)
            await self.cp.pusher.make_way()
        seen = {str(w) for w in warnings}
        for w in [*store_warnings, *self._analysis_warnings(configs)]:
            if str(w) not in seen:
                seen.add(str(w))
                warnings.append(w)
        return _json({"results": [r.to_dict() for r in results], "warnings": [w.to_dict() for w in warnings],
                      "dry_run": dry_run})

    def _count_validation(self, passed: Sequence[Config], failed: Sequence[Issue]) -> None:
        """istiod's validation webhook metrics: one ``galley_validation_passed`` per admitted object, one
        ``galley_validation_failed`` per refused object (reason ``invalid_resource``, as istiod labels it)."""
        m = self.cp.metrics
        for (kind, api_version), n in Counter((c.kind, c.api_version) for c in passed).items():
            group, version, resource = _gvr(kind, api_version)
            m.validation_passed.labels(group=group, version=version, resource=resource).inc(n)
        seen: set[tuple[str, str]] = set()
        for i in failed:
            if (i.kind, i.name) in seen:
                continue
            seen.add((i.kind, i.name))
            group, version, resource = _gvr(i.kind, "")
            m.validation_failed.labels(group=group, version=version, resource=resource,
                                       reason="invalid_resource").inc()

    async def delete(self, request: web.Request) -> web.Response:
        data = await _body(request)
        dry_run = self._dry_run(data)
        if (refused := self._owned_by_cluster(dry_run)) is not None:
            return refused
        configs, errors, _ = await self._load(data)
        if errors:
            return _json({"errors": [i.to_dict() for i in errors]}, 422)
        results = await self.cp.store.delete_async([c.key for c in configs], dry_run=dry_run)
        return _json({"results": [r.to_dict() for r in results], "dry_run": dry_run})

    async def objects(self, request: web.Request) -> web.Response:
        q = request.query
        kind_name: str | None = None
        if q.get("kind"):
            k = kinds.lookup(q["kind"])
            if k is not None:
                kind_name = k.kind
            elif q["kind"] in kinds.PASSIVE_KINDS:
                kind_name = q["kind"]
            else:
                raise BadRequest(f"unknown kind {q['kind']!r}")
        if q.get("namespace"):
            check_namespace(q["namespace"], "query parameter 'namespace'")
        items = self.cp.store.list(kind_name, q.get("namespace") or None, q.get("name") or None)
        return _json({"items": [manifest(c) for c in items]})

    # --- workloads ------------------------------------------------------------------------------------------
    async def add_workload(self, request: web.Request) -> web.Response:
        try:
            w = workload_from_json(await _body(request))
        except TypeError as e:
            raise BadRequest(f"bad workload: {e}") from None
        check_workload_names(w.namespace, w.name)
        refused = await self._address_refused(w.address)
        if refused:
            return _json({"error": f"workload {w.namespace}/{w.name}: {refused}"}, 403)
        self.cp.register_workload(w)
        return _json({"workload": dataclasses.asdict(w), "action": "registered"})

    async def issue_credential(self, request: web.Request) -> web.Response:
        """``{"namespace", "pod", "serviceAccount"}`` -> a new pod credential for the pod's agent, with the
        mesh roots (the runner's job, as the kubelet mounts a pod's service-account token). The credential
        is in this response only: the control plane keeps its digest."""
        identity = self.cp.identity
        if identity is None:
            return _json({"error": "this control plane runs no CA (start it with --xds-tls-port)"}, 404)
        body = await _body(request)
        ns, pod, sa = (body.get(k) for k in ("namespace", "pod", "serviceAccount"))
        if not all(isinstance(v, str) and v for v in (ns, pod, sa)):
            raise BadRequest("want {\"namespace\", \"pod\", \"serviceAccount\"} (non-empty strings)")
        assert isinstance(ns, str) and isinstance(pod, str) and isinstance(sa, str)
        check_workload_names(ns, pod)
        try:
            issued = identity.issue(ns, pod, sa)
        except ValueError as e:
            raise BadRequest(f"credential for {ns}/{pod}: {e}") from None
        log.info("issued a pod credential for %s/%s (service account %s)", ns, pod, sa)
        return _json(issued.as_dict())

    async def revoke_credential(self, request: web.Request) -> web.Response:
        identity = self.cp.identity
        if identity is None:
            return _json({"error": "this control plane runs no CA (start it with --xds-tls-port)"}, 404)
        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        revoked = identity.revoke(ns, pod)
        return _json({"revoked": revoked}, 200 if revoked else 404)

    async def _address_refused(self, address: str) -> str | None:
        """The embedder's ``workload_address_check`` on ``address`` (sync or async): None to accept."""
        if self.workload_address_check is None:
            return None
        refused = self.workload_address_check(address)
        if inspect.isawaitable(refused):
            refused = await refused
        return refused

    async def sync_workloads(self, request: web.Request) -> web.Response:
        """``{"items": [workload, ...]}``: the complete set; everything else registered is removed."""
        items = (await _body(request)).get("items")
        if not isinstance(items, list):
            raise BadRequest("'items' must be a list of workloads")
        workloads: list[Workload] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"items[{i}] must be a workload object")
            try:
                w = workload_from_json(item)
                check_workload_names(w.namespace, w.name)
                workloads.append(w)
            except BadRequest as e:
                raise BadRequest(f"items[{i}]: {e}") from None
            except TypeError as e:
                raise BadRequest(f"items[{i}]: bad workload: {e}") from None
        for w in workloads:                 # all or nothing: one refused address refuses the whole set
            refused = await self._address_refused(w.address)
            if refused:
                return _json({"error": f"workload {w.namespace}/{w.name}: {refused}"}, 403)
        registered, removed = self.cp.sync_workloads(workloads)
        return _json({"workloads": len(workloads), "registered": registered, "removed": removed})

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = int(q.get("since") or 0)
            timeout = float(q.get("timeout") or 0)
            if not math.isfinite(timeout):
                raise ValueError(timeout)
            timeout = min(max(timeout, 0.0), 60.0)
        except ValueError:
            raise BadRequest("'since' must be an integer and 'timeout' a number of seconds") from None
        answer = await self.cp.events.since(q.get("epoch") or None, since, timeout)
        return _json(answer.to_dict())

    async def remove_workload(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        check_workload_names(ns, name)
        if not self.cp.remove_workload(ns, name):
            return _json({"error": f"workload {ns}/{name} not found"}, 404)
        return _json({"namespace": ns, "name": name, "action": "removed"})

    async def list_workloads(self, request: web.Request) -> web.Response:
        return _json({"items": [dataclasses.asdict(w) for w in self.cp.registry.workloads()]})

    # --- debug ----------------------------------------------------------------------------------------------
    async def syncz(self, request: web.Request) -> web.Response:
        """This replica's proxies (a list); ``?replicas=all``: ``{"proxies": [...], "unanswered": [...]}``
        with the other replicas' proxies too (each entry's ``istiod`` names its replica) and the peers that
        did not answer."""
        entries = self.syncz_entries()
        if request.query.get("replicas") != "all":
            return _json(entries)
        hub = self.cp.proxy_debug
        silent: list[str] = []
        if hub is not None:
            local = {str(e.get("proxy")) for e in entries}
            others, silent = await hub.peer_syncz()
            entries += sorted((e for e in others if str(e.get("proxy")) not in local),
                              key=lambda e: str(e.get("proxy")))
        return _json({"proxies": entries, "unanswered": silent})

    def syncz_entries(self) -> list[dict[str, Any]]:
        """The ``/debug/syncz`` entries of this replica (with its name as ``istiod`` on a cluster)."""
        entries = self.cp.status.to_dict()
        hub = self.cp.proxy_debug
        instance = hub.instance if hub is not None else ""
        for e in entries:
            e["mtls"] = self._inbound_mtls(str(e.get("proxy", "")))
            if instance:
                e["istiod"] = instance
        return entries

    def _inbound_mtls(self, node: str) -> str:
        """The MTLS column: what the proxy's inbound listeners, as sent, accept (cached per LDS version)."""
        snap = self.cp.cache.get(node)
        if snap is None:
            return inbound_mtls.NONE
        version = snap.version(LISTENER)
        mode = self._mtls_by_version.get(version)
        if mode is None:
            ts = snap.of(LISTENER)
            mode = inbound_mtls.inbound_mtls_mode(p.any for p in ts.resources.values())
            if len(self._mtls_by_version) > 4096:
                self._mtls_by_version.clear()
            self._mtls_by_version[version] = mode
        return mode

    def resolve_proxy(self, ident: str) -> str:
        """A node id from an exact id, a unique id prefix, a unique ``name.namespace``/ip part, the pod name,
        or a unique substring (like ``mizzen proxy-config``)."""
        nodes = sorted(set(self.cp.pusher.proxies) | set(self.cp.cache.node_ids()))
        if ident in nodes:
            return ident

        def pod(n: str) -> str:
            return n.split("~")[2].split(".")[0] if n.count("~") == 3 else n

        for match in (lambda n: n.startswith(ident), lambda n: ident in n.split("~")[1:3],
                      lambda n: pod(n) == ident, lambda n: ident in n):
            found = [n for n in nodes if match(n)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise BadRequest(f"proxyID {ident!r} is ambiguous: {', '.join(found[:5])}")
        raise web.HTTPNotFound(reason=f"no proxy {ident!r}")

    async def config_dump(self, request: web.Request) -> web.Response:
        ident = request.query.get("proxyID") or request.query.get("proxy")
        if not ident:
            raise BadRequest("query parameter 'proxyID' is required")
        node = self.resolve_proxy(ident)
        snap = self.cp.cache.get(node)
        out: dict[str, Any] = {"proxy": node, "CDS": [], "EDS": [], "LDS": [], "RDS": []}
        if snap is None:
            return _json(out)
        for type_url, ts in snap.types.items():
            short = SHORT.get(type_url, type_url)
            out[short] = [resource_to_dict(ts.resources[n].any) for n in sorted(ts.resources)]
            if type_url == SECRET:   # private keys never leave the control plane's memory
                out[short] = [redact_secrets(r) for r in out[short]]
            out.setdefault("versions", {})[short] = ts.version
        return _json(out)

    async def registryz(self, request: web.Request) -> web.Response:
        snap = self.cp.registry.snapshot()
        return _json({
            "version": snap.version,
            "services": [dataclasses.asdict(s) for s in snap.services],
            "endpoints": [
                {"hostname": h, "port": p, "endpoints": [dataclasses.asdict(e) for e in eps]}
                for (h, p), eps in snap.endpoints.items()
            ],
            "workloads": [dataclasses.asdict(w) for w in snap.workloads],
        })

    async def configz(self, request: web.Request) -> web.Response:
        snap = self.cp.store.snapshot()
        return _json({
            "version": snap.version,
            "items": [manifest(c) for c in snap],
            "load_problems": [p.to_dict() for p in self.cp.store.load_problems],
            "mesh_config_problem": self.cp.mesh_config_problem,
        })

    # --- analysis -------------------------------------------------------------------------------------------
    def _analyze(self, candidates: Sequence[Config], per_object: bool = True) -> list[AnalysisIssue]:
        """Analyzer messages over the stored config with ``candidates`` applied on top (a what-if). Gateways
        may select the registered workloads and the connected gateway proxies."""
        return self._analysis(candidates, per_object)()

    def _analysis(self, candidates: Sequence[Config], per_object: bool = True
                  ) -> Callable[[], list[AnalysisIssue]]:
        """:meth:`_analyze` in two steps: its inputs gathered now (the loop's live state), the analyzers run
        when the returned function is called (pure over those snapshots, so it may run in a thread)."""
        mesh = self.cp.pusher.mesh   # the mesh config in force (a cluster's ConfigMap may have changed it)
        store = self.cp.store
        snapshot = merge(store.snapshot(), candidates)

        def changes_registry(c: Config) -> bool:
            old = store.get(c.kind, c.namespace, c.name)
            return c.kind in REGISTRY_KINDS and (old is None or old.content_hash() != c.content_hash())

        if any(changes_registry(c) for c in candidates):   # a what-if: the registry it would make
            registry = build_snapshot(snapshot, self.cp.registry.workloads(), mesh.domain_suffix,
                                      self.cp.registry.service_endpoints())
        else:   # the live one (cached, shared with the push)
            registry = self.cp.registry.snapshot()
        gateway_workloads = list(registry.workloads)
        gateway_workloads += [Workload(name=p.workload_name or p.id, namespace=p.namespace, address=p.ip,
                                       labels=dict(p.labels))
                              for p in self.cp.pusher.proxies.values() if p.is_gateway]
        return lambda: list(analyze(snapshot, registry, mesh, gateway_workloads=gateway_workloads,
                                    per_object=per_object))

    async def analysis(self) -> list[AnalysisIssue]:
        """Every analyzer message about the stored config and the live registry (the status writer's): the
        analyzers run in a thread, so a large config does not hold up the event loop (xDS, the API)."""
        return await asyncio.to_thread(self._analysis(()))

    def _analysis_warnings(self, configs: Sequence[Config]) -> list[Issue]:
        """The analyzer messages about the objects being applied, as warnings (Info-level ones left to
        ``mizzen analyze``); never fails the apply."""
        if len(configs) > ANALYZE_MAX_OBJECTS:
            return [Issue(f"cross-object analysis skipped for an apply of {len(configs)} objects (more than "
                          f"{ANALYZE_MAX_OBJECTS}); run `mizzen analyze` for it", severity=Severity.WARNING)]
        keys = {(c.kind, c.namespace, c.name) for c in configs}
        try:
            messages = self._analyze(configs, per_object=False)
        except Exception:
            log.exception("analysis of an apply failed")
            return []
        return [dataclasses.replace(m, severity=Severity.WARNING) for m in messages
                if (m.kind, m.namespace, m.name) in keys and m.severity is not Severity.INFO]

    async def analyze(self, request: web.Request) -> web.Response:
        """GET: the stored config and registry; POST {documents, namespace}: with those objects applied on
        top. ``?namespace=NS`` keeps the messages about objects in NS."""
        inputs = read_documents([])
        if request.method == "POST":
            data = await _body(request)
            inputs = read_documents(self._documents(data), data.get("namespace"))
        ns = request.query.get("namespace")
        if ns:
            check_namespace(ns, "query parameter 'namespace'")
        messages = [*inputs.messages, *self._analyze(inputs.configs)]
        if ns:
            messages = [m for m in messages if m.namespace == ns]
        return _json({"messages": [m.to_dict() for m in messages], "skipped": inputs.skipped,
                      "parse_errors": [i.to_dict() for i in inputs.parse_errors]})

    async def push_status(self, request: web.Request) -> web.Response:
        nacks = []
        for entry in self.cp.status.to_dict():
            for short, ts in entry.get("types", {}).items():
                if ts.get("nack"):
                    nacks.append({"proxy": entry["proxy"], "type": short, **ts["nack"]})
        pusher = self.cp.pusher
        return _json({
            **pusher.stats.to_dict(),
            "proxies": sorted(pusher.proxies),
            "errors": [e.to_dict() for e in sorted(pusher.errors.values(), key=lambda e: e.node_id)],
            "nacks": nacks,
            "load_problems": [p.to_dict() for p in self.cp.store.load_problems],
            "mesh_config_problem": self.cp.mesh_config_problem,
        })

    async def proxy_warnings(self, request: web.Request) -> web.Response:
        """``?proxyID=``: the config the generators skipped for that connected proxy (unsupported or
        conflicting parts, gateway credentials its namespace cannot serve), which Envoy never sees and so
        never NACKs; without ``proxyID``, every connected proxy that has some."""
        ident = request.query.get("proxyID") or request.query.get("proxy")
        pusher = self.cp.pusher
        push = pusher.current()
        if ident:
            node = self.resolve_proxy(ident)
            proxy = pusher.proxies.get(node)
            if proxy is None:
                raise web.HTTPNotFound(reason=f"proxy {node!r} is not connected")
            return _json({"proxy": node, "warnings": generation_warnings(proxy, push)})
        out = []
        for i, (node, proxy) in enumerate(sorted(pusher.proxies.items())):
            if i and i % 20 == 0:
                await asyncio.sleep(0)       # a big mesh: let the loop breathe between proxies
            found = generation_warnings(proxy, push)
            if found:
                out.append({"proxy": node, "warnings": found})
        return _json({"proxies": out})

    async def simulate(self, request: web.Request) -> web.Response:
        """``?proxyID=&url=&method=&header=K:V (repeatable)&port=&direction=`` (or the same as a JSON body):
        the route simulator over the resources cached for that proxy (those of ``/debug/config_dump``)."""
        params: dict[str, Any] = dict(request.query)
        params["header"] = request.query.getall("header", [])
        if request.method == "POST" and request.can_read_body:
            params.update(await _body(request))
        ident, url = params.get("proxyID") or params.get("proxy"), params.get("url")
        if not ident or not isinstance(ident, str):
            raise BadRequest("query parameter 'proxyID' is required")
        if not url or not isinstance(url, str):
            raise BadRequest("query parameter 'url' is required")
        raw_headers = params.get("header") or []
        if isinstance(raw_headers, str):
            raw_headers = [raw_headers]
        headers: list[tuple[str, str]] = []
        for h in raw_headers:
            name, sep, value = str(h).partition(":")
            if not sep or not name.strip():
                raise BadRequest(f"header {h!r}: want 'Name: value'")
            headers.append((name.strip(), value.strip()))
        port = params.get("port")
        if port not in (None, ""):
            try:
                port = int(port)
            except (TypeError, ValueError):
                raise BadRequest(f"port {port!r} is not a number") from None
        else:
            port = None
        direction = str(params.get("direction") or "auto")
        if direction not in DIRECTIONS:
            raise BadRequest(f"direction must be one of {', '.join(DIRECTIONS)}")
        node = self.resolve_proxy(ident)
        snap = self.cp.cache.get(node)
        if snap is None:
            raise web.HTTPNotFound(reason=f"no configuration generated yet for proxy {node!r}")
        resources = resources_from_any(
            {t: {n: p.any for n, p in ts.resources.items()} for t, ts in snap.types.items()})
        req = SimRequest(url=url, method=str(params.get("method") or "GET"), headers=headers, port=port,
                         direction=direction)
        try:
            proxy = self.cp.pusher.proxies.get(node)
            ports = proxy.gateway_ports if proxy is not None else None
            return _json(simulate_request(resources, req, node, ports))
        except InvalidRequest as e:
            raise BadRequest(str(e)) from None


def _gvr(kind: str, api_version: str) -> tuple[str, str, str]:
    """(group, version, plural resource) of a kind, as the validation metrics label them; a kind we do not
    serve is resource ``unknown`` (its text is the request's: one time series per string sent would grow the
    control plane without bound, as a fuzz run showed; istiod's webhook only sees registered resources)."""
    k = kinds.lookup(kind)
    if k is None:
        return "", "", "unknown"
    return k.group, api_version.rsplit("/", 1)[-1] if api_version else k.versions[0], k.plural
