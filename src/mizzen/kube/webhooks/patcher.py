"""The leader's upkeep of the validating webhooks, as Istio's validation controller does: every
``ValidatingWebhookConfiguration`` labelled ``istio.io/rev=<revision>`` gets the mesh CA's roots as its
webhooks' ``caBundle``; a webhook installed fail-open (``failurePolicy: Ignore``, as the charts do) is
switched to ``Fail`` once a dry-run create of an invalid Gateway (``invalid-gateway`` with no servers, in the
control plane's namespace) is refused by the webhook, so nothing invalid gets past while the webhook is down;
never back to ``Ignore``. Like Istio's webhook certificate patcher, the revision's
``MutatingWebhookConfiguration`` (``istio-sidecar-injector``) gets the roots too, in its webhooks named
``*sidecar-injector.istio.io``; its failure policy is the chart's and left alone.
If the Gateway CRD is missing the check cannot run and the webhook counts as ready, as in Istio.

Only one replica may do this: :meth:`WebhookPatcher.run` is started by the leader (or by a single control
plane) and cancelled when it loses the lease. It watches the webhook configurations (one created or
re-applied later, e.g. by ``mizzen install``, is patched at once) and re-checks every ``resync_s`` (a rotated
CA root), every ``retry_s`` until fail-closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client import ApiClient

from mizzen.asyncwait import wait_event
from mizzen.kube.reflector import Reflector, ResourceType
from mizzen.kube.webhooks.configuration import REV_LABEL

log = logging.getLogger(__name__)

__all__ = ["WebhookPatcher"]

_VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
_MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
INJECTOR_SUFFIX = "sidecar-injector.istio.io"
DENIED = "denied the request"
MISSING_RESOURCE = "the server could not find the requested resource"


def _message(status: int, body: dict[str, Any] | None, raw: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return f"HTTP {status}: {' '.join(raw.split())[:300]}"


async def _call(api: ApiClient, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                body: Any = None) -> tuple[int, Any, str]:
    """``(status, decoded body or None, raw text)``; never raises on an HTTP status."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    resp = await api.call_api(path, method, query_params=query or [], body=body, header_params=headers,
                              auth_settings=["BearerToken"], _preload_content=False,
                              _return_http_data_only=True, _request_timeout=30)
    try:
        raw = (await resp.read()).decode("utf-8", "replace")
    finally:
        resp.release()
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = None
    return resp.status, decoded, raw


_VWC = ResourceType("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")
_MWC = ResourceType("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations")


class _Wake:
    """A reflector handler that only signals: one of this revision's webhook configurations changed."""

    def __init__(self, revision: str, event: asyncio.Event) -> None:
        self.revision = revision
        self.event = event

    def _mine(self, obj: dict[str, Any]) -> bool:
        return bool((obj.get("metadata") or {}).get("labels", {}).get(REV_LABEL) == self.revision)

    def replace(self, objects: list[dict[str, Any]]) -> None:
        if any(self._mine(o) for o in objects):
            self.event.set()

    def upsert(self, obj: dict[str, Any]) -> None:
        if self._mine(obj):
            self.event.set()

    def delete(self, obj: dict[str, Any]) -> None:
        pass


class WebhookPatcher:
    """``ca_bundle()`` returns the PEM roots the webhook's serving certificate chains to (read at every
    round, so a root rotation reaches the webhooks)."""

    def __init__(self, ca_bundle: Callable[[], str], *, namespace: str = "istio-system",
                 revision: str = "default", retry_s: float = 1.0, resync_s: float = 10.0) -> None:
        self.ca_bundle = ca_bundle
        self.namespace = namespace
        self.revision = revision or "default"
        self.retry_s = retry_s
        self.resync_s = resync_s
        self.fail_closed = False
        self.patched = 0            # configuration updates written
        self._not_ready = ""

    async def run(self, api: ApiClient) -> None:
        """Reconcile until cancelled: at once when one of the revision's configurations changes, else every
        ``retry_s`` / ``resync_s``."""
        changed = asyncio.Event()
        watches = [asyncio.create_task(Reflector(api, kind, _Wake(self.revision, changed)).run(),
                                       name=f"webhook configurations: {kind.plural}")
                   for kind in (_VWC, _MWC)]
        try:
            while True:
                changed.clear()
                try:
                    await self.reconcile(api)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("validating webhook configurations not reconciled: %s",
                                " ".join(str(e).split()))
                pause = self.resync_s if self.fail_closed else self.retry_s
                await wait_event(changed, pause)
        finally:
            for watch in watches:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def reconcile(self, api: ApiClient) -> None:
        if not self.fail_closed:
            ready, why = await self._invalid_config_refused(api)
            if ready:
                log.info("the validation webhook refused an invalid config: failurePolicy Fail from now on")
                self.fail_closed = True
            elif why != self._not_ready:
                log.info("validation webhook not ready for fail-close yet: %s", why)
            self._not_ready = why
        bundle = base64.b64encode(self.ca_bundle().encode()).decode()
        for path, kind in ((_VWC_PATH, "ValidatingWebhookConfiguration"),
                           (_MWC_PATH, "MutatingWebhookConfiguration")):
            status, listed, raw = await _call(api, "GET", path,
                                              query=[("labelSelector", f"{REV_LABEL}={self.revision}")])
            if status != 200 or not isinstance(listed, dict):
                raise RuntimeError(f"listing {kind}s: {_message(status, listed, raw)}")
            for obj in listed.get("items") or []:
                await self._update(api, obj, bundle, path, kind)

    async def _update(self, api: ApiClient, obj: dict[str, Any], bundle: str, path: str, kind: str) -> None:
        name = obj.get("metadata", {}).get("name", "")
        validating = path == _VWC_PATH
        changed = False
        for hook in obj.get("webhooks") or []:
            if not validating and not str(hook.get("name", "")).endswith(INJECTOR_SUFFIX):
                continue
            client_config = hook.setdefault("clientConfig", {})
            if client_config.get("caBundle") != bundle:
                client_config["caBundle"] = bundle
                changed = True
            if validating and self.fail_closed and hook.get("failurePolicy") == "Ignore":
                hook["failurePolicy"] = "Fail"                       # never back to Ignore, as Istio
                changed = True
        if not changed:
            return
        # the object carries its resourceVersion: a concurrent change is a 409, not overwritten
        status, body, raw = await _call(api, "PUT", f"{path}/{name}", body=obj)
        if status == 409:   # changed meanwhile: the next round reads it again
            log.info("%s %s changed while patching; retrying", kind, name)
            return
        if status != 200:
            raise RuntimeError(f"updating {kind} {name}: {_message(status, body, raw)}")
        self.patched += 1
        log.info("%s %s: caBundle patched%s", kind, name,
                 ", failurePolicy Fail" if validating and self.fail_closed else "")

    async def _invalid_config_refused(self, api: ApiClient) -> tuple[bool, str]:
        """Istio's readiness check: a dry-run create of an invalid Gateway must be denied by the webhook."""
        invalid = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                   "metadata": {"name": "invalid-gateway", "namespace": self.namespace}, "spec": {}}
        path = f"/apis/networking.istio.io/v1/namespaces/{self.namespace}/gateways"
        status, body, raw = await _call(api, "POST", path, query=[("dryRun", "All")], body=invalid)
        if status == 409:   # one by that name exists: a dry-run update instead
            status, body, raw = await _call(api, "PUT", f"{path}/invalid-gateway", query=[("dryRun", "All")],
                                            body=invalid)
        if 200 <= status < 300:
            return False, "the dry-run of an invalid Gateway was accepted (webhook not reached yet)"
        message = _message(status, body, raw)
        if DENIED in message:
            return True, ""
        if status == 404 and MISSING_RESOURCE in message:
            log.warning("no Gateway CRD: cannot check the validation webhook; assuming it is ready")
            return True, ""
        return False, f"the dry-run of an invalid Gateway failed for another reason: {message}"
