"""The Kubernetes service registry (Istio's kube controller): endpoints of Kubernetes Services from their
EndpointSlices, described by the Pods behind them, plus the mesh config ConfigMap.

Services themselves arrive as config (:mod:`.config_source` mirrors them into the store, the registry
builds them from there); this source watches what istiod's kube controller reads besides:

* **EndpointSlices** (``discovery.k8s.io/v1``), grouped by their ``kubernetes.io/service-name`` label. Each
  address and port becomes a :class:`~mizzen.registry.model.SliceEndpoint` with Istio's health status
  (``endpointHealthStatus``): ready (or unset) is HEALTHY; not ready but serving and terminating is DRAINING;
  otherwise terminating (or unset) is TERMINATING, else UNHEALTHY. Which of them reach Envoy is the
  registry's rule (:func:`mizzen.registry.convert.endpoints_from_slices`). FQDN slices are skipped (Istio
  does too).
* **Pods**: an endpoint whose ``targetRef`` is a Pod takes that Pod's labels and service account; an
  endpoint naming a Pod not seen yet is left out until the Pod arrives (Istio's endpoint resync).
* **Nodes**: the locality ``region/zone/subzone`` from the node's ``topology.kubernetes.io/region|zone`` and
  ``topology.istio.io/subzone`` labels, unless the Pod's ``istio-locality`` label says otherwise.
* **Namespaces**: the network of an endpoint is its Pod's ``topology.istio.io/network`` label, else the
  system namespace's (Istio's ``Network()``). Endpoint labels are augmented like Istio's ``AugmentLabels``
  (locality, network, cluster), so DestinationRule subsets and ``failoverPriority`` can select on them.
* **The mesh config** ConfigMap ``istio`` in the system namespace: its ``mesh`` key is handed to
  ``on_mesh`` as text (None when the ConfigMap or key is gone).
* **The injector's** ConfigMap (``istio-sidecar-injector``, ``-<rev>`` for a revision) in the system
  namespace: its ``data`` (``config``, ``values``) is handed to ``on_injector`` (None when it is gone).
* **meshConfig discoverySelectors**: the Namespaces' labels feed the
  :class:`~mizzen.kube.discovery.NamespaceFilter`; endpoints and Pods of namespaces it does not admit are
  left out, and a namespace (de)selected later is recomputed at once.

Every change recomputes only the Services it can touch and hands their endpoints to the registry
(:meth:`Registry.set_service_endpoints`); the hostnames whose endpoints changed go to ``on_endpoints``, which
the control plane turns into an EDS-only push.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from mizzen.core.push_request import WorkloadKey
from mizzen.kube.discovery import NamespaceFilter
from mizzen.kube.reflector import Reflector, Reflectors, ResourceType
from mizzen.registry.model import SliceEndpoint, SliceHealth, Workload

__all__ = ["INJECTOR_CONFIGMAP", "MESH_CONFIGMAP", "KubeRegistrySource", "ServiceEndpointsSink",
           "slice_health"]

log = logging.getLogger(__name__)

Object = dict[str, Any]
ServiceKey = tuple[str, str]   # (namespace, Service name)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"
CLUSTER_LABEL = "topology.istio.io/cluster"
LOCALITY_LABEL = "istio-locality"
CLUSTER_ID = "Kubernetes"
MESH_CONFIGMAP = "istio"
MESH_KEY = "mesh"
INJECTOR_CONFIGMAP = "istio-sidecar-injector"

ENDPOINT_SLICES = ResourceType("discovery.k8s.io", "v1", "endpointslices")
PODS = ResourceType("", "v1", "pods")
NODES = ResourceType("", "v1", "nodes")
NAMESPACES = ResourceType("", "v1", "namespaces")
CONFIGMAPS = ResourceType("", "v1", "configmaps")


class ServiceEndpointsSink(Protocol):
    """What the source needs of the registry (``mizzen.registry.registry.Registry``)."""

    def set_service_endpoints(self, namespace: str, name: str,
                              endpoints: Iterable[SliceEndpoint]) -> frozenset[str]: ...

    def register_workload(self, w: Workload) -> frozenset[str]: ...

    def remove_workload(self, namespace: str, name: str) -> frozenset[str] | None: ...


def slice_health(conditions: Any) -> SliceHealth:
    """Istio's endpointHealthStatus for one EndpointSlice endpoint's ``conditions``."""
    cond = conditions if isinstance(conditions, dict) else {}
    ready, serving, terminating = cond.get("ready"), cond.get("serving"), cond.get("terminating")
    if ready is None or ready:
        return SliceHealth.HEALTHY
    if (serving is None or serving) and (terminating is None or terminating):
        return SliceHealth.DRAINING        # sent only for persistent-session services (the registry decides)
    if terminating is None or terminating:
        return SliceHealth.TERMINATING
    return SliceHealth.UNHEALTHY


def _meta(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _labels(obj: Object) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _key(obj: Object) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


@dataclass
class _Collection:
    """A reflector handler keeping one collection by (namespace, name) and reporting what changed."""

    changed: Callable[[list[Object]], None]

    def __post_init__(self) -> None:
        self.items: dict[tuple[str, str], Object] = {}

    def replace(self, objects: list[Object]) -> None:
        fresh = {_key(o): o for o in objects}
        gone = [o for k, o in self.items.items() if k not in fresh]
        touched = [o for k, o in fresh.items() if self.items.get(k) != o]
        self._commit(fresh, [*gone, *touched])

    def upsert(self, obj: Object) -> None:
        old = self.items.get(_key(obj))
        self._commit({**self.items, _key(obj): obj}, [obj] if old is None else [old, obj])

    def delete(self, obj: Object) -> None:
        items = dict(self.items)
        old = items.pop(_key(obj), None)
        self._commit(items, [old or obj])

    def _commit(self, items: dict[tuple[str, str], Object], changed: list[Object]) -> None:
        """Take ``items`` and propagate; if that fails the collection is left as it was, so the reflector's
        retry (a re-list) finds the same difference again instead of none."""
        before, self.items = self.items, items
        if not changed:
            return
        try:
            self.changed(changed)
        except BaseException:
            self.items = before
            raise


class KubeRegistrySource(Reflectors):
    """Feeds ``sink`` (the registry) from the API server while :meth:`run` runs; with ``namespaces``
    (meshConfig ``discoverySelectors``, fed here with the Namespaces' labels) only the endpoints and Pods of
    the namespaces it admits."""

    def __init__(self, api: client.ApiClient, sink: ServiceEndpointsSink, *,
                 on_endpoints: Callable[[frozenset[str], list[str], list[WorkloadKey]], None] | None = None,
                 on_mesh: Callable[[str | None], None] | None = None,
                 on_injector: Callable[[dict[str, str] | None], None] | None = None,
                 injector_configmap: str = INJECTOR_CONFIGMAP,
                 system_namespace: str = "istio-system", watch_timeout_s: int = 300,
                 namespaces: NamespaceFilter | None = None) -> None:
        self.sink = sink
        self.filter = namespaces
        self.on_endpoints = on_endpoints
        self.on_mesh = on_mesh
        self.on_injector = on_injector
        self.injector_configmap = injector_configmap
        self.injector_data: dict[str, str] | None = None
        self.system_namespace = system_namespace
        self.slices = _Collection(self._slices_changed)
        self.pods = _Collection(self._pods_changed)
        self.nodes = _Collection(self._nodes_changed)
        self.namespaces = _Collection(self._namespaces_changed)
        self.configmaps = _Collection(self._configmap_changed)
        self.mesh_text: str | None = None
        self.pod_workloads: dict[tuple[str, str], Workload] = {}   # what the registry has of each Pod
        t = watch_timeout_s
        self.reflectors = [
            # pods, nodes and namespaces first: the slices' endpoints are described by them
            Reflector(api, PODS, self.pods, watch_timeout_s=t),
            Reflector(api, NODES, self.nodes, watch_timeout_s=t),
            Reflector(api, NAMESPACES, self.namespaces, watch_timeout_s=t),
            Reflector(api, ENDPOINT_SLICES, self.slices, watch_timeout_s=t),
            # the system namespace's ConfigMaps: the mesh config's and the injector's
            Reflector(api, CONFIGMAPS, self.configmaps, watch_timeout_s=t,
                      field_selector=f"metadata.namespace={system_namespace}"),
        ]
        if namespaces is not None:
            namespaces.add_listener(self._discovery_changed)

    def admits(self, namespace: str) -> bool:
        return self.filter is None or self.filter.admits(namespace)

    # --- what a change touches ------------------------------------------------------------------------------
    def _slices_changed(self, objs: list[Object]) -> None:
        services = {k for k in (_service_of(o) for o in objs) if k is not None}
        self._recompute(services, "EndpointSlice")

    def _pods_changed(self, objs: list[Object]) -> None:
        names: set[tuple[str, str]] = set()
        ips: set[str] = set()
        for o in objs:
            names.add(_key(o))
            status = o.get("status") or {}
            ips.update(str(p.get("ip")) for p in status.get("podIPs") or () if isinstance(p, dict))
            if status.get("podIP"):
                ips.add(str(status["podIP"]))
        self._recompute(self._services_where(lambda ns, ep: _pod_ref(ns, ep) in names
                                             or bool(ips & set(map(str, ep.get("addresses") or ())))), "Pod",
                        names)

    def _nodes_changed(self, objs: list[Object]) -> None:
        nodes = {_key(o)[1] for o in objs}
        pods_on = {k for k, p in self.pods.items.items() if (p.get("spec") or {}).get("nodeName") in nodes}
        self._recompute(self._services_where(lambda ns, ep: ep.get("nodeName") in nodes
                                             or _pod_ref(ns, ep) in pods_on), "Node", pods_on)

    def _namespaces_changed(self, objs: list[Object]) -> None:
        if self.filter is not None:   # may (de)select namespaces: then _discovery_changed recomputes them
            self.filter.set_namespaces({k[1]: _labels(o) for k, o in self.namespaces.items.items()})
        if any(_key(o)[1] == self.system_namespace for o in objs):   # the mesh's default network
            every = {k for k in (_service_of(o) for o in self.slices.items.values()) if k}
            self._recompute(every, "Namespace", set(self.pods.items))

    def _discovery_changed(self, changed: frozenset[str] | None) -> None:
        """Namespaces were selected or deselected (None: any may have been): their endpoints and Pods."""
        def touched(ns: str) -> bool:
            return changed is None or ns in changed
        services = {k for k in (_service_of(o) for o in self.slices.items.values()) if k and touched(k[0])}
        pods = {k for k in (*self.pods.items, *self.pod_workloads) if touched(k[0])}
        self._recompute(services, "discoverySelectors", pods)

    def _configmap_changed(self, objs: list[Object]) -> None:
        cm = self.configmaps.items.get((self.system_namespace, MESH_CONFIGMAP))
        data = (cm or {}).get("data") or {}
        text = str(data[MESH_KEY]) if isinstance(data, dict) and MESH_KEY in data else None
        if text != self.mesh_text:
            self.mesh_text = text
            if self.on_mesh is not None:
                self.on_mesh(text)
        inj = self.configmaps.items.get((self.system_namespace, self.injector_configmap))
        raw = inj.get("data") if inj is not None else None
        injector = None if inj is None else {str(k): str(v) for k, v in (raw or {}).items()}
        if injector != self.injector_data:
            self.injector_data = injector
            if self.on_injector is not None:
                self.on_injector(injector)

    def _services_where(self, pred: Callable[[str, dict[str, Any]], bool]) -> set[ServiceKey]:
        out: set[ServiceKey] = set()
        for s in self.slices.items.values():
            key = _service_of(s)
            if key is None or key in out:
                continue
            if any(isinstance(ep, dict) and pred(key[0], ep) for ep in s.get("endpoints") or ()):
                out.add(key)
        return out

    # --- endpoints ------------------------------------------------------------------------------------------
    def _recompute(self, services: Iterable[ServiceKey], why: str,
                   pods: Iterable[tuple[str, str]] = ()) -> None:
        changed: set[str] = set()
        reasons: list[str] = []
        keys: list[WorkloadKey] = []
        for ns, name in sorted(services):
            hosts = self.sink.set_service_endpoints(ns, name, self.endpoints_of(ns, name))
            if hosts:
                changed |= hosts
                reasons.append(f"{why}: endpoints of Service {ns}/{name}")
        for ns, name in sorted(set(pods)):
            hosts, key = self._sync_pod(ns, name)
            if key is not None:
                changed |= hosts
                keys.append(key)
                reasons.append(f"{why}: Pod {ns}/{name}")
        if (changed or keys) and self.on_endpoints is not None:
            self.on_endpoints(frozenset(changed), reasons, keys)

    def _sync_pod(self, namespace: str, name: str) -> tuple[frozenset[str], WorkloadKey | None]:
        """The Pod as a workload in the registry (ServiceEntries select it): added, updated or removed.
        Returns the hostnames whose endpoints changed, and the workload's key when anything changed."""
        pod = self.pods.items.get((namespace, name))
        w = self.workload_of(pod) if pod is not None else None
        old = self.pod_workloads.get((namespace, name))
        if w == old:
            return frozenset(), None
        if w is None:
            del self.pod_workloads[(namespace, name)]
            hosts = self.sink.remove_workload(namespace, name) or frozenset()
            assert old is not None
            return hosts, WorkloadKey(namespace, name, old.address)
        self.pod_workloads[(namespace, name)] = w
        return self.sink.register_workload(w), WorkloadKey(namespace, name, w.address)

    def workload_of(self, pod: Object) -> Workload | None:
        """A running Pod with an IP as a workload (Istio's WorkloadInstance of a Pod); None for a Pod that
        is terminating, finished or has no IP yet."""
        meta, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or not status.get("podIP") or spec.get("hostNetwork"):
            return None
        if not self.admits(str(meta.get("namespace") or "")):
            return None
        if status.get("phase") in ("Succeeded", "Failed"):
            return None
        labels, sa, locality = self._describe(pod, {})
        ports = {str(p["name"]): int(p["containerPort"])
                 for c in spec.get("containers") or () for p in c.get("ports") or ()
                 if isinstance(p, dict) and p.get("name") and p.get("containerPort")}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or ())
        return Workload(name=str(meta.get("name")), namespace=str(meta.get("namespace")),
                        address=str(status["podIP"]), labels=labels, service_account=sa, locality=locality,
                        ports=ports, network=labels.get(NETWORK_LABEL, ""), healthy=ready, kube_pod=True)

    def endpoints_of(self, namespace: str, service: str) -> list[SliceEndpoint]:
        """Every address:port of the Service's EndpointSlices, described by their Pods (none outside the
        discovery namespaces)."""
        out: list[SliceEndpoint] = []
        if not self.admits(namespace):
            return out
        for s in self.slices.items.values():
            if _service_of(s) != (namespace, service) or s.get("addressType") == "FQDN":
                continue
            ports = [p for p in s.get("ports") or () if isinstance(p, dict) and p.get("port")]
            for ep in s.get("endpoints") or ():
                if not isinstance(ep, dict):
                    continue
                health = slice_health(ep.get("conditions"))
                ref = _pod_ref(namespace, ep)
                pod = self.pods.items.get(ref) if ref is not None else None
                if ref is not None and pod is None:
                    continue                 # its Pod is not known yet: it is added when the Pod arrives
                labels, sa, locality = self._describe(pod, ep)
                for address in ep.get("addresses") or ():
                    for p in ports:
                        out.append(SliceEndpoint(
                            address=str(address), port_name=str(p.get("name") or ""), port=int(p["port"]),
                            health=health, pod=ref[1] if ref else "", namespace=namespace, labels=labels,
                            service_account=sa, locality=locality))
        return out

    def _describe(self, pod: Object | None, ep: dict[str, Any]) -> tuple[dict[str, str], str, str]:
        """(labels augmented with locality/network/cluster, service account, locality) of an endpoint."""
        labels = _labels(pod) if pod is not None else {}
        spec = (pod or {}).get("spec") or {}
        node_name = str(spec.get("nodeName") or ep.get("nodeName") or "")
        locality = labels.get(LOCALITY_LABEL, "").replace(".", "/")
        if not locality:
            node = _labels(self.nodes.items.get(("", node_name), {}))
            region, zone = node.get(REGION_LABEL, ""), node.get(ZONE_LABEL, "") or str(ep.get("zone") or "")
            subzone = node.get(SUBZONE_LABEL, "")
            locality = "/".join((region, zone, subzone)).rstrip("/") if region or zone or subzone else ""
        network = labels.get(NETWORK_LABEL) or _labels(
            self.namespaces.items.get(("", self.system_namespace), {})).get(NETWORK_LABEL, "")
        augmented = dict(labels)
        region, zone, subzone = [*locality.split("/"), "", "", ""][:3] if locality else ["", "", ""]
        for key, value in ((REGION_LABEL, region), (ZONE_LABEL, zone), (SUBZONE_LABEL, subzone),
                           (NETWORK_LABEL, network), (CLUSTER_LABEL, CLUSTER_ID)):
            if value and key not in augmented:
                augmented[key] = value
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default") if pod else ""
        return augmented, sa, locality


def _service_of(obj: Object) -> ServiceKey | None:
    name = _labels(obj).get(SERVICE_NAME_LABEL)
    ns = _key(obj)[0]
    return (ns, name) if name and ns else None


def _pod_ref(namespace: str, ep: dict[str, Any]) -> tuple[str, str] | None:
    ref = ep.get("targetRef")
    if not isinstance(ref, dict) or ref.get("kind") != "Pod" or not ref.get("name"):
        return None
    return str(ref.get("namespace") or namespace), str(ref["name"])
