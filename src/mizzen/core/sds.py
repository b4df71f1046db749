"""SDS from the control plane (istiod's SecretGen) for gateway ``credentialName``: Kubernetes Secrets turned
into Envoy ``Secret`` resources named ``kubernetes://<name>`` (certificate and key) and
``kubernetes://<name>-cacert`` (the CA that MUTUAL servers check client certificates against).

A gateway proxy gets only Secrets of its own namespace (as istiod authorizes SDS requests by the proxy's
namespace), and only those its Gateway servers name (:mod:`mizzen.core.gateway_credentials` resolves them;
the gateway listener builder leaves out a server whose credential cannot be served, so no listener waits
for a Secret that does not exist), plus those its clusters' DestinationRule ``tls.credentialName`` name
(:mod:`mizzen.core.upstream_credentials`). Pure: config in, protobuf out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

from mizzen.config import kinds
from mizzen.core.gateway_credentials import SDS_MODES, credential
from mizzen.core.gateway_listeners import gateway_servers
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.core.upstream_credentials import upstream_credentials, upstream_secrets
from mizzen.xds.resources import SECRET

__all__ = ["SecretGenerator", "build_secrets"]


def _gateway_credentials(proxy: Proxy, push: PushContext) -> tuple[tuple[str, str], ...]:
    """(credentialName, mode) of every terminating server of the Gateways selecting the proxy."""
    out: set[tuple[str, str]] = set()
    for s in gateway_servers(proxy, push):
        name = str(s.tls.get("credentialName") or "") if s.server.get("tls") else ""
        if name and s.tls_mode in SDS_MODES:
            out.add((name, s.tls_mode))
    return tuple(sorted(out))


def build_secrets(proxy: Proxy, push: PushContext) -> dict[str, Message]:
    """Every SDS resource the proxy's Gateway servers and DestinationRules name that its namespace holds."""
    out: dict[str, Message] = {}
    if not proxy.is_gateway:
        return out
    out.update(upstream_secrets(proxy, push))
    for name, mode in _gateway_credentials(proxy, push):
        cred = credential(push, proxy.namespace, name, mode)
        if cred.info is None or cred.problem:   # the listener leaves that server out
            continue
        cert = secret_pb2.Secret(name=cred.cert_resource)
        cert.tls_certificate.certificate_chain.inline_bytes = cred.info.cert
        cert.tls_certificate.private_key.inline_bytes = cred.info.key
        out[cert.name] = cert
        if cred.ca:
            ca = secret_pb2.Secret(name=cred.ca_resource)
            ca.validation_context.trusted_ca.inline_bytes = cred.ca
            out[ca.name] = ca
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class SecretGenerator:
    """The SDS generator of the push table (``core.generate.register(SecretGenerator())``)."""

    type_url: str = SECRET
    short: str = "SDS"
    names_from: None = None

    @property
    def reads(self) -> frozenset[str]:
        return frozenset(k.kind for k in kinds.ALL_KINDS if self.short in k.read_by)

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        if not proxy.is_gateway:
            return None
        return (proxy.namespace, _gateway_credentials(proxy, push), upstream_credentials(proxy, push))

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        key = self.proxy_key(proxy, push)
        if key is None:
            return {}
        return push.memoized(("SDS*", key), lambda: build_secrets(proxy, push))
