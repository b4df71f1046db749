"""The local gateways: Agents with proxy type ``router`` that look like Istio's demo-profile gateway pods in
``istio-system``: ``istio-ingressgateway`` (labels ``istio: ingressgateway``, ``app: istio-ingressgateway``)
and ``istio-egressgateway`` (``istio: egressgateway``, ``app: istio-egressgateway``; reached through its
Service :data:`EGRESS_SERVICE_YAML`, ports 80->8080 and 443->8443 like Istio's). Gateways written for port 80
or 8080 serve on ``port``, 443 on ``tls_port``, all bound on ``host`` (the proxy IP); other Gateway ports
bind as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentEvent, AgentOptions
from mizzen.core.proxy import ProxyType
from mizzen.runner.credentials import CredentialIssuer, with_identity
from mizzen.runner.manifests import pod_name, pod_template_hash

GATEWAY_NAME = "istio-ingressgateway"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_LABELS: Mapping[str, str] = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
EGRESS_NAME = "istio-egressgateway"
EGRESS_LABELS: Mapping[str, str] = {"istio": "egressgateway", "app": "istio-egressgateway"}
EGRESS_HTTP_PORT, EGRESS_TLS_PORT = 8080, 8443
# Istio's demo profile Service for the egress gateway (what mesh traffic is routed to)
EGRESS_SERVICE_YAML = f"""\
apiVersion: v1
kind: Service
metadata:
  name: {EGRESS_NAME}
  namespace: {GATEWAY_NAMESPACE}
  labels: {{app: {EGRESS_NAME}, istio: egressgateway}}
spec:
  selector: {{app: {EGRESS_NAME}, istio: egressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {EGRESS_HTTP_PORT}, protocol: TCP}}
  - {{name: https, port: 443, targetPort: {EGRESS_TLS_PORT}, protocol: TCP}}
"""


def gateway_ports(port: int, tls_port: int) -> dict[int, int]:
    """Gateway server port -> listen port (Istio's ingressgateway Service maps 80->8080 and 443->8443)."""
    return {80: port, 8080: port, 443: tls_port, 8443: tls_port}


def gateway_spec(
    host: str = "127.0.0.1",
    port: int = 8080,
    tls_port: int = 8443,
    xds_host: str = "127.0.0.1",
    xds_port: int = 15010,
    admin_host: str | None = None,
    admin_port: int = AGENT_ADMIN_PORT,
    name: str | None = None,
    namespace: str = GATEWAY_NAMESPACE,
    labels: Mapping[str, str] | None = None,
    deployment: str = GATEWAY_NAME,
) -> ProxySpec:
    """The gateway's proxy spec; ``name`` defaults to a pod name of ``deployment``."""
    name = name or pod_name(deployment, pod_template_hash({"gateway": deployment}))
    return ProxySpec(
        type=ProxyType.ROUTER,
        ip=host,
        namespace=namespace,
        name=name,
        admin_port=admin_port,
        admin_host=admin_host,
        xds_host=xds_host,
        xds_port=xds_port,
        labels=dict(labels or GATEWAY_LABELS),
        service_account=f"{deployment}-service-account",
        http_proxy_port=0,
        gateway_ports=gateway_ports(port, tls_port),
    )


async def start_gateway(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    tls_port: int = 8443,
    xds_host: str = "127.0.0.1",
    xds_port: int = 15010,
    admin_host: str | None = None,
    admin_port: int = AGENT_ADMIN_PORT,
    options: AgentOptions | None = None,
    on_event: Callable[[AgentEvent], None] | None = None,
    ready_timeout: float | None = 30.0,
    deployment: str = GATEWAY_NAME,
    labels: Mapping[str, str] | None = None,
    credentials: CredentialIssuer | None = None,
    ca_address: str | None = None,
) -> Agent:
    """Start the gateway Envoy; returns its running, supervised Agent (``await agent.stop()``). With
    ``credentials`` and ``ca_address`` the gateway pod gets its credential and identity like a sidecar
    (gateways are proxies with identities: ``<deployment>-service-account`` in ``istio-system``)."""
    spec = gateway_spec(host, port, tls_port, xds_host, xds_port, admin_host, admin_port, labels=labels,
                        deployment=deployment)
    if credentials is not None and ca_address is not None:
        options = with_identity(options or AgentOptions(), credentials, ca_address, spec.namespace, spec.name,
                                spec.service_account)
    agent = Agent(spec, options, on_event)
    await agent.start(ready_timeout=ready_timeout)
    return agent
