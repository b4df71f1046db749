"""Every kind Mizzen understands, declared once: group, versions, plural and short names, scope, and what
the mesh does with it (translated or only stored, whether it feeds the service registry, which xDS generators
read it). Adding a kind means one record here plus its validator module in :mod:`mizzen.config.validation`
(discovered there: no import line to add).

The CLI resolves ``get vs`` / ``get virtualservices`` through :func:`lookup`; the loader accepts only the
apiVersions listed here; validators are registered per kind name in :mod:`mizzen.config.validation`; the push
loop regenerates, for a changed object, only the generators its kind lists in ``read_by`` (xDS short names,
the keys of ``mizzen.core.generate.GENERATORS`` by short name).
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
    supported: bool = True           # False: accepted and stored, carries nothing the mesh acts on
    feeds_registry: bool = False     # services or workloads are built from it (registry.build_snapshot)
    read_by: frozenset[str] = frozenset()   # xDS generators (CDS, EDS, LDS, RDS, SDS) whose output it shapes
    body: tuple[str, ...] = ()       # top-level fields that hold the content instead of ``spec`` (Secret)

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def preferred_api_version(self) -> str:
        return self.api_versions[0]


NETWORKING = "networking.istio.io"
NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")

_ALL_XDS = frozenset({"CDS", "EDS", "LDS", "RDS"})

GATEWAY = Kind("Gateway", NETWORKING, NET_VERSIONS, "gateways", ("gw",),
               read_by=frozenset({"LDS", "RDS", "SDS"}))   # SDS: the credentialNames its servers name
VIRTUAL_SERVICE = Kind("VirtualService", NETWORKING, NET_VERSIONS, "virtualservices", ("vs",),
                       read_by=frozenset({"LDS", "RDS"}))
DESTINATION_RULE = Kind("DestinationRule", NETWORKING, NET_VERSIONS, "destinationrules", ("dr",),
                        read_by=frozenset({"CDS", "EDS", "RDS", "SDS"}))   # clusters, locality LB, hash
# policies, and (SDS) the tls.credentialNames gateways' clusters name
SERVICE_ENTRY = Kind("ServiceEntry", NETWORKING, NET_VERSIONS, "serviceentries", ("se",),
                     feeds_registry=True, read_by=_ALL_XDS)
WORKLOAD_ENTRY = Kind("WorkloadEntry", NETWORKING, NET_VERSIONS, "workloadentries", ("we",),
                      feeds_registry=True, read_by=_ALL_XDS)
SIDECAR = Kind("Sidecar", NETWORKING, NET_VERSIONS, "sidecars", read_by=_ALL_XDS)
SERVICE = Kind("Service", "", ("v1",), "services", ("svc",), istio=False, feeds_registry=True,
               read_by=_ALL_XDS)
DEPLOYMENT = Kind("Deployment", "apps", ("v1",), "deployments", ("deploy",), istio=False)   # the runner's
TELEMETRY = Kind("Telemetry", "telemetry.istio.io", ("v1", "v1alpha1"), "telemetries", ("telemetry",),
                  read_by=frozenset({"LDS"}))   # mizzen.telemetry's listener plugin
NAMESPACE = Kind("Namespace", "", ("v1",), "namespaces", ("ns",), namespaced=False, istio=False)
SECURITY = "security.istio.io"
SEC_VERSIONS = ("v1", "v1beta1")
# translated by security.authz (a listener plugin: RBAC, ext_authz and jwt_authn filters)
AUTHORIZATION_POLICY = Kind("AuthorizationPolicy", SECURITY, SEC_VERSIONS, "authorizationpolicies", ("ap",),
                            read_by=frozenset({"LDS"}))
REQUEST_AUTHENTICATION = Kind("RequestAuthentication", SECURITY, SEC_VERSIONS, "requestauthentications",
                              ("ra",), read_by=frozenset({"LDS"}))
# inbound chains (LDS); clients' auto mTLS reads the destination's mode too (CDS), as Istio's
# BestEffortInferServiceMTLSMode does
PEER_AUTHENTICATION = Kind("PeerAuthentication", SECURITY, SEC_VERSIONS, "peerauthentications", ("pa",),
                           read_by=frozenset({"CDS", "LDS"}))
# gateway credentialName (SDS), and whether a server's chain can be built at all (LDS)
SECRET = Kind("Secret", "", ("v1",), "secrets", (), istio=False, read_by=frozenset({"LDS", "SDS"}),
              body=("type", "data", "stringData", "immutable"))

ALL_KINDS: tuple[Kind, ...] = (
    GATEWAY, VIRTUAL_SERVICE, DESTINATION_RULE, SERVICE_ENTRY, WORKLOAD_ENTRY, SIDECAR,
    SERVICE, DEPLOYMENT, NAMESPACE,
    AUTHORIZATION_POLICY, REQUEST_AUTHENTICATION, PEER_AUTHENTICATION, SECRET, TELEMETRY,
)
BY_NAME: dict[str, Kind] = {k.kind: k for k in ALL_KINDS}

# Kinds that are accepted in input files but carry nothing the mesh acts on (kubectl users keep them in the
# same files as Services and Deployments, e.g. Istio's bookinfo.yaml). Stored and listed, not translated.
PASSIVE: tuple[Kind, ...] = tuple(
    Kind(name, "", ("v1",), plural, istio=False, supported=False)
    for name, plural in (("ServiceAccount", "serviceaccounts"), ("ConfigMap", "configmaps")))
PASSIVE_KINDS: frozenset[str] = frozenset(k.kind for k in PASSIVE)


def read_by(kind: str) -> frozenset[str]:
    """The xDS generators (short names) whose output objects of ``kind`` shape; unknown kinds: none."""
    k = BY_NAME.get(kind)
    return k.read_by if k is not None else frozenset()


def feeds_registry(kind: str) -> bool:
    k = BY_NAME.get(kind)
    return k is not None and k.feeds_registry


def lookup(name: str) -> Kind | None:
    """Resolve a CLI kind argument: Kind name, plural, singular or short name, any case."""
    n = name.lower()
    for k in ALL_KINDS:
        if n in (k.kind.lower(), k.plural, *k.short_names) or f"{n}s" == k.plural:
            return k
        if "." in n and n.split(".", 1)[0] in (k.kind.lower(), k.plural, *k.short_names):
            return k
    return None
