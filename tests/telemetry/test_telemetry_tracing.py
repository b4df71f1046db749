"""A Telemetry's ``tracing.randomSamplingPercentage`` sets the sampling of the mesh's tracer (mizzen.tracing)
for the workloads it selects, through the tracer's sampling-source hook; others keep the mesh default."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "core"))
from listeners_testkit import by_name, hcm_of, push_of, service, sidecar

from mizzen import telemetry, tracing
from mizzen.config.model import Config
from mizzen.core.listeners import build_listeners
from mizzen.core.mesh import MeshConfig
from mizzen.registry.model import Protocol

REVIEWS = service("reviews", [(9080, Protocol.HTTP)], selector={"app": "reviews"})
MESH = MeshConfig(tracing_zipkin_address="127.0.16.86:9411", tracing_sampling=1.0)
SAMPLE_REVIEWS = Config(kind="Telemetry", api_version="telemetry.istio.io/v1", name="reviews",
                        namespace="bookinfo", spec={"selector": {"matchLabels": {"app": "reviews"}},
                                                    "tracing": [{"randomSamplingPercentage": 42.5}]})


@pytest.fixture(autouse=True)
def _plugins() -> Iterator[None]:
    tracing.register_plugin()
    telemetry.acquire()
    try:
        yield
    finally:
        telemetry.release()


def _samplings(labels: dict[str, str]) -> set[float]:
    lds = build_listeners(sidecar(labels=labels, http_proxy_port=15080), push_of([REVIEWS], [SAMPLE_REVIEWS],
                                                                                mesh=MESH))
    out = set()
    for lis in by_name(lds).values():
        hcm = hcm_of(lis.filter_chains[0].filters[0])
        assert hcm.tracing.provider.name == "envoy.tracers.zipkin"     # the tracer's, not a bare sampling
        out.add(hcm.tracing.random_sampling.value)
    return out


def test_telemetry_sampling_reaches_the_tracer() -> None:
    assert _samplings({"app": "reviews"}) == {42.5}
    assert _samplings({"app": "ratings"}) == {1.0}
