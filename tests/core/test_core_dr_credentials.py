"""DestinationRule ``tls.credentialName`` at gateways (pure): the cluster's UpstreamTlsContext names the
credential over ADS SDS (top level, port level, subsets), the SDS generator serves it from the gateway's
namespace only, a missing/unusable Secret is a warning and never plaintext, sidecars skip it, and
DestinationRule changes re-push SDS."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from listeners_testkit import configs, fqdn, gateway, push_of, self_signed, service, sidecar

from mizzen.config.model import Config
from mizzen.core import generate, sds
from mizzen.core.clusters import build_clusters
from mizzen.core.listeners import generation_warnings
from mizzen.registry.model import Protocol
from mizzen.xds.resources import SECRET

EXT = service("ext", [(443, Protocol.HTTPS)], ns="istio-system")
HOST = fqdn("ext", "istio-system")


def secret(name: str, namespace: str, data: dict[str, bytes]) -> Config:
    return Config(kind="Secret", api_version="v1", name=name, namespace=namespace,
                  spec={"type": "Opaque", "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


def dr(tls: str, where: str = "top") -> list[Config]:
    policy = {"top": f"trafficPolicy: {{tls: {tls}}}",
              "port": f"trafficPolicy: {{portLevelSettings: [{{port: {{number: 443}}, tls: {tls}}}]}}",
              "subset": f"subsets: [{{name: v1, labels: {{v: '1'}}, trafficPolicy: {{tls: {tls}}}}}]"}[where]
    return configs(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ext, namespace: istio-system}}
spec:
  host: {HOST}
  {policy}
""")


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, bytes]:
    files = self_signed(tmp_path, ["client.example.com"])
    return {"cert": files["cert"].read_bytes(), "key": files["key"].read_bytes()}


def ctx_of(proxy: Any, push: Any, name: str) -> tls_pb2.UpstreamTlsContext | None:
    [c] = [c for c in build_clusters(proxy, push) if c.name == name]
    if not c.HasField("transport_socket"):
        return None
    ctx = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.typed_config.Unpack(ctx)
    return ctx


@pytest.mark.parametrize("where", ["top", "port", "subset"])
def test_mutual_cluster_takes_cert_and_ca_over_ads(pem: dict[str, bytes], where: str) -> None:
    s = secret("client", "istio-system", {**pem, "cacert": pem["cert"]})
    push = push_of([EXT], [*dr("{mode: MUTUAL, credentialName: client, sni: api.example.com, "
                               "subjectAltNames: [api.example.com]}", where), s])
    name = f"outbound|443|{'v1' if where == 'subset' else ''}|{HOST}"
    ctx = ctx_of(gateway(), push, name)
    assert ctx is not None and ctx.sni == "api.example.com"
    common = ctx.common_tls_context
    [cert] = common.tls_certificate_sds_secret_configs
    assert cert.name == "kubernetes://client" and cert.sds_config.HasField("ads")
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://client-cacert"
    assert combined.validation_context_sds_secret_config.sds_config.HasField("ads")
    assert {m.matcher.exact for m in combined.default_validation_context.match_typed_subject_alt_names} == {
        "api.example.com"}
    out = sds.SecretGenerator().generate(gateway(), push, None)
    assert sorted(out) == ["kubernetes://client", "kubernetes://client-cacert"]
    c = out["kubernetes://client"]
    assert isinstance(c, secret_pb2.Secret) and c.tls_certificate.private_key.inline_bytes == pem["key"]
    ca = out["kubernetes://client-cacert"]
    assert isinstance(ca, secret_pb2.Secret) and ca.validation_context.trusted_ca.inline_bytes == pem["cert"]
    assert generation_warnings(gateway(), push) == []


def test_simple_needs_only_a_ca_and_can_take_it_from_a_cacert_secret(pem: dict[str, bytes]) -> None:
    push = push_of([EXT], [*dr("{mode: SIMPLE, credentialName: roots}"),
                           secret("roots-cacert", "istio-system", {"ca.crt": pem["cert"]})])
    ctx = ctx_of(gateway(), push, f"outbound|443||{HOST}")
    assert ctx is not None and not ctx.common_tls_context.tls_certificate_sds_secret_configs
    assert ctx.sni == HOST
    assert (ctx.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name
            == "kubernetes://roots-cacert")
    assert list(sds.SecretGenerator().generate(gateway(), push, None)) == ["kubernetes://roots-cacert"]
    assert generation_warnings(gateway(), push) == []


@pytest.mark.parametrize("case", ["missing", "other-namespace", "no-key", "no-ca"])
def test_unservable_secret_is_a_warning_and_never_plaintext(pem: dict[str, bytes], case: str) -> None:
    secrets = {"missing": [],
               "other-namespace": [secret("client", "default", {**pem, "cacert": pem["cert"]})],
               "no-key": [secret("client", "istio-system", {"cert": pem["cert"], "cacert": pem["cert"]})],
               "no-ca": [secret("client", "istio-system", pem)]}[case]
    push = push_of([EXT], [*dr("{mode: MUTUAL, credentialName: client}"), *secrets])
    ctx = ctx_of(gateway(), push, f"outbound|443||{HOST}")
    assert ctx is not None   # still TLS naming the credential: Envoy waits for it, nothing goes out in clear
    assert ctx.common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://client"
    [warning] = generation_warnings(gateway(), push)
    assert "credentialName 'client'" in warning and "never plaintext" in warning
    assert "BEGIN" not in warning
    out = sds.SecretGenerator().generate(gateway(), push, None)
    assert ("kubernetes://client" in out) == (case == "no-ca")
    assert ("kubernetes://client-cacert" in out) == (case == "no-key")


def test_insecure_skip_verify_has_no_validation_context(pem: dict[str, bytes]) -> None:
    push = push_of([EXT], [*dr("{mode: MUTUAL, credentialName: client, insecureSkipVerify: true}"),
                           secret("client", "istio-system", pem)])
    ctx = ctx_of(gateway(), push, f"outbound|443||{HOST}")
    assert ctx is not None and not ctx.common_tls_context.HasField("combined_validation_context")
    assert list(sds.SecretGenerator().generate(gateway(), push, None)) == ["kubernetes://client"]
    assert generation_warnings(gateway(), push) == []


def test_sidecars_skip_it_and_do_not_share_the_gateways_clusters(pem: dict[str, bytes]) -> None:
    push = push_of([EXT], [*dr("{mode: MUTUAL, credentialName: client}"),
                           secret("client", "istio-system", {**pem, "cacert": pem["cert"]})])
    side = sidecar(ns="istio-system")
    assert ctx_of(side, push, f"outbound|443||{HOST}") is None
    assert ctx_of(gateway(), push, f"outbound|443||{HOST}") is not None
    assert sds.SecretGenerator().generate(side, push, None) == {}


def test_a_destination_rule_change_regenerates_sds() -> None:
    generate.register(sds.SecretGenerator())
    assert SECRET in generate.types_reading({"DestinationRule"})
