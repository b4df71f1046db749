"""What a gateway ``credentialName`` resolves to in the gateway's namespace (istiod's GetKeyAndCert and
GetCaCert over Kubernetes Secrets), and the SDS config source a listener names it with. Shared by the gateway
listener builder (a server whose credential cannot be served is left out, with the reason) and the SDS
generator (:mod:`mizzen.core.sds`). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import config_source_pb2

from mizzen.config import credentials
from mizzen.core.push_context import PushContext

__all__ = ["SDS_MODES", "Credential", "ads_sds_config", "credential", "needs_ca"]

# Gateway server TLS modes that terminate TLS with a certificate (and so may name a credential)
SDS_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"})


def needs_ca(mode: str) -> bool:
    return mode in ("MUTUAL", "OPTIONAL_MUTUAL")


@dataclass(frozen=True)
class Credential:
    """What a ``credentialName`` resolves to in a namespace: the PEM parts, or why it cannot be served."""

    name: str
    info: credentials.CertInfo | None = None
    ca: bytes = b""
    problem: str = ""

    @property
    def cert_resource(self) -> str:
        return credentials.sds_name(self.name)

    @property
    def ca_resource(self) -> str:
        return credentials.sds_name(self.name, ca=True)


def credential(push: PushContext, namespace: str, name: str, mode: str) -> Credential:
    """Resolve ``name`` in ``namespace`` (istiod's GetKeyAndCert, and GetCaCert for MUTUAL modes)."""
    def memo() -> Credential:
        secret = push.configs.get("Secret", namespace, name)
        if secret is None:
            return Credential(name, problem=f"credentialName {name!r}: no Secret {namespace}/{name}")
        try:
            data = credentials.secret_data(secret)
            info = credentials.cert_info(data)
        except credentials.CredentialError as e:
            return Credential(name, problem=f"credentialName {name!r}: Secret {namespace}/{name}: {e}")
        ca = b""
        if needs_ca(mode):
            ca_secret = push.configs.get("Secret", namespace, name + credentials.CA_SUFFIX) or secret
            try:
                ca = credentials.root_cert(credentials.secret_data(ca_secret))
            except credentials.CredentialError as e:
                return Credential(name, info, problem=f"credentialName {name!r}: {mode} needs a CA (Secret "
                                                      f"{namespace}/{name}{credentials.CA_SUFFIX}, or key "
                                                      f"cacert/ca.crt in {namespace}/{name}): {e}")
        return Credential(name, info, ca)
    return push.memoized(("sds-credential", namespace, name, needs_ca(mode)), memo)


def ads_sds_config() -> config_source_pb2.ConfigSource:
    """Istio's SDSAdsConfig: over the ADS stream, no initial_fetch_timeout override."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


