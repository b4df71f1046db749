"""Translation without traffic: Istio's own full policies (every source, operation and when field, all
actions, dry-run, CUSTOM with HTTP and gRPC providers) and RequestAuthentication produce listeners that real
Envoy accepts (``envoy --mode validate``); the filter order, policy names and Istio's special cases (empty
spec, HTTP-only fields on TCP, unknown providers) are as Istio builds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2
from listeners_testkit import (
    bootstrap,
    by_name,
    configs,
    envoy_validate,
    gateway,
    hcm_of,
    loopback,
    push_of,
    service,
    sidecar,
)

from mizzen.config.loader import load_text
from mizzen.config.model import Config
from mizzen.core.listeners import build_listeners
from mizzen.core.mesh import MeshConfig, extension_providers, with_mesh_file
from mizzen.registry.model import Protocol
from mizzen.security.authz import builder, jwt
from mizzen.security.authz.plugin import AuthzPlugin

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "validation"
NS = "bookinfo"

PROVIDERS = extension_providers([
    {"name": "http-authz", "envoyExtAuthzHttp": {"service": "authz.bookinfo.svc.cluster.local", "port": 8000,
                                                 "includeRequestHeadersInCheck": ["x-ext-authz"],
                                                 "headersToUpstreamOnAllow": ["x-a"],
                                                 "headersToDownstreamOnDeny": ["x-b"], "timeout": "2s",
                                                 "includeAdditionalHeadersInCheck": {"x-c": "v"}}},
    {"name": "grpc-authz",
     "envoyExtAuthzGrpc": {"service": "authz.bookinfo.svc.cluster.local", "port": 9000}},
])
SERVICES = [service("reviews", [(9080, Protocol.HTTP), (5000, Protocol.TCP)], selector={"app": "reviews"}),
            service("authz", [(8000, Protocol.HTTP), (9000, Protocol.GRPC)])]


def istio_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CRDS / name).read_text()) if d]


def policy(doc: dict[str, Any], name: str, **spec: Any) -> Config:
    d = dict(doc)
    d["metadata"] = {"name": name, "namespace": NS, **({"annotations": spec.pop("annotations")}
                                                       if "annotations" in spec else {})}
    d["spec"] = {**{k: v for k, v in doc["spec"].items() if k != "selector"}, **spec}
    out = configs(yaml.safe_dump(d))[0]
    return Config(out.kind, out.api_version, out.name, out.namespace, out.spec,
                  annotations=d["metadata"].get("annotations", {}))


def full_policies() -> list[Config]:
    full, split = istio_docs("authz-valid.yaml")
    out = []
    for action in ("ALLOW", "DENY", "AUDIT"):
        out.append(policy(full, f"full-{action.lower()}", action=action))
        out.append(policy(full, f"dry-{action.lower()}", action=action,
                          annotations={"istio.io/dry-run": "true"}))
    out.append(policy(split, "split"))
    out.append(policy(full, "custom-http", action="CUSTOM", provider={"name": "http-authz"}))
    out.append(policy(full, "custom-grpc", action="CUSTOM", provider={"name": "grpc-authz"}))
    return out


def request_authn() -> Config:
    (doc,) = istio_docs("reqauth-valid.yaml")
    spec = {k: v for k, v in doc["spec"].items() if k != "targetRefs"}
    inline = dict(spec["jwtRules"][0], issuer="inline", jwks=json.dumps({"keys": []}))
    inline.pop("jwksUri")
    spec["jwtRules"] = [*spec["jwtRules"], inline,
                        {"issuer": "mesh", "jwksUri": "http://authz.bookinfo.svc.cluster.local:8000/jwks"}]
    return configs(yaml.safe_dump({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                                   "metadata": {"name": "ra"}, "spec": spec}))[0]


def _names(hcm: Any) -> list[str]:
    return [f.name for f in hcm.http_filters]


def test_istio_full_policies_translate_to_config_envoy_accepts(tmp_path: Path) -> None:
    push = push_of(SERVICES, [*full_policies(), request_authn()], MeshConfig(extension_providers=PROVIDERS))
    proxy = sidecar(labels={"app": "reviews"})
    lds = build_listeners(proxy, push)
    gw = build_listeners(gateway(), push)
    res = envoy_validate(bootstrap([*lds, *gw], (loopback(), 1)), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    hcm = hcm_of(by_name(lds)["127.0.10.1_9080"].filter_chains[0].filters[0])
    assert _names(hcm)[:8] == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac", "envoy.filters.http.ext_authz",    # CUSTOM grpc-authz (sorted)
        "envoy.filters.http.rbac", "envoy.filters.http.ext_authz",    # CUSTOM http-authz
        "envoy.filters.http.rbac", "envoy.filters.http.rbac", "envoy.filters.http.rbac"]  # AUDIT DENY ALLOW
    tcp = [f.name for f in by_name(lds)["127.0.10.1_5000"].filter_chains[0].filters]
    # the HTTP provider is ignored on TCP; the gRPC one is used
    names = ("rbac", "ext_authz", "rbac", "rbac", "rbac", "tcp_proxy")
    assert tcp == [f"envoy.filters.network.{n}" for n in names]


def _rbac(f: Any) -> Any:
    out = http_rbac_pb2.RBAC()
    assert f.typed_config.Unpack(out)
    return out


def _built(yaml_text: str, mesh: MeshConfig | None = None) -> builder.Built:
    result = load_text(yaml_text, "t.yaml", NS)
    assert result.ok, [str(e) for e in result.errors]
    push = push_of(SERVICES, result.configs, mesh)
    return builder.build(push, sidecar(labels={"app": "reviews"}))


AP = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"


def test_policy_names_actions_and_dry_run_shadow_rules() -> None:
    b = _built(AP + "metadata: {name: a}\nspec:\n  rules: [{}, {to: [{operation: {methods: [GET]}}]}]\n---\n"
               + AP + "metadata: {name: d, annotations: {istio.io/dry-run: 'true'}}\nspec: {action: DENY, "
                      "rules: [{}]}")
    deny, allow = (_rbac(f) for f in b.http)
    assert not deny.HasField("rules") and deny.shadow_rules.action == rbac_pb2.RBAC.DENY
    assert deny.shadow_rules_stat_prefix == "istio_dry_run_deny_"
    assert sorted(allow.rules.policies) == [f"ns[bookinfo]-policy[a]-rule[{i}]" for i in (0, 1)]
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW


def test_empty_spec_is_allow_nothing_and_http_only_rules_on_tcp() -> None:
    b = _built(AP + "metadata: {name: none}\nspec: {}\n---\n" + AP
               + "metadata: {name: get}\nspec:\n"
               + "  rules: [{to: [{operation: {methods: [GET], ports: ['5000']}}]}]"
               + "\n---\n" + AP + "metadata: {name: deny}\nspec:\n  action: DENY\n"
               + "  rules: [{to: [{operation: {methods: [POST], ports: ['5000']}}]}]")
    _, allow = (_rbac(f) for f in b.http)
    assert allow.rules.policies["ns[bookinfo]-policy[none]-rule[0]"] == builder.MATCH_NEVER
    tcp_deny, tcp_allow = (tcp_rbac_pb2.RBAC() for _ in range(2))
    assert b.tcp[0].typed_config.Unpack(tcp_deny) and b.tcp[1].typed_config.Unpack(tcp_allow)
    # ALLOW: the rule with an HTTP-only field is dropped on TCP; DENY: only the field is dropped
    assert sorted(tcp_allow.rules.policies) == ["ns[bookinfo]-policy[none]-rule[0]"]
    perm = tcp_deny.rules.policies["ns[bookinfo]-policy[deny]-rule[0]"].permissions[0]
    assert [r.WhichOneof("rule") for r in perm.and_rules.rules] == ["destination_port"]
    assert tcp_deny.rules.policies["ns[bookinfo]-policy[deny]-rule[0]"].principals[0].and_ids.ids[0].any
    assert any("HTTP only" in n for n in b.notes)


def test_custom_with_an_unknown_provider_denies_what_it_matches() -> None:
    b = _built(AP + "metadata: {name: c}\nspec: {action: CUSTOM, provider: {name: nope}, rules: [{}]}")
    (f,) = b.http
    cfg = _rbac(f)
    assert cfg.rules.action == rbac_pb2.RBAC.DENY
    assert list(cfg.rules.policies) == [
        "istio-ext-authz-nope-ns[bookinfo]-policy[c]-rule[0]-bad-custom-action"]
    assert any("nope" in n for n in b.notes)


def test_jwt_filter_providers_and_requirement() -> None:
    push = push_of(SERVICES, [request_authn()])
    f = jwt.build(push, [request_authn()], NS)
    assert f is not None
    cfg = jwt_pb2.JwtAuthentication()
    assert f.typed_config.Unpack(cfg)
    assert sorted(cfg.providers) == ["origins-0", "origins-1", "origins-2"]
    ext, inline, mesh = (cfg.providers[f"origins-{i}"] for i in range(3))
    assert ext.local_jwks.inline_string == jwt.UNREACHABLE_JWKS      # example.com is not in the mesh
    assert ext.forward and ext.forward_payload_header == "header" and ext.payload_in_metadata == "payload"
    assert [(h.name, h.value_prefix) for h in ext.from_headers] == [("foo", "baz")]
    assert [(c.header_name, c.claim_name) for c in ext.claim_to_headers] == [("def", "abc")]
    assert mesh.remote_jwks.http_uri.cluster == "outbound|8000||authz.bookinfo.svc.cluster.local"
    reqs = cfg.rules[0].requires.requires_any.requirements
    # Istio's sample has presence: REQUIRED, so a request without a token is not let through
    assert [r.provider_name for r in reqs] == ["origins-0", "origins-1", "origins-2"]
    optional = request_authn()
    rules = [{k: v for k, v in r.items() if k != "presence"} for r in optional.spec["jwtRules"]]
    f = jwt.build(push, [Config(optional.kind, optional.api_version, "ra", NS, {"jwtRules": rules})], NS)
    assert f is not None and f.typed_config.Unpack(cfg)
    assert cfg.rules[0].requires.requires_any.requirements[3].HasField("allow_missing")
    assert inline.local_jwks.inline_string


def test_outbound_chains_get_nothing() -> None:
    push = push_of(SERVICES, configs(AP + "metadata: {name: none}\nspec: {}"))
    proxy = sidecar(labels={"app": "reviews"}, http_proxy_port=15080)
    lds = build_listeners(proxy, push)
    out = next(lis for name, lis in by_name(lds).items() if name.endswith("_15080"))
    assert "envoy.filters.http.rbac" not in _names(hcm_of(out.filter_chains[0].filters[0]))
    assert AuthzPlugin.name == "security.authz"


def test_mesh_config_file_fields() -> None:
    mesh = with_mesh_file(MeshConfig(), yaml.safe_load("""
rootNamespace: mesh-root
extensionProviders:
- name: opa
  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191, timeout: 1s}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"""))
    assert mesh.root_namespace == "mesh-root"
    assert [(p.name, p.kind, p.body["port"]) for p in mesh.extension_providers] == [
        ("opa", "envoyExtAuthzGrpc", 9191)]
    for bad in ("[1]", "extensionProviders: {a: b}", "extensionProviders: [{envoyExtAuthzHttp: {}}]",
                "rootNamespace: [x]"):
        try:
            with_mesh_file(MeshConfig(), yaml.safe_load(bad))
        except ValueError as e:
            assert "\n" not in str(e)
        else:
            raise AssertionError(bad)


def test_custom_rbac_only_marks_requests_for_ext_authz() -> None:
    """CUSTOM's RBAC filter never enforces (dry-run policies included): its shadow result turns ext_authz
    on."""
    b = _built(AP + "metadata: {name: c, annotations: {istio.io/dry-run: 'true'}}\n"
               "spec: {action: CUSTOM, provider: {name: http-authz}, rules: [{}]}\n---\n"
               + AP + "metadata: {name: d}\n"
               "spec: {action: CUSTOM, provider: {name: http-authz}, rules: [{}]}",
               MeshConfig(extension_providers=PROVIDERS))
    rbac, authz = b.http
    cfg = _rbac(rbac)
    assert not cfg.HasField("rules") and cfg.shadow_rules_stat_prefix == "istio_ext_authz_"
    assert sorted(cfg.shadow_rules.policies) == [
        "istio-ext-authz-http-authz-ns[bookinfo]-policy[c]-rule[0]",
        "istio-ext-authz-http-authz-ns[bookinfo]-policy[d]-rule[0]"]
    assert authz.name == "envoy.filters.http.ext_authz"
