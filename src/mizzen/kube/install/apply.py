"""Putting rendered components on a cluster, checking them and taking them off (the I/O half of
``mizzen install``; :mod:`.manifests` renders).

* :func:`install`: server-side apply (field manager ``mizzen-install``, forced, as ``istioctl install``) of
  each component's objects in order; after the CRDs, waits until they are Established, and after each
  component with Deployments until they are ready; reports ``✔ Istio core installed`` and so on.
  A namespace or CRD that exists without the install's label is used, not adopted: uninstall leaves it.
* :func:`verify`: every object exists and every Deployment is ready; the problems, one line each.
* :func:`uninstall`: deletes every object labelled ``install.operator.istio.io/owning-resource`` (gateways,
  then istiod, then the core; the namespace last) and waits until they are gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from mizzen.kube.install.manifests import OWNER, OWNER_LABEL, Component

__all__ = ["KINDS", "ApplyError", "install", "uninstall", "verify"]

Obj = dict[str, Any]
FIELD_MANAGER = "mizzen-install"
# kinds whose objects may exist before an install (the user's namespace, CRDs from another install or
# kubectl): when they do without the install's label they are used as they are and never removed
UNADOPTED = frozenset({"Namespace", "CustomResourceDefinition"})


class ApplyError(Exception):
    """The cluster refused or did not reach the wanted state (one line)."""


@dataclass(frozen=True)
class Kind:
    group_version: str
    plural: str
    namespaced: bool

    def base(self, namespace: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{root}/namespaces/{namespace}/{self.plural}" if self.namespaced and namespace else \
            f"{root}/{self.plural}"


# every kind the manifests hold, in uninstall order (namespaced workloads first, the namespace last)
KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps/v1", "deployments", True),
    "Service": Kind("v1", "services", True),
    "MutatingWebhookConfiguration": Kind("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations",
                                         False),
    "ValidatingWebhookConfiguration": Kind("admissionregistration.k8s.io/v1",
                                           "validatingwebhookconfigurations", False),
    "ConfigMap": Kind("v1", "configmaps", True),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles", True),
    "ClusterRoleBinding": Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "ClusterRole": Kind("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ServiceAccount": Kind("v1", "serviceaccounts", True),
    "CustomResourceDefinition": Kind("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "Namespace": Kind("v1", "namespaces", False),
}


def _one_line(text: str) -> str:
    try:
        msg = json.loads(text).get("message")
    except (ValueError, AttributeError):
        msg = None
    return " ".join(str(msg or text).split())[:300]


class Rest:
    """JSON requests through a kubernetes_asyncio ApiClient (its auth and TLS)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def call(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                   query: list[tuple[str, str]] | None = None) -> Obj:
        resp = await self.api.call_api(
            path, method, query_params=query or [], body=body,
            header_params={"Content-Type": ctype, "Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
            _request_timeout=30)
        try:
            data = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise ApiException(status=resp.status,
                               reason=_one_line(data.decode(errors="replace")) or resp.reason)
        result: Obj = json.loads(data) if data else {}
        return result


def _kind(obj: Obj) -> Kind:
    kind = KINDS.get(obj["kind"])
    if kind is None:
        raise ApplyError(f"{obj['kind']}: not a kind the installer knows")
    return kind


def _path(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{_kind(obj).base(meta.get('namespace'))}/{meta['name']}"


def _ref(obj: Obj) -> str:
    meta = obj["metadata"]
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {ns}{meta['name']}"


async def _deployment_ready(rest: Rest, obj: Obj) -> str | None:
    """None when ready, else why not."""
    try:
        dep = await rest.call("GET", _path(obj))
    except ApiException as e:
        return f"{_ref(obj)}: {e.reason}" if e.status != 404 else f"{_ref(obj)}: not found"
    want = int((dep.get("spec") or {}).get("replicas", 1))
    st = dep.get("status") or {}
    ready, updated = int(st.get("readyReplicas") or 0), int(st.get("updatedReplicas") or 0)
    stale = st.get("observedGeneration", 0) < dep["metadata"].get("generation", 0)
    if stale or ready < want or updated < want:
        return f"{_ref(obj)}: {ready}/{want} replicas ready"
    return None


async def _wait(what: Callable[[], Any], timeout: float, interval: float = 0.5) -> list[str]:
    """Poll ``what`` (an async function returning a list of problems) until it returns none or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        problems: list[str] = await what()
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(interval)


async def install(api: client.ApiClient, components: list[Component], report: Callable[[str], None],
                  timeout: float = 300.0) -> None:
    """Apply ``components`` in order, waiting for CRDs and Deployments; ``report`` gets istioctl's lines."""
    rest = Rest(api)
    for comp in components:
        for obj in comp.objects:
            if obj["kind"] in UNADOPTED:
                try:
                    existing = await rest.call("GET", _path(obj))
                    if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != OWNER:
                        continue   # the cluster's own: used, not adopted (uninstall leaves it)
                except ApiException as e:
                    if e.status != 404:
                        raise ApplyError(f"{_ref(obj)}: {e.reason}") from None
            try:
                await rest.call("PATCH", _path(obj), obj, "application/apply-patch+yaml",
                                [("fieldManager", FIELD_MANAGER), ("force", "true")])
            except ApiException as e:
                raise ApplyError(f"{_ref(obj)}: {e.reason}") from None
        crds = [o for o in comp.objects if o["kind"] == "CustomResourceDefinition"]
        deps = [o for o in comp.objects if o["kind"] == "Deployment"]

        async def pending(crds: list[Obj] = crds, deps: list[Obj] = deps) -> list[str]:
            out = []
            for crd in crds:
                got = await rest.call("GET", _path(crd))
                conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
                if conds.get("Established") != "True":
                    out.append(f"{_ref(crd)}: not established")
            for d in deps:
                why = await _deployment_ready(rest, d)
                if why:
                    out.append(why)
            return out

        problems = await _wait(pending, timeout)
        if problems:
            raise ApplyError(f"{comp.name}: not ready after {timeout:.0f} s: {'; '.join(problems)}")
        report(f"✔ {comp.name} installed")


async def verify(api: client.ApiClient, components: list[Component]) -> list[str]:
    """What is missing or not ready, one line each (empty: the install is complete)."""
    rest = Rest(api)
    problems: list[str] = []
    for comp in components:
        for obj in comp.objects:
            try:
                await rest.call("GET", _path(obj))
            except ApiException as e:
                problems.append(f"{_ref(obj)}: {'not found' if e.status == 404 else e.reason}")
                continue
            if obj["kind"] == "Deployment":
                why = await _deployment_ready(rest, obj)
                if why:
                    problems.append(why)
    return problems


async def _owned(rest: Rest) -> list[Obj]:
    """Every object labelled as the install's, in :data:`KINDS` order."""
    found: list[Obj] = []
    for name, kind in KINDS.items():
        try:
            listed = await rest.call("GET", kind.base(), query=[("labelSelector", f"{OWNER_LABEL}={OWNER}")])
        except ApiException as e:
            if e.status == 404:
                continue
            raise ApplyError(f"listing {kind.plural}: {e.reason}") from None
        for item in listed.get("items") or []:
            item["kind"] = name
            found.append(item)
    return found


async def uninstall(api: client.ApiClient, report: Callable[[str], None], timeout: float = 120.0) -> int:
    """Delete everything the install created (by its label) and wait until it is gone; how many objects."""
    rest = Rest(api)
    owned = await _owned(rest)
    for obj in owned:
        try:
            await rest.call("DELETE", _path(obj), {"apiVersion": "v1", "kind": "DeleteOptions",
                                                   "propagationPolicy": "Foreground"})
        except ApiException as e:
            if e.status != 404:
                raise ApplyError(f"{_ref(obj)}: {e.reason}") from None
        report(f"  removed {_ref(obj)}.")

    async def left() -> list[str]:
        return [_ref(o) for o in await _owned(rest)]

    remaining = await _wait(left, timeout)
    if remaining:
        raise ApplyError(f"still present after {timeout:.0f} s: {', '.join(remaining[:10])}")
    return len(owned)
