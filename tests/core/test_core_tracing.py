"""Where the tracer's sampling percentage comes from: mesh config ``defaultConfig.tracing.sampling``, unless a
registered source (the Telemetry API's hook) decides for the chain; no collector, no tracer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from envoy.config.trace.v3 import zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from listeners_testkit import by_name, hcm_of, push_of, service, sidecar

from mizzen import tracing
from mizzen.core import plugins
from mizzen.core.clusters import build_clusters
from mizzen.core.listeners import build_listeners
from mizzen.core.mesh import MeshConfig, with_mesh_file
from mizzen.registry.model import Protocol


@pytest.fixture(autouse=True)
def _plugin() -> Iterator[None]:
    tracing.register_plugin()
    yield
    tracing.SAMPLING_SOURCES.clear()


def inbound_tracing(mesh: MeshConfig) -> hcm_pb2.HttpConnectionManager:
    push = push_of([service("reviews", [(9080, Protocol.HTTP)])], mesh=mesh)
    lds = by_name(build_listeners(sidecar(), push))
    return hcm_of(lds["127.0.10.1_9080"].filter_chains[0].filters[0])


def test_no_collector_no_tracer() -> None:
    assert not inbound_tracing(MeshConfig()).HasField("tracing")


def test_mesh_sampling_and_zipkin_settings() -> None:
    hcm = inbound_tracing(MeshConfig(tracing_zipkin_address="127.0.16.86:9411", tracing_sampling=7.5))
    assert hcm.tracing.random_sampling.value == 7.5
    assert hcm.tracing.provider.name == "envoy.tracers.zipkin"
    cfg = zipkin_pb2.ZipkinConfig()
    hcm.tracing.provider.typed_config.Unpack(cfg)
    assert (cfg.collector_cluster, cfg.collector_endpoint) == ("zipkin", "/api/v2/spans")
    assert cfg.trace_id_128bit
    assert cfg.shared_span_context.value is False
    tags = {t.tag: t.literal.value for t in hcm.tracing.custom_tags}
    assert tags == {"istio.canonical_service": "reviews", "istio.canonical_revision": "v1",
                    "istio.namespace": "bookinfo", "istio.mesh_id": "cluster.local",
                    "istio.cluster_id": "Kubernetes"}, tags


def test_a_registered_source_overrides_per_chain() -> None:
    def telemetry_api(ctx: plugins.ListenerContext) -> float | None:
        return 100.0 if ctx.direction is plugins.Direction.INBOUND else None

    tracing.register_sampling_source(telemetry_api)
    mesh = MeshConfig(tracing_zipkin_address="127.0.16.86:9411", tracing_sampling=1.0)
    assert inbound_tracing(mesh).tracing.random_sampling.value == 100.0
    push = push_of([service("reviews", [(9080, Protocol.HTTP)])], mesh=mesh)
    lds = by_name(build_listeners(sidecar(http_proxy_port=15080), push))
    outbound = next(lis for name, lis in lds.items() if name.endswith("_15080"))
    assert hcm_of(outbound.filter_chains[0].filters[0]).tracing.random_sampling.value == 1.0


def test_zipkin_cluster_only_with_a_collector() -> None:
    svc = [service("reviews", [(9080, Protocol.HTTP)])]
    assert "zipkin" not in {c.name for c in build_clusters(sidecar(), push_of(svc))}
    push = push_of(svc, mesh=MeshConfig(tracing_zipkin_address="127.0.16.86:9411"))
    for proxy in (sidecar(), sidecar()):
        zipkin = {c.name: c for c in build_clusters(proxy, push)}["zipkin"]
        addr = zipkin.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert (addr.address, addr.port_value) == ("127.0.16.86", 9411)


def test_mesh_config_file_default_config_tracing() -> None:
    mesh = with_mesh_file(MeshConfig(), yaml.safe_load(
        "defaultConfig:\n  tracing:\n    sampling: 25\n    zipkin: {address: 'zipkin.istio-system:9411'}\n"))
    assert (mesh.tracing_sampling, mesh.tracing_zipkin_address) == (25.0, "zipkin.istio-system:9411")
    assert with_mesh_file(MeshConfig(), {"defaultConfig": {"concurrency": 2}}) == MeshConfig()
    for bad, why in (({"tracing": {"sampling": 150}}, "percentage"),
                     ({"tracing": {"sampling": "all"}}, "percentage"),
                     ({"tracing": {"zipkin": {"address": "nohost"}}}, "host:port"),
                     ({"tracing": []}, "mapping")):
        with pytest.raises(ValueError, match=why):
            with_mesh_file(MeshConfig(), {"defaultConfig": bad})
