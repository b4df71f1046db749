"""pilot-agent's side of injection, without a cluster: the proxy's spec from an injected pod's env and
downward-API files (found through the node agent's MIZZEN_MOUNTS), clear one-line refusals, and the app
probes the agent answers on :15020 run against a real app server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from mizzen.agent.app_health import AppProbers, ProbersError
from mizzen.agent.pilot import PilotError, mounted, parse_downward, proxy_from_env
from mizzen.core.proxy import ProxyType


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    pod = tmp / "podinfo"
    pod.mkdir(exist_ok=True)
    (pod / "labels").write_text('app="reviews"\nversion="v2"\npod-template-hash="5f7"\n')
    envoy = tmp / "envoy"
    envoy.mkdir(exist_ok=True)
    return {"POD_NAME": "reviews-v2-5f7-abcde", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.244.228.7",
            "SERVICE_ACCOUNT": "bookinfo-reviews", "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
            "PROXY_CONFIG": json.dumps({"discoveryAddress": "10.244.228.1:15010",
                                        "controlPlaneAuthPolicy": "NONE", "terminationDrainDuration": "7s",
                                        "concurrency": 1}),
            "MIZZEN_MOUNTS": json.dumps({"/etc/istio/pod": str(pod), "/etc/istio/proxy": str(envoy)}),
            **extra}


def test_proxy_spec_from_pod_env(tmp_path: Path) -> None:
    env = _env(tmp_path, ISTIO_PROMETHEUS_ANNOTATIONS='{"port":"9000","path":"/m"}')
    spec, opts, probers = proxy_from_env("sidecar", "bookinfo.svc.cluster.local", env)
    assert spec.type is ProxyType.SIDECAR
    assert spec.node_id == "sidecar~10.244.228.7~reviews-v2-5f7-abcde.bookinfo~bookinfo.svc.cluster.local"
    assert dict(spec.labels) == {"app": "reviews", "version": "v2", "pod-template-hash": "5f7"}
    assert (spec.xds_host, spec.xds_port, spec.service_account) == ("10.244.228.1", 15010, "bookinfo-reviews")
    assert (spec.interception_mode, spec.effective_http_proxy_port) == ("REDIRECT", 0)    # no HTTP_PROXY
    assert (spec.app_metrics_port, spec.app_metrics_path) == (9000, "/m")
    assert (opts.drain_time_s, opts.concurrency, opts.work_dir) == (7, 1, tmp_path / "envoy")
    assert probers.probers == {} and opts.status_routes == ()
    assert mounted("/etc/istio/pod/labels", env) == tmp_path / "podinfo" / "labels"
    assert mounted("/etc/other", env) == Path("/etc/other")
    assert parse_downward('a="x=y"\nb="quo\\"te"\n') == {"a": "x=y", "b": 'quo"te'}


def test_mutual_tls_takes_the_pods_token_and_root(tmp_path: Path) -> None:
    """Istio's default controlPlaneAuthPolicy: the CA at CA_ADDR, xDS at discoveryAddress, both over TLS, the
    pod's projected istio-token and the istio-ca-root-cert root at Istio's paths (mapped by MIZZEN_MOUNTS)."""
    mounts = {"/etc/istio/pod": str(tmp_path / "podinfo"), "/var/run/secrets/tokens": str(tmp_path / "tok"),
              "/var/run/secrets/istio": str(tmp_path / "root")}
    env = _env(tmp_path, PROXY_CONFIG=json.dumps({"discoveryAddress": "10.244.228.1:15012"}),
               CA_ADDR="10.244.228.1:15013", MIZZEN_MOUNTS=json.dumps(mounts))
    _spec, opts, _ = proxy_from_env("sidecar", "bookinfo.svc.cluster.local", env)
    ident = opts.identity
    assert ident is not None
    assert (ident.ca_address, ident.xds_address) == ("10.244.228.1:15013", "10.244.228.1:15012")
    assert ident.token_file == tmp_path / "tok" / "istio-token"
    assert ident.root_cert_file == tmp_path / "root" / "root-cert.pem"
    del env["CA_ADDR"]
    _spec, opts, _ = proxy_from_env("sidecar", "bookinfo.svc.cluster.local", env)
    assert opts.identity is not None and opts.identity.ca_address == "10.244.228.1:15012"


@pytest.mark.parametrize(("change", "message"), [
    ({"INSTANCE_IP": ""}, "INSTANCE_IP not set"),
    ({"PROXY_CONFIG": json.dumps({"controlPlaneAuthPolicy": "NONE", "discoveryAddress": "nohost"})},
     "discoveryAddress 'nohost': want host:port"),
    ({"PROXY_CONFIG": json.dumps({"discoveryAddress": "istiod.istio-system.svc:15012",
                                  "controlPlaneAuthPolicy": "SOMETIMES"})}, "want MUTUAL_TLS or NONE"),
    ({"PROXY_CONFIG": json.dumps({"discoveryAddress": "istiod.istio-system.svc:15012"}),
      "JWT_POLICY": "none"}, "JWT_POLICY"),
    ({"ISTIO_KUBE_APP_PROBERS": "{"}, "ISTIO_KUBE_APP_PROBERS: not JSON"),
])
def test_bad_pod_env_is_one_line(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with pytest.raises(PilotError, match=message) as e:
        proxy_from_env("sidecar", "bookinfo.svc.cluster.local", {**_env(tmp_path), **change})
    assert "\n" not in str(e.value)


async def test_app_probes_run_against_the_app() -> None:
    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def sick(_r: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ready", ok)
    app.router.add_get("/sick", sick)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    try:
        probers = AppProbers.from_env(json.dumps({
            "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": port}, "timeoutSeconds": 1},
            "/app-health/app/livez": {"tcpSocket": {"port": port}},
            "/app-health/sick/readyz": {"httpGet": {"path": "/sick", "port": port}},
            "/app-health/gone/livez": {"tcpSocket": {"port": 1}}}))
        got = await asyncio.gather(*(probers.probe(p) for p in (
            "/app-health/app/readyz", "/app-health/app/livez", "/app-health/sick/readyz",
            "/app-health/gone/livez", "/app-health/nope/readyz")))
        assert got == [200, 200, 503, 500, 404]
        assert [r[0] for r in probers.routes()] == ["/app-health/{container}/{kind}"]
    finally:
        await runner.cleanup()
    with pytest.raises(ProbersError):
        AppProbers.from_env('["not", "a", "map"]')
