"""The control plane's API is locked: a token file only its owner reads, and without the token nobody (the
``nobody`` user, a web page) reads config, writes config or registers workloads; writes with the token are
still refused cross-site (foreign Origin, non-JSON body) and under a rebound DNS name (Host)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest
from auth_helpers import CONNECT_UNIX, READ, as_nobody, needs_root, request_as_nobody, traversable_dir

from mizzen.auth.token import ensure_token, find_token, token_matches
from mizzen.client import ControlPlaneClient, Document
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.runner.addresses import AddressPool

HOST = "127.0.96.1"
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: pwn, namespace: default}
spec:
  selector: {matchLabels: {app: pwn}}
  template:
    metadata: {labels: {app: pwn}}
    spec: {containers: [{name: c, image: x, command: ["touch", "/tmp/pwned"]}]}
"""
WORKLOAD = {"name": "thief", "namespace": "bookinfo", "address": "127.0.96.9", "labels": {"app": "reviews"}}
JSON = {"Content-Type": "application/json"}


def _options(state: Path) -> ControlPlaneOptions:
    return ControlPlaneOptions(state_dir=state, xds_host=HOST, xds_port=0, http_host=HOST, http_port=0,
                               debounce_quiet_s=0.01, debounce_max_s=0.05)


def test_token_file_is_private_atomic_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token"
    token = ensure_token(path)
    assert len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == token                      # created once, then read back
    assert [p.name for p in path.parent.iterdir()] == ["token"]   # no temp file left
    path.chmod(0o644)
    assert ensure_token(path) == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_matches(token, token) and not token_matches(token[:-1] + "x", token)
    assert not token_matches(None, token) and not token_matches("", token)


def test_client_finds_the_token_like_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    path = tmp_path / "token"
    token = ensure_token(path)
    mp.delenv("MIZZEN_TOKEN", raising=False)
    mp.delenv("MIZZEN_TOKEN_FILE", raising=False)
    mp.setenv("MIZZEN_STATE_DIR", str(tmp_path))
    assert find_token().token == token
    mp.setenv("MIZZEN_TOKEN", "from-the-environment")
    assert find_token().token == "from-the-environment"
    mp.delenv("MIZZEN_TOKEN")
    mp.setenv("MIZZEN_STATE_DIR", str(tmp_path / "empty"))
    missing = find_token()
    assert missing.token is None and str(tmp_path / "empty" / "token") in missing.looked


@needs_root
async def test_nobody_cannot_read_the_token_nor_use_the_api() -> None:
    with traversable_dir() as state:
        async with ControlPlane(_options(state)) as cp:
            token_file = state / "token"
            assert cp.token_file == token_file and stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert as_nobody(READ, str(token_file)) == {"error": "PermissionError"}
            assert as_nobody(READ, str(state / "missing")) == {"error": "FileNotFoundError"}  # dir is open
            url = cp.http_url
            refused = {
                "read config": await request_as_nobody(f"{url}/apis/objects"),
                "read dumps": await request_as_nobody(f"{url}/debug/config_dump?proxyID=x"),
                "read registry": await request_as_nobody(f"{url}/debug/registryz"),
                "apply a Deployment": await request_as_nobody(
                    f"{url}/apis/apply", "POST", json.dumps({"documents": [{"text": DEPLOYMENT}]}), JSON),
                "register a workload": await request_as_nobody(f"{url}/apis/workloads", "POST",
                                                         json.dumps(WORKLOAD), JSON),
                "guess a token": await request_as_nobody(f"{url}/apis/objects", headers={
                    "Authorization": "Bearer " + "A" * 43}),
            }
            for what, answer in refused.items():
                assert answer["status"] == 401, (what, answer)
                error = json.loads(answer["body"])["error"]
                assert "\n" not in error and str(token_file) in error, (what, error)
                assert cp.token not in answer["body"]
            assert len(cp.store) == 0 and not cp.registry.workloads()
            # readiness, version and metrics stay open
            assert (await request_as_nobody(f"{url}/ready"))["status"] == 200
            assert (await request_as_nobody(f"{url}/version"))["status"] == 200


async def test_writes_need_json_same_origin_and_a_served_host(tmp_path: Path) -> None:
    async with ControlPlane(_options(tmp_path)) as cp, httpx.AsyncClient(
            base_url=cp.http_url, trust_env=False, headers={"Authorization": f"Bearer {cp.token}"}) as api:
        body = json.dumps({"documents": [{"text": DEPLOYMENT}]})
        r = await api.post("/apis/apply", content=body, headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await api.post("/apis/apply", content=body, headers=form)
        assert r.status_code == 415
        r = await api.post("/apis/apply", content=body, headers={**JSON, "Origin": "http://evil.example"})
        assert r.status_code == 403 and "Origin" in r.json()["error"]
        r = await api.post("/apis/apply", content=body, headers={**JSON, "Origin": "null"})
        assert r.status_code == 403
        r = await api.delete("/apis/workloads/default/x", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        # DNS rebinding: the right address, but the page's own host name in Host
        port = cp.http_port
        r = await api.get("/apis/objects", headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 403 and "Host" in r.json()["error"]
        r = await api.get("/apis/objects", headers={"Host": f"{HOST}:{port + 1}"})
        assert r.status_code == 403
        assert len(cp.store) == 0
        # the same request, same-origin and JSON, goes through; so does Host: localhost on loopback
        r = await api.post("/apis/apply", content=body, headers={**JSON, "Origin": cp.http_url})
        assert r.status_code == 200, r.text
        r = await api.get("/apis/objects", headers={"Host": f"localhost:{port}"})
        assert r.status_code == 200 and [i["metadata"]["name"] for i in r.json()["items"]] == ["pwn"]


async def test_workload_registration_is_validated_and_never_pushed(tmp_path: Path) -> None:
    async with ControlPlane(_options(tmp_path)) as cp, httpx.AsyncClient(
            base_url=cp.http_url, trust_env=False, headers={"Authorization": f"Bearer {cp.token}"}) as api:
        bad = [
            ({"address": "999.999.1.1"}, "not an IP address"),
            ({"address": "reviews.example.com"}, "not an IP address"),
            ({"ports": {"http": True}}, "ports.http"),
            ({"ports": {"http": 0}}, "ports.http"),
            ({"ports": {"http": 65536}}, "ports.http"),
            ({"ports": {"http": "9080"}}, "ports.http"),
        ]
        for change, why in bad:
            r = await api.post("/apis/workloads", json={**WORKLOAD, **change})
            assert r.status_code == 400 and why in r.json()["error"], (change, r.text)
        assert not cp.registry.workloads()
        assert not [f for f in (tmp_path / "workloads").rglob("*") if f.is_file()]
        r = await api.post("/apis/workloads", json={**WORKLOAD, "ports": {"http": 9080}})
        assert r.status_code == 200, r.text
        assert [w.address for w in cp.registry.workloads()] == ["127.0.96.9"]

        # an embedder that runs the workloads (mizzen demo) accepts only the pod IPs its runner allocated
        pool = AddressPool("127.96.0.0/16", "127.97.0.0/16")
        cp.api.workload_address_check = lambda a: None if pool.allocated(a) else f"{a} not allocated here"
        r = await api.post("/apis/workloads", json={**WORKLOAD, "name": "other", "address": "127.96.0.1"})
        assert r.status_code == 403 and "not allocated" in r.json()["error"]
        addrs = pool.allocate(())
        r = await api.post("/apis/workloads", json={**WORKLOAD, "name": "mine", "address": addrs.pod_ip})
        assert r.status_code == 200, r.text
        assert sorted(w.name for w in cp.registry.workloads()) == ["mine", "thief"]


@needs_root
async def test_the_api_socket_is_for_its_owner_only() -> None:
    with traversable_dir() as state:
        opts = _options(state)
        opts.api_socket = state / "api.sock"
        async with ControlPlane(opts) as cp:
            assert stat.S_IMODE(opts.api_socket.stat().st_mode) == 0o600
            # the owner: no token needed (the file permissions are the credential), JSON still required
            owner = ControlPlaneClient(f"unix://{opts.api_socket}")
            assert owner.token_source.token is None
            results = await asyncio.to_thread(owner.apply, [Document("pwn.yaml", DEPLOYMENT)])
            assert results.results == [{"kind": "Deployment", "namespace": "default", "name": "pwn",
                                        "action": "created"}]
            assert [d["metadata"]["name"] for d in await asyncio.to_thread(owner.objects, "Deployment")] == [
                "pwn"]
            # another user cannot even connect
            answer = await asyncio.to_thread(as_nobody, CONNECT_UNIX, str(opts.api_socket))
            assert answer == {"error": "PermissionError"}, answer
            assert len(cp.store) == 1
        assert not opts.api_socket.exists()            # removed on stop
