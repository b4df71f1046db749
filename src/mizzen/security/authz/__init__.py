"""Authorization and request authentication (Istio's ``pilot/pkg/security/authz`` and the JWT half of
``pilot/pkg/security/authn``): AuthorizationPolicy -> Envoy RBAC (HTTP and network) and ext_authz filters,
RequestAuthentication -> ``jwt_authn``, placed into listeners by a listener plugin (``core.plugins``).

- :mod:`.matchers`: Istio's string/header/path/metadata matchers (exact, prefix, suffix, presence).
- :mod:`.rules`: one AuthorizationPolicy rule -> an RBAC ``Policy`` (Istio's ``authz/model``).
- :mod:`.selection`: which policies apply to a proxy (root namespace, namespace, selector).
- :mod:`.builder`: the filters per action, in Istio's order (CUSTOM, AUDIT, DENY, ALLOW), dry-run shadows.
- :mod:`.jwt`: the ``jwt_authn`` filter.
- :mod:`.extauthz`: mesh config ``extensionProviders`` -> ``ext_authz`` filters.
- :mod:`.plugin`: the listener plugin; :func:`register` it where the control plane starts.

Everything here is pure: config + registry snapshot in, Envoy messages out.
"""

from __future__ import annotations

from mizzen.security.authz.plugin import AuthzPlugin, register

__all__ = ["AuthzPlugin", "register"]
