"""Envoy's admin interface is no longer a TCP port: it is a 0600 Unix socket in the agent's 0700 work dir.
Over TCP only Istio's ``prometheus_stats`` listener answers (``GET /stats/prometheus``; ``/quitquitquit`` and
every other path 404), and the agent's admin proxy serves an allow-list to holders of the API token."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
from auth_helpers import CONNECT_UNIX, as_nobody, needs_root, request_as_nobody

from harness import Mesh, alloc_ip, mesh  # noqa: F401
from mizzen.agent.admin_proxy import REDACTED, redact_secrets
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, STATS_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.core.proxy import ProxyType


async def test_admin_is_a_private_socket_and_tcp_serves_only_prometheus_stats(mesh: Mesh) -> None:  # noqa: F811
    agent = await mesh.sidecar("bookinfo", "productpage-v1-adm", {"app": "productpage"})
    ip = agent.spec.ip
    assert stat.S_ISSOCK(agent.admin_socket.stat().st_mode)
    assert stat.S_IMODE(agent.admin_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.work_dir.stat().st_mode) == 0o700
    pid = agent.pid
    async with httpx.AsyncClient(base_url=f"http://{ip}:{STATS_PORT}", trust_env=False, timeout=5) as tcp:
        r = await tcp.get("/stats/prometheus")
        assert r.status_code == 200 and "envoy_server_live" in r.text
        for method, path in (("POST", "/quitquitquit"), ("GET", "/quitquitquit"), ("GET", "/config_dump"),
                             ("POST", "/logging?level=trace"), ("GET", "/ready"),
                             ("POST", "/stats/prometheus"), ("GET", "/stats/prometheus/../config_dump"),
                             ("POST", "/healthcheck/fail")):
            r = await tcp.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
        # nothing answers on the old admin port
        try:
            await tcp.get(f"http://{ip}:15000/ready")
            raise AssertionError("something answers on the old admin port 15000")
        except httpx.ConnectError:
            pass
    assert agent.pid == pid and agent.restarts == 0          # still the same Envoy: nothing quit
    assert (await agent.admin_get("/ready")).strip() == "LIVE"


async def test_agent_admin_proxy_needs_the_token_and_allows_only_its_list(mesh: Mesh) -> None:  # noqa: F811
    agent = await mesh.sidecar("bookinfo", "reviews-v1-adm", {"app": "reviews"})
    assert agent.admin_proxy_url == f"http://{agent.spec.ip}:{AGENT_ADMIN_PORT}"
    auth = {"Authorization": f"Bearer {mesh.cp.token}"}
    async with httpx.AsyncClient(base_url=agent.admin_proxy_url, trust_env=False, timeout=10) as http:
        for path in ("/config_dump", "/clusters", "/stats", "/server_info", "/certs", "/logging"):
            r = await http.get(path)
            assert r.status_code == 401 and "token" in r.json()["error"], (path, r.text)
        r = await http.get("/config_dump", headers={"Authorization": "Bearer wrong-token-wrong-token"})
        assert r.status_code == 401
        assert (await http.get("/ready")).text.strip() == "LIVE"       # readiness stays open
        # with the token: the allow-list
        dump = (await http.get("/config_dump", headers=auth)).json()
        assert any(c["@type"].endswith("BootstrapConfigDump") for c in dump["configs"])
        clusters = (await http.get("/clusters?format=json", headers=auth)).json()
        assert any(c["name"] == "xds-grpc" for c in clusters["cluster_statuses"])
        assert "server.live" in (await http.get("/stats", headers=auth)).text
        assert (await http.get("/server_info", headers=auth)).json()["state"] == "LIVE"
        assert (await http.get("/certs", headers=auth)).status_code == 200
        levels = (await http.get("/logging", headers=auth)).text
        assert "active loggers:" in levels and "  http: warning" in levels
        r = await http.post("/logging?level=debug", headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 200 and "  http: debug" in r.text
        assert "  http: debug" in (await http.get("/logging", headers=auth)).text
        # not on the list, even with the token
        for method, path in (("POST", "/quitquitquit"), ("GET", "/quitquitquit"),
                             ("POST", "/drain_listeners"), ("POST", "/runtime_modify?x=1"),
                             ("POST", "/healthcheck/fail"),
                             ("GET", "/config_dump/../quitquitquit")):
            r = await http.request(method, path, headers={**auth, "Content-Type": "application/json"})
            assert r.status_code in (404, 405), (method, path, r.status_code)
        r = await http.get("/config_dump?bogus=1", headers=auth)
        assert r.status_code == 400
        r = await http.post("/logging?level=debug;rm", headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        # writes follow the API's rules: JSON content type, same origin
        r = await http.post("/logging?level=info", headers={**auth, "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = await http.post("/logging?level=info", headers={**auth, "Content-Type": "application/json",
                                                            "Origin": "http://evil.example"})
        assert r.status_code == 403
    assert agent.running and agent.restarts == 0


@needs_root
async def test_nobody_reaches_no_admin(mesh: Mesh) -> None:  # noqa: F811
    agent = await mesh.sidecar("bookinfo", "ratings-v1-adm", {"app": "ratings"})
    assert agent.admin_proxy_url is not None
    answer = await request_as_nobody(f"{agent.admin_proxy_url}/config_dump")
    assert answer["status"] == 401, answer
    answer = await request_as_nobody(f"{agent.admin_proxy_url}/quitquitquit", "POST", "{}",
                                     {"Content-Type": "application/json"})
    assert answer["status"] == 401, answer
    answer = await request_as_nobody(f"http://{agent.spec.ip}:{STATS_PORT}/quitquitquit", "POST")
    assert answer["status"] == 404, answer
    assert await asyncio.to_thread(as_nobody, CONNECT_UNIX, str(agent.admin_socket)) == {
        "error": "PermissionError"}
    assert agent.running and agent.restarts == 0


def test_config_dump_secrets_are_redacted() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"
    dump = {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": [{
            "name": "kubernetes://bookinfo-cert",
            "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                       "name": "kubernetes://bookinfo-cert", "tls_certificate": {
                           "certificate_chain": {"inline_bytes": "Q0VSVA=="},
                           "private_key": {"inline_bytes": "S0VZ"},
                           "password": {"inline_string": "hunter2"}}}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": [{
            "listener": {"filter_chains": [{"transport_socket": {"typed_config": {
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": "/etc/certs/cert.pem"},
                                          "privateKey": {"inlineString": key}}],
                    "validation_context": {"trusted_ca": {"filename": "/etc/certs/ca.pem"}}},
                "session_ticket_keys": {"keys": [{"inline_bytes": "c2VjcmV0"}]}}}}]}}]},
    ]}
    out = json.dumps(redact_secrets(dump))
    for secret in ("S0VZ", "hunter2", "PRIVATE KEY", "c2VjcmV0"):
        assert secret not in out, secret
    assert out.count(REDACTED) == 4
    # what is not secret stays: names, file paths, certificates (public; `proxy-config secret` reads them)
    for kept in ("kubernetes://bookinfo-cert", "/etc/certs/cert.pem", "/etc/certs/ca.pem", "Q0VSVA=="):
        assert kept in out


async def test_a_long_work_dir_keeps_the_socket_inside_it(mesh: Mesh, tmp_path: Path) -> None:  # noqa: F811
    """A socket path longer than sun_path allows is bound relative to Envoy's working directory and reached
    through the agent's open directory fd: nothing is created elsewhere (no temp dir to leave behind)."""
    work = tmp_path / ("w" * 60) / ("x" * 60)
    spec = ProxySpec(ProxyType.SIDECAR, alloc_ip(), "bookinfo", "long-dir", xds_port=mesh.cp.xds_port,
                     http_proxy_port=15080)
    agent = Agent(spec, AgentOptions(work_dir=work, admin_token=mesh.cp.token, concurrency=1))
    await agent.start(ready_timeout=20)
    try:
        assert len(str(agent.admin_socket)) > 108 and stat.S_ISSOCK(agent.admin_socket.stat().st_mode)
        assert stat.S_IMODE(agent.admin_socket.stat().st_mode) == 0o600
        assert (await agent.admin_get("/ready")).strip() == "LIVE"
        assert agent.admin_proxy_url is not None
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            r = await http.get(f"{agent.admin_proxy_url}/server_info",
                               headers={"Authorization": f"Bearer {mesh.cp.token}"})
            assert r.status_code == 200 and r.json()["state"] == "LIVE"
            r = await http.get(f"http://{spec.ip}:{STATS_PORT}/stats/prometheus")
            assert r.status_code == 200 and "envoy_server_live" in r.text
    finally:
        await agent.stop()
    assert not agent.admin_socket.exists() and sorted(p.name for p in work.iterdir()) == [
        "envoy.json", "envoy.log", "envoy.out"]
