"""Gateway credentialName translation: the SDS generator (names, content, only the proxy's namespace), the
gateway chains that reference it over ADS (SIMPLE, MUTUAL's combined validation context), servers left out
when their Secret cannot be served, and which proxies a Secret change can affect."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from listeners_testkit import by_name, configs, gateway, push_of, self_signed, service, sidecar, tls_of

from mizzen.config.model import Config, ConfigKey
from mizzen.core import generate, sds
from mizzen.core.listeners import build_listeners, generation_warnings
from mizzen.core.scope import config_affects_proxy
from mizzen.registry.model import Protocol
from mizzen.xds.resources import SECRET

WEB = service("web", [(9080, Protocol.HTTP)])


def secret(name: str, namespace: str, data: dict[str, bytes], typ: str = "Opaque") -> Config:
    return Config(kind="Secret", api_version="v1", name=name, namespace=namespace,
                  spec={"type": typ, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


def gw_config(mode: str, credential: str = "cred") -> list[Config]:
    return configs(f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["a.example.com"]
    tls: {{mode: {mode}, credentialName: {credential}}}
""")


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, bytes]:
    files = self_signed(tmp_path, ["a.example.com"])
    return {"cert": files["cert"].read_bytes(), "key": files["key"].read_bytes()}


def test_simple_chain_references_the_secret_over_ads(pem: dict[str, bytes]) -> None:
    data = {"tls.crt": pem["cert"], "tls.key": pem["key"]}
    cfgs = [*gw_config("SIMPLE"), secret("cred", "istio-system", data, "kubernetes.io/tls")]
    proxy, push = gateway(), push_of([WEB], cfgs)
    lis = by_name(build_listeners(proxy, push))["127.0.20.1_8443"]
    ctx = tls_of(lis.filter_chains[0])
    common = ctx.common_tls_context
    assert not common.tls_certificates
    [cfg] = common.tls_certificate_sds_secret_configs
    assert cfg.name == "kubernetes://cred" and cfg.sds_config.HasField("ads")
    assert not ctx.require_client_certificate.value
    out = sds.SecretGenerator().generate(proxy, push, None)
    assert list(out) == ["kubernetes://cred"]
    s = out["kubernetes://cred"]
    assert isinstance(s, secret_pb2.Secret)
    assert s.tls_certificate.certificate_chain.inline_bytes == pem["cert"]
    assert s.tls_certificate.private_key.inline_bytes == pem["key"]


@pytest.mark.parametrize("mode", ["MUTUAL", "OPTIONAL_MUTUAL"])
def test_mutual_uses_a_combined_validation_context(pem: dict[str, bytes], mode: str) -> None:
    cfgs = [*gw_config(mode), secret("cred", "istio-system", {"cert": pem["cert"], "key": pem["key"],
                                                                   "cacert": pem["cert"]})]
    proxy, push = gateway(), push_of([WEB], cfgs)
    ctx = tls_of(by_name(build_listeners(proxy, push))["127.0.20.1_8443"].filter_chains[0])
    combined = ctx.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://cred-cacert"
    assert not ctx.common_tls_context.HasField("validation_context")
    assert ctx.require_client_certificate.value is (mode == "MUTUAL")
    out = sds.SecretGenerator().generate(proxy, push, None)
    assert sorted(out) == ["kubernetes://cred", "kubernetes://cred-cacert"]
    ca = out["kubernetes://cred-cacert"]
    assert isinstance(ca, secret_pb2.Secret) and ca.validation_context.trusted_ca.inline_bytes == pem["cert"]


@pytest.mark.parametrize("case", ["missing", "other-namespace", "no-key", "mutual-without-ca"])
def test_unservable_credentials_leave_the_server_out(pem: dict[str, bytes], case: str) -> None:
    mode = "MUTUAL" if case == "mutual-without-ca" else "SIMPLE"
    cfgs = gw_config(mode)
    if case == "other-namespace":
        cfgs.append(secret("cred", "default", {"cert": pem["cert"], "key": pem["key"]}))
    elif case == "no-key":
        cfgs.append(secret("cred", "istio-system", {"cert": pem["cert"]}))
    elif case == "mutual-without-ca":
        cfgs.append(secret("cred", "istio-system", {"cert": pem["cert"], "key": pem["key"]}))
    proxy, push = gateway(), push_of([WEB], cfgs)
    assert build_listeners(proxy, push) == []
    [warning] = [w for w in generation_warnings(proxy, push) if "credentialName" in w]
    assert "server skipped" in warning and "istio-system/secure" in warning
    assert pem["key"].decode().splitlines()[1] not in warning
    assert "kubernetes://cred" not in sds.SecretGenerator().generate(proxy, push, None)


def test_sidecars_get_no_secrets_and_secret_changes_reach_only_gateways_of_their_namespace(
        pem: dict[str, bytes]) -> None:
    s = secret("cred", "istio-system", {"cert": pem["cert"], "key": pem["key"]})
    push = push_of([WEB], [*gw_config("SIMPLE"), s])
    side = sidecar(ns="istio-system")
    assert sds.SecretGenerator().generate(side, push, None) == {}
    key = ConfigKey("Secret", "istio-system", "cred")
    assert config_affects_proxy(gateway(), push, push, key)
    assert not config_affects_proxy(side, push, push, key)
    elsewhere = ConfigKey("Secret", "default", "cred")
    other = push_of([WEB], [*gw_config("SIMPLE"), secret("cred", "default", {"cert": pem["cert"],
                                                                              "key": pem["key"]})])
    assert not config_affects_proxy(gateway(), other, other, elsewhere)


def test_a_secret_change_regenerates_sds() -> None:
    generate.register(sds.SecretGenerator())
    assert SECRET in generate.types_reading({"Secret"})
    assert SECRET in generate.types_reading({"Gateway"})
