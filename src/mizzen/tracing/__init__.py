"""Distributed tracing (Istio's tracing pillar): Envoy's Zipkin tracer on every HTTP connection manager
core builds, reporting to the collector of ``defaultConfig.tracing.zipkin.address`` (the ``zipkin`` cluster
core adds when it is set) with ``defaultConfig.tracing.sampling``.

:func:`sampling` is the one place the percentage is decided: the mesh default, unless a registered
:data:`SamplingSource` (the Telemetry API's ``tracing[].randomSamplingPercentage``, telemetry's job)
returns a value for the chain. :class:`TracingPlugin` is the ``core.plugins`` hook; ``register_plugin()``
adds it where the control plane starts."""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from mizzen.core import plugins
from mizzen.core.clusters import ZIPKIN_CLUSTER
from mizzen.core.endpoints import CLUSTER_ID, canonical_names
from mizzen.core.proxy import Proxy

__all__ = ["SAMPLING_SOURCES", "SamplingSource", "TracingPlugin", "istio_tags", "register_plugin",
           "register_sampling_source", "sampling", "zipkin_tracing"]

# (chain) -> a percentage 0..100 for this chain, or None to leave it to the next source / the mesh default
SamplingSource = Callable[[plugins.ListenerContext], float | None]
SAMPLING_SOURCES: list[SamplingSource] = []
ZIPKIN_ENDPOINT = "/api/v2/spans"


def register_sampling_source(source: SamplingSource) -> None:
    """Let another pillar (the Telemetry API) override the sampling percentage per chain; first wins."""
    if source not in SAMPLING_SOURCES:
        SAMPLING_SOURCES.append(source)


def sampling(ctx: plugins.ListenerContext) -> float:
    """The percentage of requests this chain samples: a registered source's, else the mesh config's."""
    for source in SAMPLING_SOURCES:
        value = source(ctx)
        if value is not None:
            return max(0.0, min(100.0, value))
    return max(0.0, min(100.0, ctx.push.mesh.tracing_sampling))


def istio_tags(proxy: Proxy, mesh_id: str) -> list[custom_tag_pb2.CustomTag]:
    """The tags Istio puts on every span of a proxy (``istio.canonical_service``,
    ``istio.canonical_revision``, ``istio.namespace``, ``istio.mesh_id``, ``istio.cluster_id``), as literals:
    listeners are per proxy."""
    service, revision = canonical_names(proxy.labels, proxy.workload_name)
    values = {"istio.canonical_revision": revision, "istio.canonical_service": service,
              "istio.cluster_id": CLUSTER_ID, "istio.mesh_id": mesh_id, "istio.namespace": proxy.namespace}
    return [custom_tag_pb2.CustomTag(tag=k, literal=custom_tag_pb2.CustomTag.Literal(value=v))
            for k, v in sorted(values.items())]


def zipkin_tracing(percent: float, tags: list[custom_tag_pb2.CustomTag] | None = None,
                   ) -> hcm_pb2.HttpConnectionManager.Tracing:
    """Istio's HCM tracing for the Zipkin provider: 128-bit trace ids, one span per hop (no shared span
    context), JSON v2 to ``/api/v2/spans`` on the ``zipkin`` cluster, ``random_sampling`` = ``percent``."""
    cfg = zipkin_pb2.ZipkinConfig(collector_cluster=ZIPKIN_CLUSTER, collector_endpoint=ZIPKIN_ENDPOINT,
                                  trace_id_128bit=True,
                                  collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON)
    cfg.shared_span_context.value = False
    typed = any_pb2.Any()
    typed.Pack(cfg)
    t = hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=typed))
    t.random_sampling.value = percent
    t.client_sampling.value = 100.0
    t.overall_sampling.value = 100.0
    t.custom_tags.extend(tags or ())
    return t


class TracingPlugin(plugins.ListenerPlugin):
    """Adds the tracer to every HTTP chain (sidecar inbound and outbound, gateways) when the mesh has a
    collector."""

    name = "tracing"
    reads = frozenset({"Telemetry"})   # through the sampling source the Telemetry API registers

    def tracing(self, ctx: plugins.ListenerContext) -> Message | None:
        if not ctx.push.mesh.tracing_zipkin_address:
            return None
        return zipkin_tracing(sampling(ctx), istio_tags(ctx.proxy, ctx.push.mesh.trust_domain))


def register_plugin() -> None:
    plugins.register(TracingPlugin())
