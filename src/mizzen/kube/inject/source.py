"""The injection webhook's configuration from the cluster, as istiod's injector reads it: Istio's ConfigMaps
in the control plane's namespace, ``istio-sidecar-injector[-<rev>]`` (keys ``values`` and ``config``) and
``istio[-<rev>]`` (key ``mesh``), watched and turned into the :class:`InjectConfig` that ``/inject``
(:meth:`InjectConfigSource.review`) injects with. They are the files ``mizzen kube-inject`` takes as
``--valuesFile``, ``--injectConfigFile`` and ``--meshConfigFile``, so with the same ConfigMaps both give the
same pod. A ConfigMap that does not parse leaves the last good configuration in place (logged with the
reason); a deleted one falls back to Istio's defaults for its part.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio.client import ApiClient

from mizzen.kube.inject.values import InjectConfig, ValuesError
from mizzen.kube.inject.webhook import inject_review
from mizzen.kube.reflector import Reflector, ResourceType

__all__ = ["InjectConfigSource"]

log = logging.getLogger(__name__)

Object = dict[str, Any]
_CONFIGMAPS = ResourceType("", "v1", "configmaps")


class InjectConfigSource:
    """The current :class:`InjectConfig` of one revision, from its ConfigMaps in ``namespace``."""

    def __init__(self, api: ApiClient, namespace: str = "istio-system", revision: str = "") -> None:
        suffix = "" if revision in ("", "default") else f"-{revision}"
        self.api = api
        self.namespace = namespace
        self.injector_name = f"istio-sidecar-injector{suffix}"
        self.mesh_name = f"istio{suffix}"
        self.config = InjectConfig()
        self._data: dict[str, dict[str, str]] = {}     # ConfigMap name -> its data
        self.reflector = Reflector(api, _CONFIGMAPS, self, field_selector=f"metadata.namespace={namespace}")

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        """The ``/inject`` handler: one AdmissionRequest in, its AdmissionResponse out."""
        return inject_review(request, self.config)

    async def run(self) -> None:
        await self.reflector.run()

    # --- the reflector's handler ----------------------------------------------------------------------------
    def replace(self, objects: list[Object]) -> None:
        self._data = {}
        for obj in objects:
            self._keep(obj)
        self._rebuild()

    def upsert(self, obj: Object) -> None:
        if self._keep(obj):
            self._rebuild()

    def delete(self, obj: Object) -> None:
        if self._data.pop((obj.get("metadata") or {}).get("name", ""), None) is not None:
            self._rebuild()

    def _keep(self, obj: Object) -> bool:
        name = (obj.get("metadata") or {}).get("name", "")
        if name not in (self.injector_name, self.mesh_name):
            return False
        self._data[name] = {k: v for k, v in (obj.get("data") or {}).items() if isinstance(v, str)}
        return True

    def _rebuild(self) -> None:
        injector = self._data.get(self.injector_name, {})
        mesh = self._data.get(self.mesh_name, {}).get("mesh")
        try:
            self.config = InjectConfig.parse(injector.get("values"), mesh, injector.get("config"))
        except ValuesError as e:
            log.warning("injection config from ConfigMaps %s/%s and %s/%s not used (the last good one "
                        "is): %s",
                        self.namespace, self.injector_name, self.namespace, self.mesh_name, e)
            return
        log.info("injection config from ConfigMaps %s/%s and %s/%s", self.namespace, self.injector_name,
                 self.namespace, self.mesh_name)
