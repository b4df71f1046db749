"""Access logs from the telemetry plugin: the mesh config's accessLogFile/Encoding/Format with Istio's
default formats, and the Telemetry API's accessLogging (providers, disabled, CEL filter, CLIENT/SERVER mode,
scope)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.extensions.access_loggers.file.v3 import file_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "core"))
from listeners_testkit import by_name, hcm_of, push_of, service, sidecar

from mizzen import telemetry
from mizzen.config.model import Config
from mizzen.core.listeners import build_listeners
from mizzen.core.mesh import MeshConfig
from mizzen.registry.model import Protocol
from mizzen.telemetry.access_log import FILE_ACCESS_LOG

REVIEWS = service("reviews", [(9080, Protocol.HTTP)], selector={"app": "reviews"})


@pytest.fixture(autouse=True)
def _plugin() -> Iterator[None]:
    telemetry.acquire()
    try:
        yield
    finally:
        telemetry.release()


def _file_logs(hcm: object) -> list[file_pb2.FileAccessLog]:
    out = []
    for a in hcm.access_log:  # type: ignore[attr-defined]
        if a.name == FILE_ACCESS_LOG:
            fl = file_pb2.FileAccessLog()
            a.typed_config.Unpack(fl)
            out.append(fl)
    return out


def test_mesh_access_log_json_and_text_and_format() -> None:
    for enc in ("JSON", "TEXT"):
        mesh = MeshConfig(access_log_file="/dev/stdout", access_log_encoding=enc)
        lis = build_listeners(sidecar(), push_of([REVIEWS], mesh=mesh))[0]
        [fl] = _file_logs(hcm_of(lis.filter_chains[0].filters[0]))
        assert fl.path == "/dev/stdout"
        if enc == "JSON":
            assert fl.log_format.json_format.fields["authority"].string_value == "%REQ(:AUTHORITY)%"
        else:
            assert fl.log_format.text_format_source.inline_string.startswith('[%START_TIME%] "%REQ(:METHOD)%')
    mesh = MeshConfig(access_log_file="/tmp/a.log", access_log_format="%RESPONSE_CODE% %REQ(:PATH)%")
    lis = build_listeners(sidecar(), push_of([REVIEWS], mesh=mesh))[0]
    [fl] = _file_logs(hcm_of(lis.filter_chains[0].filters[0]))
    assert fl.log_format.text_format_source.inline_string == "%RESPONSE_CODE% %REQ(:PATH)%\n"
    mesh = MeshConfig(access_log_file="/tmp/a.log", access_log_encoding="JSON",
                      access_log_format='{"code": "%RESPONSE_CODE%"}')
    lis = build_listeners(sidecar(), push_of([REVIEWS], mesh=mesh))[0]
    [fl] = _file_logs(hcm_of(lis.filter_chains[0].filters[0]))
    assert dict(fl.log_format.json_format) == {"code": "%RESPONSE_CODE%"}
    # no accessLogFile: no access log
    lis = build_listeners(sidecar(), push_of([REVIEWS]))[0]
    assert _file_logs(hcm_of(lis.filter_chains[0].filters[0])) == []


def _telemetry(name: str, ns: str, spec: dict[str, object]) -> Config:
    return Config(kind="Telemetry", api_version="telemetry.istio.io/v1", name=name, namespace=ns, spec=spec)


def _logs_by_listener(configs: list[Config], mesh: MeshConfig | None = None,
                      labels: dict[str, str] | None = None) -> dict[str, list[file_pb2.FileAccessLog]]:
    proxy = sidecar(labels=labels or {"app": "reviews"}, http_proxy_port=15080)
    push = push_of([REVIEWS], configs, mesh=mesh)
    return {name: _file_logs(hcm_of(lis.filter_chains[0].filters[0]))
            for name, lis in by_name(build_listeners(proxy, push)).items()}


def test_telemetry_access_logging_scope_mode_filter_and_disable() -> None:
    mesh_wide = _telemetry("mesh-default", "istio-system",
                           {"accessLogging": [{"providers": [{"name": "envoy"}]}]})
    logs = _logs_by_listener([mesh_wide])
    assert {k: [f.path for f in v] for k, v in logs.items()} == {k: ["/dev/stdout"] for k in logs}
    # a namespace Telemetry turns it off for the namespace, a workload one back on for the server side only
    ns_off = _telemetry("off", "bookinfo", {"accessLogging": [{"disabled": True}]})
    assert all(v == [] for v in _logs_by_listener([mesh_wide, ns_off]).values())
    wl = _telemetry("reviews", "bookinfo", {
        "selector": {"matchLabels": {"app": "reviews"}},
        "accessLogging": [{"match": {"mode": "SERVER"}, "filter": {"expression": "response.code >= 400"}}]})
    logs = _logs_by_listener([mesh_wide, ns_off, wl])
    inbound = [k for k in logs if k.endswith("_9080") and not k.startswith("127.0.10.50")]
    assert inbound, logs.keys()
    for name, v in logs.items():
        if name in inbound:
            assert [f.path for f in v] == ["/dev/stdout"], name
        else:
            assert v == [], name
    # the selector does not match another workload
    assert all(v == [] for v in _logs_by_listener([mesh_wide, ns_off, wl], labels={"app": "other"}).values())
