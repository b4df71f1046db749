"""The validating webhook on a real API server: the control plane serves ``/validate`` over HTTPS with the
mesh CA's certificate on the host's end of the cluster's bridge, and Istio's ``istiod-default-validator``
(a ``url:`` client config, as for a control plane outside the cluster) sends it every create/update of
Istio's kinds. Before the control plane answers, the webhook fails open (``Ignore``, as installed); once the
patcher has written the caBundle and seen an invalid Gateway refused it flips to ``Fail``: invalid
VirtualService / DestinationRule / Gateway objects are refused by ``kubectl apply`` with the lines
``mizzen validate`` prints (minus ``file:line``), warnings reach kubectl, valid ones are stored and reach the
control plane, and with the control plane stopped nothing gets through."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mizzen.cli.main import app
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.mesh import MeshConfig
from mizzen.kube.inject.webhook import mutating_webhook_configuration
from mizzen.kube.webhooks.configuration import DEFAULT_VALIDATOR_NAME, validator_name
from mizzen.kube.webhooks.configuration import default_validating_webhook_configuration as default_validator
from mizzen.kube.webhooks.configuration import validating_webhook_configuration as rev_validator

pytestmark = pytest.mark.e2e

NS, SYSTEM, REVISION = "mzwh", "mzwh-system", "mzwh"

INVALID = {
    "VirtualService": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: bad-vs}
        spec:
          hosts: [reviews]
          http: [{route: [{destination: {host: reviews}, weight: 200}]}]
        """,
    "DestinationRule": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: bad-dr}
        spec:
          host: reviews
          trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}
        """,
    "Gateway": """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: bad-gw}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: []}]
        """,
}
VALID = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: NAME}
    spec:
      hosts: [reviews]
      http: [{route: [{destination: {host: reviews}}]}]
    """
WITH_WARNING = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: warned}
    spec:
      hosts: [ratings]
      http: [{route: [{destination: {host: ratings}}]}, {route: [{destination: {host: ratings}}]}]
    """


# istiod's Service for a control plane outside the cluster: no selector, its endpoint the host's bridge
# address
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: istiod-mzwh}
spec: {ports: [{name: https-webhook, port: 443, targetPort: PORT}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: istiod-mzwh}
subsets: [{addresses: [{ip: HOST}], ports: [{name: https-webhook, port: PORT}]}]
"""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def kubectl(cluster: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl off the event loop (the webhook it calls runs on this loop)."""
    argv = [str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args]
    return await asyncio.to_thread(subprocess.run, argv, input=stdin, capture_output=True, text=True,
                                   timeout=60)


async def apply(cluster: Any, text: str) -> subprocess.CompletedProcess[str]:
    return await kubectl(cluster, "apply", "-n", NS, "-f", "-", stdin=textwrap.dedent(text))


def mizzen_validate_lines(tmp: Path, kind: str, text: str) -> list[str]:
    """What ``mizzen validate`` prints for the object, without its ``file:line: `` prefix."""
    path = tmp / f"{kind}.yaml"
    path.write_text(textwrap.dedent(text))
    r = CliRunner().invoke(app, ["validate", "-n", NS, "-f", str(path)])
    assert r.exit_code == 1, r.output
    lines = [ln.split(": ", 1)[1] for ln in r.output.splitlines() if ln.startswith(str(path))]
    assert lines, r.output
    return lines


async def webhook_config(cluster: Any, name: str = DEFAULT_VALIDATOR_NAME) -> dict[str, Any]:
    r = await kubectl(cluster, "get", "validatingwebhookconfiguration", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout)["webhooks"][0])


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.2)


async def test_kubectl_apply_is_validated_by_the_webhook(kube_cluster: Any, tmp_path: Path) -> None:
    host = kube_cluster.net.addr.host_ip
    port = _free_port(host)
    vwc = default_validator(SYSTEM, REVISION, url=f"https://{host}:{port}/validate")
    expected = {kind: mizzen_validate_lines(tmp_path, kind, text) for kind, text in INVALID.items()}
    for ns in (NS, SYSTEM):
        await kubectl(kube_cluster, "create", "namespace", ns)
    created = await kubectl(kube_cluster, "create", "-f", "-", stdin=json.dumps(vwc))
    assert created.returncode == 0, created.stderr
    # the revision's injector too (only its rev.* webhooks: they match nothing outside this test)
    mwc = mutating_webhook_configuration(REVISION, namespace=SYSTEM)
    mwc["webhooks"] = [h for h in mwc["webhooks"] if h["name"].startswith("rev.")]
    for h in mwc["webhooks"]:
        h["clientConfig"] = {"url": f"https://{host}:{port}/inject"}
    created = await kubectl(kube_cluster, "create", "-f", "-", stdin=json.dumps(mwc))
    assert created.returncode == 0, created.stderr
    try:
        # installed fail-open: with no control plane answering, even an invalid object gets through
        hook = await webhook_config(kube_cluster)
        assert hook["failurePolicy"] == "Ignore" and "caBundle" not in hook["clientConfig"]
        r = await apply(kube_cluster, INVALID["VirtualService"])
        assert r.returncode == 0, r.stderr
        await kubectl(kube_cluster, "delete", "-n", NS, "virtualservice", "bad-vs")

        opts = ControlPlaneOptions(kubeconfig=kube_cluster.kubeconfig, xds_port=0, xds_tls_port=0,
                                   http_port=None, webhook_port=port, webhook_host=host, revision=REVISION,
                                   mesh=MeshConfig(root_namespace=SYSTEM))
        cp = ControlPlane(opts)
        await cp.start()
        try:
            async def fail_closed() -> bool:
                hook = await webhook_config(kube_cluster)
                return hook["failurePolicy"] == "Fail" and "caBundle" in hook["clientConfig"]

            await until(fail_closed, 20, "failurePolicy Fail with the caBundle")
            assert cp.identity is not None
            patched = (await webhook_config(kube_cluster))["clientConfig"]["caBundle"]
            bundle = base64.b64decode(patched).decode()
            assert bundle == cp.identity.ca.trust_bundle.pem

            async def injector_patched() -> bool:
                r = await kubectl(kube_cluster, "get", "mutatingwebhookconfiguration",
                                  mwc["metadata"]["name"], "-o", "json")
                hooks = json.loads(r.stdout)["webhooks"] if r.returncode == 0 else []
                # the injector gets the roots; its failure policy stays the chart's
                return bool(hooks) and all(h["clientConfig"].get("caBundle") == patched
                                           and h["failurePolicy"] == "Fail" for h in hooks)

            await until(injector_patched, 20, "the injector's caBundle patched")

            for kind, text in INVALID.items():
                r = await apply(kube_cluster, text)
                assert r.returncode != 0, f"{kind} accepted: {r.stdout}"
                assert 'admission webhook "validation.istio.io" denied the request' in r.stderr, r.stderr
                for line in expected[kind]:
                    assert line in r.stderr, (line, r.stderr)
            listed = await kubectl(kube_cluster, "get", "-n", NS, "virtualservices,destinationrules,gateways",
                                   "-o", "name")
            assert listed.stdout.strip() == "", listed.stdout

            r = await apply(kube_cluster, VALID.replace("NAME", "good"))
            assert r.returncode == 0, r.stderr
            r = await apply(kube_cluster, WITH_WARNING)
            assert r.returncode == 0, r.stderr
            assert "Warning:" in r.stderr and "[IST0130]" in r.stderr, r.stderr

            async def stored() -> bool:
                return cp.store.get("VirtualService", NS, "good") is not None

            await until(stored, 10, "the valid VirtualService in the control plane's store")
            # an update is validated too
            heavy = VALID.replace("NAME", "good").replace("{host: reviews}", "{host: reviews}, weight: 300")
            r = await apply(kube_cluster, heavy)
            assert r.returncode != 0 and "must be 0..100" in r.stderr, r.stderr
            # istiod's webhook metrics
            metrics = cp.metrics.exposition().decode()
            vs = 'group="networking.istio.io",resource="virtualservices",version="v1"'
            assert f'galley_validation_passed{{{vs}}} 2.0' in metrics, metrics
            assert ('galley_validation_failed{group="networking.istio.io",reason="invalid_resource",'
                    'resource="virtualservices",version="v1"} 2.0') in metrics

            # the Service form (a control plane in the cluster): istiod.<ns>.svc:443 -> its endpoint
            await kubectl(kube_cluster, "delete", "validatingwebhookconfiguration", DEFAULT_VALIDATOR_NAME)
            r = await kubectl(kube_cluster, "apply", "-n", SYSTEM, "-f", "-",
                              stdin=SERVICE.replace("HOST", host).replace("PORT", str(port)))
            assert r.returncode == 0, r.stderr
            service_form = json.dumps(rev_validator(SYSTEM, REVISION))
            r = await kubectl(kube_cluster, "create", "-f", "-", stdin=service_form)
            assert r.returncode == 0, r.stderr

            async def rev_patched() -> bool:
                hook = await webhook_config(kube_cluster, validator_name(SYSTEM, REVISION))
                return hook["failurePolicy"] == "Fail" and hook["clientConfig"].get("caBundle") == patched

            await until(rev_patched, 20, "the revision's validator patched")
            mine = f"labels: {{istio.io/rev: {REVISION}}}"
            labelled = INVALID["VirtualService"].replace("{name: bad-vs}", f"{{name: bad-vs, {mine}}}")
            r = await apply(kube_cluster, labelled)
            assert r.returncode != 0, r.stdout
            assert 'admission webhook "rev.validation.istio.io" denied the request' in r.stderr, r.stderr
            assert expected["VirtualService"][0] in r.stderr, r.stderr
            # that webhook only sees its revision's objects (the default validator is gone)
            r = await apply(kube_cluster, INVALID["VirtualService"])
            assert r.returncode == 0, r.stderr
        finally:
            await cp.stop()

        # fail-closed: with the webhook down nothing of its objects is admitted, valid or not
        r = await apply(kube_cluster, VALID.replace("NAME", "while-down").replace(
            "{name: while-down}", f"{{name: while-down, {mine}}}"))
        assert r.returncode != 0 and "failed calling webhook" in r.stderr, r.stderr
        # other kinds are not the webhook's business
        r = await kubectl(kube_cluster, "create", "configmap", "-n", NS, "unrelated")
        assert r.returncode == 0, r.stderr
    finally:
        await kubectl(kube_cluster, "delete", "validatingwebhookconfiguration", DEFAULT_VALIDATOR_NAME,
                      validator_name(SYSTEM, REVISION), "--ignore-not-found")
        await kubectl(kube_cluster, "delete", "mutatingwebhookconfiguration", mwc["metadata"]["name"],
                      "--ignore-not-found")
        # the objects now, so no config event of this test lands in a later one; the namespaces in background
        await kubectl(kube_cluster, "delete", "-n", NS, "virtualservices,destinationrules,gateways", "--all")
        with contextlib.suppress(Exception):
            for ns in (NS, SYSTEM):
                await kubectl(kube_cluster, "delete", "namespace", ns, "--wait=false")
