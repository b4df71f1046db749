"""The listener plugin that puts authentication and authorization into inbound and gateway chains (Istio's
authn and authz networking plugins): ``jwt_authn`` at :data:`Phase.AUTHN`, then the CUSTOM/AUDIT/DENY/ALLOW
RBAC and ext_authz filters at :data:`Phase.AUTHZ` on HTTP chains; network RBAC (and gRPC ext_authz) before
``tcp_proxy`` on TCP chains. Outbound chains get nothing: policies protect the workload they select.
"""

from __future__ import annotations

from collections.abc import Sequence

from mizzen.core import plugins
from mizzen.core.plugins import Direction, ListenerContext, Phase, Phased
from mizzen.security.authz import builder, jwt
from mizzen.security.authz.selection import request_authentications

__all__ = ["AuthzPlugin", "register"]


class AuthzPlugin(plugins.ListenerPlugin):
    name = "security.authz"
    reads = frozenset({"AuthorizationPolicy", "RequestAuthentication"})   # and the registry, mesh providers

    def http_filters(self, ctx: ListenerContext) -> Sequence[Phased]:
        if ctx.direction is Direction.OUTBOUND:
            return ()
        out: list[Phased] = []
        key = ("authz-jwt", ctx.proxy.namespace, tuple(sorted(ctx.proxy.labels.items())))
        jwt_filter = ctx.push.memoized(key, lambda: jwt.build(
            ctx.push, request_authentications(ctx.push, ctx.proxy), ctx.proxy.namespace))
        if jwt_filter is not None:
            out.append(Phased(Phase.AUTHN, jwt_filter))
        out.extend(Phased(Phase.AUTHZ, f) for f in builder.build(ctx.push, ctx.proxy).http)
        return out

    def network_filters(self, ctx: ListenerContext) -> Sequence[Phased]:
        if ctx.direction is Direction.OUTBOUND or ctx.http:
            return ()
        return [Phased(Phase.AUTHZ, f) for f in builder.build(ctx.push, ctx.proxy).tcp]


def register() -> None:
    """Install the plugin (idempotent); the control plane calls it at start."""
    plugins.register(AuthzPlugin())
