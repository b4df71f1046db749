"""Every kind Mizzen understands, declared once: group, versions, plural and short names, scope.

The CLI resolves ``get vs`` / ``get virtualservices`` through :func:`lookup`; the loader accepts only the
apiVersions listed here; validators are registered per kind name in :mod:`mizzen.config.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str                       # "" for the Kubernetes core group
    versions: tuple[str, ...]        # accepted versions, preferred first
    plural: str
    short_names: tuple[str, ...] = ()
    namespaced: bool = True
    istio: bool = True               # an Istio CRD (schema in config/schemas/crd-all.gen.yaml)

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def preferred_api_version(self) -> str:
        return self.api_versions[0]


NETWORKING = "networking.istio.io"
NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")

GATEWAY = Kind("Gateway", NETWORKING, NET_VERSIONS, "gateways", ("gw",))
VIRTUAL_SERVICE = Kind("VirtualService", NETWORKING, NET_VERSIONS, "virtualservices", ("vs",))
DESTINATION_RULE = Kind("DestinationRule", NETWORKING, NET_VERSIONS, "destinationrules", ("dr",))
SERVICE_ENTRY = Kind("ServiceEntry", NETWORKING, NET_VERSIONS, "serviceentries", ("se",))
WORKLOAD_ENTRY = Kind("WorkloadEntry", NETWORKING, NET_VERSIONS, "workloadentries", ("we",))
SIDECAR = Kind("Sidecar", NETWORKING, NET_VERSIONS, "sidecars")
SERVICE = Kind("Service", "", ("v1",), "services", ("svc",), istio=False)
DEPLOYMENT = Kind("Deployment", "apps", ("v1",), "deployments", ("deploy",), istio=False)
NAMESPACE = Kind("Namespace", "", ("v1",), "namespaces", ("ns",), namespaced=False, istio=False)

ALL_KINDS: tuple[Kind, ...] = (
    GATEWAY, VIRTUAL_SERVICE, DESTINATION_RULE, SERVICE_ENTRY, WORKLOAD_ENTRY, SIDECAR,
    SERVICE, DEPLOYMENT, NAMESPACE,
)
BY_NAME: dict[str, Kind] = {k.kind: k for k in ALL_KINDS}

# Kinds that are accepted in input files but carry nothing the mesh acts on (kubectl users keep them in the
# same files as Services and Deployments, e.g. Istio's bookinfo.yaml). Stored and listed, not translated.
PASSIVE_KINDS: frozenset[str] = frozenset({"ServiceAccount", "ConfigMap", "Secret"})


def lookup(name: str) -> Kind | None:
    """Resolve a CLI kind argument: Kind name, plural, singular or short name, any case."""
    n = name.lower()
    for k in ALL_KINDS:
        if n in (k.kind.lower(), k.plural, *k.short_names) or f"{n}s" == k.plural:
            return k
        if "." in n and n.split(".", 1)[0] in (k.kind.lower(), k.plural, *k.short_names):
            return k
    return None
