"""A real Jaeger (``github.com/jaegertracing/jaeger`` v1.75.0, the ``jaeger`` binary ``tools/jaeger/build.sh``
builds with Go into ``~/.cache/mizzen/jaeger``) on its own loopback address: the Zipkin receiver Envoy's
tracer reports to (``/api/v2/spans``), OTLP (gRPC and HTTP), in-memory storage and the query API
(``/api/services``, ``/api/traces``). Its web UI needs assets that are not built here, so it serves a
placeholder; the console reads ``/api/traces`` itself.

:func:`find_binary` says where it is (or :data:`BUILD_HINT`); :func:`render_config` writes Jaeger v2's
collector-style YAML with every endpoint on ``host`` (nothing on 0.0.0.0, no self-metrics port);
:class:`Jaeger` starts and stops the process."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from mizzen.observe.process import Addon, AddonProcess

__all__ = ["BUILD_HINT", "VERSION", "Jaeger", "JaegerOptions", "find_binary", "render_config"]

VERSION = "v1.75.0"
CACHE_ENV = "MIZZEN_JAEGER_CACHE"
BUILD_HINT = ("Jaeger is not built: run tools/jaeger/build.sh (Go from the module proxy; several minutes the "
              "first time, cached in ~/.cache/mizzen/jaeger)")


def find_binary() -> str | None:
    """The cached build (``$MIZZEN_JAEGER_CACHE`` or ``~/.cache/mizzen/jaeger``), else ``jaeger`` on PATH."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mizzen" / "jaeger")
    cached = root / VERSION / "bin" / "jaeger"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("jaeger")


@dataclass(frozen=True)
class JaegerOptions:
    data_dir: Path                   # config and log (traces are kept in memory)
    host: str = "127.0.0.1"
    query_port: int = 16686
    query_grpc_port: int = 16685
    zipkin_port: int = 9411
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    health_port: int = 13133
    max_traces: int = 100_000
    batch_timeout: str = "200ms"     # spans reach storage this soon after arriving

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.query_port}"

    @property
    def zipkin_address(self) -> str:
        return f"{self.host}:{self.zipkin_port}"

    def ports(self) -> list[int]:
        return [self.query_port, self.query_grpc_port, self.zipkin_port, self.otlp_grpc_port,
                self.otlp_http_port, self.health_port]


def render_config(o: JaegerOptions) -> str:
    def ep(port: int) -> dict[str, str]:
        return {"endpoint": f"{o.host}:{port}"}

    doc = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp", "zipkin"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"resource": {"service.name": "jaeger"}, "metrics": {"level": "none"},
                          "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": o.max_traces}}}},
            "jaeger_query": {"storage": {"traces": "memstore"}, "http": ep(o.query_port),
                             "grpc": ep(o.query_grpc_port)},
            "healthcheckv2": {"use_v2": True, "http": ep(o.health_port)},
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": ep(o.otlp_grpc_port), "http": ep(o.otlp_http_port)}},
            "zipkin": ep(o.zipkin_port),
        },
        "processors": {"batch": {"timeout": o.batch_timeout}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Jaeger(Addon[JaegerOptions]):
    """Render the config into ``data_dir`` and run ``jaeger --config``; ready once the query API answers."""

    def __init__(self, opts: JaegerOptions, binary: str | None = None) -> None:
        super().__init__(opts, binary or find_binary())

    async def start(self, timeout: float = 30.0) -> None:
        if self.binary is None:
            raise FileNotFoundError(BUILD_HINT)
        o = self.opts
        o.data_dir.mkdir(parents=True, exist_ok=True)
        config = o.data_dir / "jaeger.yaml"
        config.write_text(render_config(o))
        self.process = AddonProcess("jaeger", [self.binary, "--config", str(config)],
                                    o.data_dir / "jaeger.log", f"{o.url}/api/services")
        await self.process.start(timeout)
