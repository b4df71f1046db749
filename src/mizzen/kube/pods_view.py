"""``GET /apis/pods`` of a control plane reading a cluster (``mizzen controlplane --kubeconfig``): the Pods
the Kubernetes registry watches, in the shape the ``mizzen`` CLI reads from the demo's runner (kubectl's
READY, STATUS, RESTARTS and AGE, the IP, and the ``v1 Pod`` itself as ``object``), so ``mizzen get pods`` and
``mizzen describe pod`` work against the cluster. Container logs live on the nodes: ``/apis/pods/.../logs``
reads an app container's through the API server's ``pods/log`` (``app_logs``, :class:`ApiServerLogs`: what
``kubectl logs`` reads, from the node's kubelet API), and the ``istio-proxy`` container's (Envoy's log) over
the pod agent's debug channel (``proxy_logs``); ``admin`` names the pod's admin path through that channel
while it is reachable (``admin_path``). Without ``app_logs`` the answer is a one-line pointer to
``kubectl logs``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

__all__ = ["ApiServerLogs", "KubePodsApi", "pod_item", "status_text"]

ProxyLogs = Callable[[str, str, int | None, int | None], Awaitable[web.Response]]   # ns, pod, tail, offset
AppLogs = Callable[[str, str, str | None, int | None, int | None], Awaitable[web.Response]]  # + container
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

LOGS = ("container logs are kept on the cluster's nodes; this control plane does not proxy them: use "
        "kubectl logs -n {ns} {name}")


def _time(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def status_text(pod: Mapping[str, Any]) -> str:
    """kubectl's STATUS column (the common cases): Terminating, Init:<reason>/Init:n/m, a waiting or
    terminated container's reason, else the phase."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    inits = status.get("initContainerStatuses") or []
    for i, cs in enumerate(inits):
        state = cs.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            continue
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if reason and reason != "PodInitializing":
            return f"Init:{reason}"
        return f"Init:{i}/{len(inits)}"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if reason:
            return str(reason)
    return str(status.get("reason") or status.get("phase") or "Unknown")


def pod_item(pod: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """One ``/apis/pods`` item for a v1 Pod from the API server."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    created = _time(meta.get("creationTimestamp")) or 0.0
    obj = {k: v for k, v in pod.items() if k != "metadata"}
    obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "Pod")
    return {
        "name": str(meta.get("name") or ""),
        "namespace": str(meta.get("namespace") or ""),
        "ready": f"{ready}/{len(spec.get('containers') or [])}",
        "is_ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or []),
        "registered": False,
        "phase": str(status.get("phase") or ""),
        "status": status_text(pod),
        "restarts": sum(int(cs.get("restartCount") or 0) for cs in statuses),
        "pod_ip": str(status.get("podIP") or ""),
        "app_host": "",
        "age_s": round(max(0.0, (now or time.time()) - created), 3) if created else 0.0,
        "start_time": created,
        "labels": dict(meta.get("labels") or {}),
        "service_account": str(spec.get("serviceAccountName") or "default"),
        "node": str(spec.get("nodeName") or ""),
        "container_names": [str(c.get("name")) for c in spec.get("containers") or []],
        "object": obj,
        "events": [],
        "admin": None,
    }


class KubePodsApi:
    """The pod routes, over ``pods()`` (the registry's current Pods)."""

    def __init__(self, pods: Callable[[], Iterable[Mapping[str, Any]]], *,
                 admin_path: Callable[[str, str], str | None] | None = None,
                 proxy_logs: ProxyLogs | None = None, app_logs: AppLogs | None = None) -> None:
        self.pods = pods
        self.admin_path = admin_path
        self.proxy_logs = proxy_logs
        self.app_logs = app_logs

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/apis/pods", self.list_pods),
                web.get("/apis/pods/{namespace}/{name}/logs", self.logs)]

    async def list_pods(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace") or None
        now = time.time()
        items = [pod_item(p, now) for p in self.pods()
                 if namespace is None or (p.get("metadata") or {}).get("namespace") == namespace]
        if self.admin_path is not None:
            for item in items:
                item["admin"] = self.admin_path(item["namespace"], item["name"])
        items.sort(key=lambda i: (i["namespace"], i["name"]))
        return web.Response(text=json.dumps({"items": items}), content_type="application/json")

    async def logs(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        container = request.query.get("container") or None
        try:
            tail = int(request.query["tail"]) if "tail" in request.query else None
            offsets = [int(o) for o in request.query.get("offsets", "").split(",") if o]
        except ValueError:
            return web.json_response({"error": "tail and offsets are integers"}, status=400)
        if container == "istio-proxy" and self.proxy_logs is not None:
            return await self.proxy_logs(ns, name, tail, offsets[0] if offsets else None)
        if self.app_logs is not None:
            return await self.app_logs(ns, name, container, tail, offsets[0] if offsets else None)
        return web.Response(status=501, content_type="application/json",
                            text=json.dumps({"error": LOGS.format(ns=ns, name=name)}))


def lines_after(data: bytes, tail: int | None, offset: int | None) -> dict[str, Any]:
    """``{"lines", "offsets"}`` of a whole log as the debug channel's :func:`read_log` gives Envoy's: the
    last ``tail`` lines (all), or the whole lines after byte ``offset`` (from the start if the log is
    shorter: a restarted or rotated log)."""
    start = offset if offset is not None and 0 <= offset <= len(data) else 0
    chunk = data[start:]
    cut = chunk.rfind(b"\n") + 1          # a partial last line waits for the next read
    chunk = chunk[:cut]
    lines = chunk.decode("utf-8", "replace").splitlines()
    if tail is not None and offset is None:
        lines = lines[-tail:] if tail > 0 else []
    return {"lines": lines, "offsets": [start + len(chunk)]}


class ApiServerLogs:
    """An app container's log through the API server's ``pods/log`` (the node's kubelet API behind it), with
    the control plane's API client; the default container is kubectl's (the
    ``kubectl.kubernetes.io/default-container`` annotation Istio's injector sets, else the first one that is
    not ``istio-proxy``). An API error is the answer's one line, with its status. Each read (``logs -f``
    polls) fetches the whole log: fine for the logs a node agent keeps, not meant for huge ones."""

    def __init__(self, api: Callable[[], Any], pods: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.api = api          # the control plane's API client, once connected (None before)
        self.pods = pods

    def _default_container(self, namespace: str, name: str) -> str | None:
        for p in self.pods():
            meta = p.get("metadata") or {}
            if meta.get("namespace") == namespace and meta.get("name") == name:
                named = (meta.get("annotations") or {}).get(DEFAULT_CONTAINER)
                if named:
                    return str(named)
                apps = [str(c.get("name")) for c in (p.get("spec") or {}).get("containers") or []
                        if c.get("name") != "istio-proxy"]
                return apps[0] if apps else None
        return None

    async def __call__(self, namespace: str, name: str, container: str | None, tail: int | None,
                       offset: int | None) -> web.Response:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        api = self.api()
        if api is None:
            return web.json_response({"error": "not connected to the API server yet"}, status=503)
        container = container or self._default_container(namespace, name)
        kwargs: dict[str, Any] = {"container": container} if container else {}
        try:
            text = await client.CoreV1Api(api).read_namespaced_pod_log(name, namespace, **kwargs)
        except ApiException as e:
            return web.json_response({"error": _api_message(e)}, status=e.status or 502)
        except OSError as e:
            return web.json_response({"error": f"the API server cannot be reached: {e.strerror or e}"},
                                     status=502)
        return web.json_response(lines_after(str(text).encode(), tail, offset))


def _api_message(e: Any) -> str:
    """The Status message of an API error (what kubectl prints), else its reason."""
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason or e)
