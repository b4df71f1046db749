"""Istio's matchers for authorization values (``pilot/pkg/security/authz/matcher``): a value ``*`` means
"present (non-empty)", ``*x`` a suffix, ``x*`` a prefix, anything else an exact match; hosts ignore case;
JWT claims are read from the ``jwt_authn`` filter's metadata (``payload`` key, as Istio sets it) and match a
string claim or any element of a list claim.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

__all__ = ["JWT_FILTER", "JWT_PAYLOAD", "claim_matcher", "header_matcher", "host_matcher", "metadata_string",
           "namespace_regex", "path_matcher", "regex", "string_matcher", "values_or"]

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"   # every provider's payload_in_metadata key (Istio's EnvoyJwtFilterPayload)


def regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def string_matcher(value: str, *, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's StringMatcher(WithPrefix): ``*`` any non-empty value, ``*x`` suffix, ``x*`` prefix, exact
    otherwise; ``prefix`` (``spiffe://`` for principals) goes in front of prefix and exact values."""
    if value == "*":
        return regex(".+")
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def header_matcher(name: str, value: str) -> route_pb2.HeaderMatcher:
    if value == "*":
        return route_pb2.HeaderMatcher(name=name, present_match=True)
    return route_pb2.HeaderMatcher(name=name, string_match=string_matcher(value))


def host_matcher(value: str) -> route_pb2.HeaderMatcher:
    if value == "*":
        return route_pb2.HeaderMatcher(name=":authority", present_match=True)
    return route_pb2.HeaderMatcher(name=":authority", string_match=string_matcher(value, ignore_case=True))


def path_matcher(value: str) -> path_pb2.PathMatcher:
    return path_pb2.PathMatcher(path=string_matcher(value))


def metadata_string(filter_name: str, path: Sequence[str], m: string_pb2.StringMatcher
                    ) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=filter_name, path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in path],
        value=value_pb2.ValueMatcher(string_match=m))


def values_or(values: Sequence[str]) -> value_pb2.ValueMatcher:
    """Any of ``values`` (Istio's StringOrMatcher); Envoy's OrMatcher needs two or more."""
    ms = [value_pb2.ValueMatcher(string_match=string_matcher(v)) for v in values]
    if len(ms) == 1:
        return ms[0]
    return value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=ms))


def claim_matcher(claims: Sequence[str], values: Sequence[str]) -> metadata_pb2.MetadataMatcher:
    """A JWT claim (nested: several keys) that is one of ``values`` or a list holding one of them."""
    one = values_or(values)
    either = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
        value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)), one]))
    return metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD, *claims)],
        value=either)


def namespace_regex(value: str) -> str:
    """``source.namespace`` / ``namespaces``: the principal's ``/ns/<ns>/`` part (``*`` any run)."""
    return f".*/ns/{value.replace('*', '.*')}/.*"
