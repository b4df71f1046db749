"""The ``mizzen`` command with a locked control plane: it finds the token like a user's shell would (state
dir, ``--token-file``, ``$MIZZEN_TOKEN``) and says clearly when it has none or the wrong one; ``proxy-config``
reaches a proxy through its agent's admin proxy (found from the registered workloads, never from what a proxy
claims about itself) and shows Envoy's live view: an outlier-ejected endpoint, log levels, the bootstrap."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import yaml

from harness import Mesh, eventually, mesh  # noqa: F401
from mizzen.admin_client import AdminTarget, parse_admin_target
from mizzen.registry.model import Workload

MIZZEN = str(Path(sys.executable).parent / "mizzen")
NS = "shop"
SERVICE_AND_DR = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 3m, maxEjectionPercent: 100}
"""


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _env(server: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIZZEN_")}
    return {**base, "MIZZEN_SERVER": server, **extra}


def test_admin_addresses_accept_sockets_host_port_and_urls() -> None:
    assert parse_admin_target("/run/x/admin.sock") == AdminTarget(socket="/run/x/admin.sock")
    assert parse_admin_target("unix:///run/x/admin.sock") == AdminTarget(socket="/run/x/admin.sock")
    assert parse_admin_target("127.20.0.5:15004") == AdminTarget(url="http://127.20.0.5:15004")
    assert parse_admin_target("http://127.20.0.5:15004/") == AdminTarget(url="http://127.20.0.5:15004")
    for bad in ("127.20.0.5", "ftp://x:1", "host:99999", ":15004"):
        try:
            parse_admin_target(bad)
            raise AssertionError(bad)
        except ValueError as e:
            assert "host:port" in str(e)


async def test_token_missing_wrong_or_found(mesh: Mesh, tmp_path: Path) -> None:  # noqa: F811
    server = mesh.cp.http_url
    empty = tmp_path / "empty"
    rc, out, err = await _cli("get", "vs", "-A", env=_env(server, MIZZEN_STATE_DIR=str(empty)))
    assert rc == 1 and err.count("\n") == 1, err
    assert f"the control plane at {server} needs an API token and none was found" in err
    assert str(empty / "token") in err and "--token-file" in err
    rc, out, err = await _cli("get", "vs", "-A", env=_env(server, MIZZEN_TOKEN="x" * 43))
    assert rc == 1 and "refused the API token from $MIZZEN_TOKEN" in err and "x" * 43 not in err, err
    # the token file of this control plane, as a user of another state dir would pass it
    token_file = tmp_path / "cp-token"
    token_file.write_text(mesh.cp.token + "\n")
    token_file.chmod(0o600)
    rc, out, err = await _cli("--token-file", str(token_file), "get", "vs", "-A",
                              env=_env(server, MIZZEN_STATE_DIR=str(empty)))
    assert rc == 0 and "No resources found" in out + err, (out, err)
    rc, out, err = await _cli("get", "vs", "-A", env=_env(server, MIZZEN_STATE_DIR=str(tmp_path),
                                                          MIZZEN_TOKEN_FILE=str(token_file)))
    assert rc == 0, err
    # the version stays open, like istiod's
    rc, out, err = await _cli("version", env=_env(server, MIZZEN_STATE_DIR=str(empty)))
    assert "control plane version:" in out, (out, err)


async def test_proxy_config_goes_through_the_agent(mesh: Mesh) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICE_AND_DR, namespace=NS)
    good = await mesh.backend("web", "v1", namespace=NS, port=9080, labels={"app": "web"})
    bad = await mesh.backend("web", "v2", namespace=NS, port=9080, labels={"app": "web"})
    client = await mesh.sidecar(NS, "client-pc", {"app": "client"})
    # registered by its runner (with the token): that is where proxy-config finds the pod's agent
    mesh.cp.register_workload(Workload(name="client-pc", namespace=NS, address=client.spec.ip,
                                       labels={"app": "client"}))
    await mesh.wait_synced()
    bad.fail(503)

    async def bad_one_ejected() -> None:
        # Envoy merges host updates for up to a second (update_merge_window): until then only one host
        async with mesh.client_via(client) as http:
            await http.get("http://web:9080/")          # retried on the other endpoint when it hits bad
        assert bad.requests >= 1

    await eventually(bad_one_ejected, timeout=10, interval=0.1)
    env = _env(mesh.cp.http_url, MIZZEN_TOKEN=mesh.cp.token)

    rc, out, err = await _cli("proxy-config", "endpoints", "client-pc", "--cluster", "web", env=env)
    assert rc == 0 and err == "", err
    rows = {r.split()[0]: r.split()[1:3] for r in out.splitlines()[1:]}
    assert rows == {f"{good.ip}:9080": ["HEALTHY", "OK"], f"{bad.ip}:9080": ["HEALTHY", "FAILED"]}, out
    rc, out, err = await _cli("proxy-config", "endpoints", "client-pc", "-o", "json", env=env)
    assert rc == 0 and any(c["name"].endswith("web.shop.svc.cluster.local") for c in json.loads(out)), err

    rc, out, err = await _cli("proxy-config", "log", "client-pc", "--level", "debug", env=env)
    assert rc == 0 and out.startswith("active loggers:") and "  http: debug" in out, (out, err)
    rc, out, err = await _cli("proxy-config", "log", "client-pc", "--admin", str(client.admin_socket),
                              env=env)
    assert rc == 0 and "  http: debug" in out, (out, err)
    rc, out, err = await _cli("proxy-config", "log", "client-pc", "--level", "loud", env=env)
    assert rc == 1 and "unknown log level 'loud'" in err and "Traceback" not in err, err

    rc, out, err = await _cli("proxy-config", "bootstrap", "client-pc", "-o", "yaml", env=env)
    boot = yaml.safe_load(out)
    assert rc == 0 and boot["bootstrap"]["node"]["id"] == client.node_id, err
    assert boot["bootstrap"]["admin"]["address"]["pipe"]["path"] == str(client.admin_socket)

    rc, out, err = await _cli("proxy-config", "all", "client-pc", env=env)
    assert rc == 0, err
    headers = [line for line in out.splitlines() if re.match(r"^[A-Z][A-Z ]+[A-Z]$", line.strip())]
    assert [h.split("   ")[0] for h in headers] == ["SERVICE FQDN", "ADDRESS", "NAME", "ENDPOINT"], out
    rc, out, err = await _cli("proxy-config", "all", "client-pc", "-o", "json", env=env)
    assert rc == 0 and {c["@type"].rsplit(".", 1)[1] for c in json.loads(out)["configs"]} >= {
        "BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"}

    # a proxy no runner registered: its admin is unknown, and what it claims about itself is not trusted
    stray = await mesh.sidecar(NS, "stray-pc", {"app": "stray"})
    await mesh.wait_synced()
    rc, out, err = await _cli("proxy-config", "log", "stray-pc", env=env)
    assert rc == 1 and "no admin address known for stray-pc.shop" in err and "--admin" in err, err
    rc, out, err = await _cli("proxy-config", "endpoints", "stray-pc", "--cluster", "web", env=env)
    assert rc == 0 and "control plane's EDS view" in err and f"{bad.ip}:9080   HEALTHY   -" in out, (out, err)
    assert stray.admin_proxy_url is not None
    rc, out, err = await _cli("proxy-config", "endpoints", "stray-pc", "--admin",
                              stray.admin_proxy_url.removeprefix("http://"), env=env)
    assert rc == 0 and "OUTLIER CHECK" in out and err == "", err
    rc, out, err = await _cli("proxy-config", "endpoints", "stray-pc", "--admin", stray.admin_proxy_url,
                              env=_env(mesh.cp.http_url, MIZZEN_TOKEN=mesh.cp.token[::-1]))
    assert rc == 1 and "refused the API token" in err, err
