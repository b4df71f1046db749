"""The pod endpoints of the control plane's API when the pods are run by another process (``mizzen demo``'s
runner, the local kubelet): ``GET /apis/pods`` and ``/apis/pods/{ns}/{name}/logs`` are forwarded to the
runner's own API, like kube-apiserver forwards ``kubectl logs`` to the kubelet. The CLI keeps one address.
Calls to the runner carry the API token (the runner's API is guarded like ours).

:meth:`PodsProxy.address_check` is the control plane's ``workload_address_check`` then: a workload is
registered only with a pod IP the runner says it allocated (``GET /apis/addresses/{ip}``); an unreachable
runner refuses the registration.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp
from aiohttp import web

__all__ = ["PodsProxy"]


class PodsProxy:
    """Forwards the pod routes to ``pods_url`` (e.g. ``http://127.0.0.1:41234``)."""

    def __init__(self, pods_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.pods_url = pods_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/apis/pods", self.forward), web.get("/apis/pods/{tail:.*}", self.forward)]

    async def forward(self, request: web.Request) -> web.Response:
        url = f"{self.pods_url}{request.rel_url}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as session,
                session.get(url) as r,
            ):
                body = await r.read()
                return web.Response(body=body, status=r.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            why = str(e) or type(e).__name__
            return web.Response(status=503, content_type="application/json", text=json.dumps(
                {"error": f"the pod runner at {self.pods_url} is not reachable: {why}"}))

    async def address_check(self, address: str) -> str | None:
        """None when the runner allocated ``address``, else why the registration is refused."""
        url = f"{self.pods_url}/apis/addresses/{quote(address, safe='')}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as session,
                session.get(url) as r,
            ):
                answer = await r.json(content_type=None) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            return f"the pod runner at {self.pods_url} could not confirm address {address}: " \
                   f"{str(e) or type(e).__name__}"
        if not isinstance(answer, dict):
            return f"the pod runner at {self.pods_url} could not confirm address {address}: HTTP {r.status}"
        if answer.get("allocated") is True:
            return None
        return f"address {address} was not allocated by this demo's runner (it registers its own pods)"
