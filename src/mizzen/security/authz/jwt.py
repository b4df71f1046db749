"""RequestAuthentication -> Envoy's ``jwt_authn`` filter, as Istio builds it (``authn/policy_applier``):
one provider per JWT rule (``origins-<i>``, all of the proxy's RequestAuthentications together), every
provider writing its verified payload to the filter's metadata under ``payload`` (what AuthorizationPolicy's
request principals, audiences, presenter and claims match), and one requirement for every path: any provider
or no token at all. So a request without a token passes (an AuthorizationPolicy may then require one), and a
token that no rule accepts (bad signature, expired, wrong issuer or audience) gets a 401. A rule with
``presence: REQUIRED`` drops "no token at all": a request without one gets a 401 too.

``jwksUri`` is fetched by Envoy (``remote_jwks``) through the outbound cluster of the mesh service or
ServiceEntry that serves it; a URI naming no mesh service gets a JWKS no token verifies against (requests
with a token are refused with 401, as Istio does when istiod cannot fetch the keys) and an analyzer finding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from envoy.config.core.v3 import http_uri_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import duration_pb2, empty_pb2

from mizzen.config.durations import parse_duration
from mizzen.config.model import Config
from mizzen.core import names
from mizzen.core.filters import pack
from mizzen.core.push_context import PushContext
from mizzen.security.authz.matchers import JWT_FILTER, JWT_PAYLOAD

__all__ = ["UNREACHABLE_JWKS", "build", "jwks_cluster"]

# a valid JWKS whose key signs nothing (used when the jwksUri is not reachable through the mesh)
UNREACHABLE_JWKS = json.dumps({"keys": [{
    "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "mizzen-unreachable-jwks",
    "x": "z9e2oAw36EkLQwiuMh99zVkdk4ApcOdr8Zqf68Fek_8", "y": "Qbvjz7DJit7BdB4YJBPxEz7ovhTauvLrXiEkcumiACU"}]})
DEFAULT_SPACE_DELIMITED = ("scope", "permission")


def jwks_cluster(push: PushContext, uri: str, namespace: str) -> str | None:
    """The outbound cluster that reaches ``uri``'s host and port, if a mesh service serves it."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    fqdn = push.resolve_host(host, namespace)
    for h in (fqdn, host):
        svc = push.service(h)
        if svc is not None and any(p.port == port for p in svc.ports):
            return names.outbound_cluster(port, "", h)
    return None


def _has_keys(jwks: str) -> bool:
    """Whether an inline JWKS has keys Envoy can load (a PEM key is passed through as Envoy reads it); one
    without keys would make Envoy refuse the whole listener, so it is replaced by one verifying nothing."""
    try:
        doc = json.loads(jwks)
    except ValueError:
        return "-----BEGIN" in jwks
    return isinstance(doc, dict) and isinstance(doc.get("keys"), list) and bool(doc["keys"])


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _provider(push: PushContext, rule: dict[str, Any], namespace: str) -> jwt_pb2.JwtProvider:
    p = jwt_pb2.JwtProvider(
        issuer=str(rule.get("issuer", "")),
        audiences=[str(a) for a in rule.get("audiences") or ()],
        forward=bool(rule.get("forwardOriginalToken", False)),
        payload_in_metadata=JWT_PAYLOAD,
    )
    for h in rule.get("fromHeaders") or ():
        p.from_headers.add(name=str(h.get("name", "")), value_prefix=str(h.get("prefix", "")))
    p.from_params.extend(str(x) for x in rule.get("fromParams") or ())
    p.from_cookies.extend(str(x) for x in rule.get("fromCookies") or ())
    if rule.get("outputPayloadToHeader"):
        p.forward_payload_header = str(rule["outputPayloadToHeader"])
    for oc in rule.get("outputClaimToHeaders") or ():
        p.claim_to_headers.add(header_name=str(oc.get("header", "")), claim_name=str(oc.get("claim", "")))
    p.normalize_payload_in_metadata.space_delimited_claims.extend(
        dict.fromkeys([*DEFAULT_SPACE_DELIMITED, *(str(c) for c in rule.get("spaceDelimitedClaims") or ())]))
    if rule.get("jwks"):
        p.local_jwks.inline_string = str(rule["jwks"]) if _has_keys(str(rule["jwks"])) else UNREACHABLE_JWKS
    else:
        uri = str(rule.get("jwksUri", ""))
        cluster = jwks_cluster(push, uri, namespace) if uri else None
        if cluster is None:
            p.local_jwks.inline_string = UNREACHABLE_JWKS
        else:
            timeout = (parse_duration(str(rule["timeout"])) if rule.get("timeout") else None) or 5.0
            p.remote_jwks.http_uri.CopyFrom(http_uri_pb2.HttpUri(uri=uri, cluster=cluster,
                                                                 timeout=_duration(timeout)))
            p.remote_jwks.cache_duration.CopyFrom(_duration(300))
            p.remote_jwks.async_fetch.SetInParent()
    return p


def build(push: PushContext, configs: Sequence[Config], namespace: str) -> Any | None:
    """The ``jwt_authn`` HTTP filter for these RequestAuthentications, or None when they have no rules."""
    rules = [dict(r) for c in configs for r in c.spec.get("jwtRules") or ()]
    if not rules:
        return None
    cfg = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    any_of: list[jwt_pb2.JwtRequirement] = []
    for i, rule in enumerate(rules):
        name = f"origins-{i}"
        cfg.providers[name].CopyFrom(_provider(push, rule, namespace))
        any_of.append(jwt_pb2.JwtRequirement(provider_name=name))
    if not any(str(r.get("presence", "")) == "REQUIRED" for r in rules):
        any_of.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))   # no token: passes
    requires = (jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=any_of))
                if len(any_of) > 1 else any_of[0])
    cfg.rules.add(match=route_pb2.RouteMatch(prefix="/"), requires=requires)
    return hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(cfg))
