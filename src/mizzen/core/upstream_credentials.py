"""DestinationRule ``tls.credentialName`` at gateways (Istio's ClientTLSSettings.credentialName): TLS
origination with the client certificate (MUTUAL) and the CA from a Kubernetes Secret of the gateway's own
namespace, over SDS on the ADS stream, as Istio's ``ApplyCustomSDSToClientCommonTLSContext`` and SecretGen.

- The cluster's UpstreamTlsContext names ``kubernetes://<name>`` (certificate and key, MUTUAL only) and
  ``kubernetes://<name>-cacert`` (the CA, unless ``insecureSkipVerify``), with ``sni`` and
  ``subjectAltNames`` as the certificate-file path has them. The cluster depends only on the names, never on
  the Secret: a missing or unusable Secret leaves the cluster waiting for its secret (TLS that fails), never
  plaintext, and the proxy's generation warnings say why (:func:`credential_problems`).
- The SDS generator (:mod:`mizzen.core.sds`) serves those names to the gateway from its namespace only
  (:func:`upstream_secrets`). A CA alone is enough for SIMPLE: a ``<name>-cacert`` Secret or ``cacert`` /
  ``ca.crt`` in ``<name>``.

Sidecars ignore ``credentialName`` (Istio honours it there only with a DestinationRule workloadSelector,
which Mizzen does not support; validation warns). Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.message import Message

from mizzen.config import credentials
from mizzen.config.model import Config
from mizzen.core.gateway_credentials import ads_sds_config
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Protocol

__all__ = ["UpstreamCredential", "credential_context", "credential_problems", "upstream_credentials",
           "upstream_secrets"]

MODES = frozenset({"SIMPLE", "MUTUAL"})


def credential_context(tls: Mapping[str, Any], sni: str,
                       protocol: Protocol | None) -> tls_pb2.UpstreamTlsContext:
    """The client TLS context of a gateway cluster whose DestinationRule ``tls`` names a credential."""
    name = str(tls["credentialName"])
    ctx = tls_pb2.UpstreamTlsContext(sni=sni)
    common = ctx.common_tls_context
    if protocol is not None and protocol.is_http2:
        common.alpn_protocols.append("h2")
    if tls.get("mode") == "MUTUAL":
        common.tls_certificate_sds_secret_configs.append(
            secret_pb2.SdsSecretConfig(name=credentials.sds_name(name), sds_config=ads_sds_config()))
    if not tls.get("insecureSkipVerify"):
        combined = common.combined_validation_context
        combined.default_validation_context.SetInParent()
        for san in tls.get("subjectAltNames") or ():
            for typ in (common_pb2.SubjectAltNameMatcher.DNS, common_pb2.SubjectAltNameMatcher.URI):
                combined.default_validation_context.match_typed_subject_alt_names.append(
                    common_pb2.SubjectAltNameMatcher(san_type=typ,
                                                     matcher=string_pb2.StringMatcher(exact=str(san))))
        combined.validation_context_sds_secret_config.CopyFrom(
            secret_pb2.SdsSecretConfig(name=credentials.sds_name(name, ca=True), sds_config=ads_sds_config()))
    return ctx


def _policies(dr: Config) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, tls) of every traffic policy of a DestinationRule (top level, port level, subsets)."""
    spec = dr.spec
    parts: list[tuple[str, Any]] = [("spec.trafficPolicy", spec.get("trafficPolicy"))]
    for sub in spec.get("subsets") or ():
        if isinstance(sub, Mapping):
            parts.append((f"spec.subsets[{sub.get('name')}].trafficPolicy", sub.get("trafficPolicy")))
    for where, tp in parts:
        if not isinstance(tp, Mapping):
            continue
        if isinstance(tp.get("tls"), Mapping):
            yield where, tp["tls"]
        for pls in tp.get("portLevelSettings") or ():
            if isinstance(pls, Mapping) and isinstance(pls.get("tls"), Mapping):
                port = (pls.get("port") or {}).get("number") if isinstance(pls.get("port"), Mapping) else None
                yield f"{where}.portLevelSettings[{port}]", pls["tls"]


@dataclass(frozen=True, order=True)
class UpstreamCredential:
    """A credential a gateway's clusters name: whether they need its certificate (MUTUAL) and its CA."""

    name: str
    cert: bool
    ca: bool
    where: str   # the first DestinationRule field naming it, for warnings


def upstream_credentials(proxy: Proxy, push: PushContext) -> tuple[UpstreamCredential, ...]:
    """Every credential the DestinationRules of the services a gateway sees name (none for sidecars)."""
    if not proxy.is_gateway:
        return ()

    def build() -> tuple[UpstreamCredential, ...]:
        rules: dict[tuple[str, str], Config] = {}
        for svc in push.services_visible_to(proxy):
            dr = push.destination_rule(proxy.namespace, svc.hostname)
            if dr is not None:
                rules.setdefault((dr.namespace, dr.name), dr)
        need: dict[str, tuple[bool, bool, str]] = {}
        for key in sorted(rules):
            dr = rules[key]
            for where, tls in _policies(dr):
                name = str(tls.get("credentialName") or "")
                if not name or tls.get("mode") not in MODES:
                    continue
                cert, ca, first = need.get(name, (False, False, f"DestinationRule {key[0]}/{key[1]} {where}"))
                need[name] = (cert or tls.get("mode") == "MUTUAL", ca or not tls.get("insecureSkipVerify"),
                              first)
        return tuple(UpstreamCredential(n, *need[n]) for n in sorted(need))
    return push.memoized(("dr-credentials", proxy.namespace, True), build)


def _resolve(push: PushContext, namespace: str, cred: UpstreamCredential) -> tuple[
        credentials.CertInfo | None, bytes, list[str]]:
    """(certificate and key, CA, problems) of a credential in ``namespace`` (istiod's GetKeyAndCert and
    GetCaCert)."""
    name = cred.name
    problems: list[str] = []
    secret = push.configs.get("Secret", namespace, name)
    info: credentials.CertInfo | None = None
    ca = b""
    if cred.cert:
        if secret is None:
            problems.append(f"no Secret {namespace}/{name}")
        else:
            try:
                info = credentials.cert_info(credentials.secret_data(secret))
            except credentials.CredentialError as e:
                problems.append(f"Secret {namespace}/{name}: {e}")
    if cred.ca:
        ca_secret = push.configs.get("Secret", namespace, name + credentials.CA_SUFFIX) or secret
        if ca_secret is None:
            problems.append(f"no Secret {namespace}/{name}{credentials.CA_SUFFIX} or {namespace}/{name} "
                            "for the CA")
        else:
            try:
                ca = credentials.root_cert(credentials.secret_data(ca_secret))
            except credentials.CredentialError as e:
                problems.append(f"the CA (Secret {namespace}/{name}{credentials.CA_SUFFIX}, or key cacert/"
                                f"ca.crt in {namespace}/{name}): {e}")
    return info, ca, problems


def upstream_secrets(proxy: Proxy, push: PushContext) -> dict[str, Message]:
    """The SDS resources of the credentials a gateway's clusters name, from the gateway's namespace; a part
    that cannot be served is left out (the cluster waits for it: TLS fails, never plaintext)."""
    out: dict[str, Message] = {}
    for cred in upstream_credentials(proxy, push):
        info, ca, _ = _resolve(push, proxy.namespace, cred)
        if info is not None:
            cert = secret_pb2.Secret(name=credentials.sds_name(cred.name))
            cert.tls_certificate.certificate_chain.inline_bytes = info.cert
            cert.tls_certificate.private_key.inline_bytes = info.key
            out[cert.name] = cert
        if ca:
            root = secret_pb2.Secret(name=credentials.sds_name(cred.name, ca=True))
            root.validation_context.trusted_ca.inline_bytes = ca
            out[root.name] = root
    return out


def credential_problems(proxy: Proxy, push: PushContext) -> list[str]:
    """One warning per credential a gateway's clusters name that its namespace cannot serve."""
    out = []
    for cred in upstream_credentials(proxy, push):
        problems = _resolve(push, proxy.namespace, cred)[2]
        if problems:
            out.append(f"{cred.where}: credentialName {cred.name!r}: {'; '.join(problems)}; TLS origination "
                       "to that destination fails until it is fixed (never plaintext)")
    return out

