"""The agent's identity on Kubernetes, from the injected container's environment, as pilot-agent reads it.

Istio's injection template gives the ``istio-proxy`` container ``CA_ADDR`` (istiod's TLS port,
``istiod.istio-system.svc:15012``), ``PILOT_CERT_PROVIDER=istiod``, ``TRUST_DOMAIN``, and two volumes:
the projected service-account token with audience ``istio-ca`` bound to the pod at
``/var/run/secrets/tokens/istio-token`` (``JWT_POLICY=third-party-jwt``, pilot-agent's default;
``first-party-jwt`` is the plain service-account token) and the ``istio-ca-root-cert`` ConfigMap at
``/var/run/secrets/istio/root-cert.pem``. :func:`kube_identity` turns that into
:class:`~mizzen.agent.identity.IdentityOptions`: the token is read again for every CA call and xDS stream
(the kubelet rotates it), and the ConfigMap's roots verify the control plane's certificate. The agent opens
its debug channel (:mod:`mizzen.agent.debug_channel`): ``mizzen proxy-config``/``logs`` reach it that way.

The test cluster's node agent has no mount namespace: it rewrites paths under a volume's ``mountPath`` and
passes the whole map as ``MIZZEN_MOUNTS`` (JSON ``{mountPath: host dir}``); paths built here are mapped
through it (:func:`mounted`), so the same env works in a real container and under the node agent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mizzen.agent.identity import IdentityError, IdentityOptions
from mizzen.security.identity import DEFAULT_TRUST_DOMAIN

__all__ = [
    "DEFAULT_CA_ADDR",
    "FIRST_PARTY_JWT_PATH",
    "ISTIO_ROOT_CERT_PATH",
    "THIRD_PARTY_JWT_PATH",
    "kube_identity",
    "mounted",
]

DEFAULT_CA_ADDR = "istiod.istio-system.svc:15012"
THIRD_PARTY_JWT_PATH = "/var/run/secrets/tokens/istio-token"
FIRST_PARTY_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ISTIO_ROOT_CERT_PATH = "/var/run/secrets/istio/root-cert.pem"
MOUNTS_ENV = "MIZZEN_MOUNTS"


def mounted(path: str, env: Mapping[str, str]) -> Path:
    """``path`` as this process sees it: under the node agent, the longest ``MIZZEN_MOUNTS`` mount path that
    contains it is replaced by its host directory; otherwise unchanged."""
    raw = env.get(MOUNTS_ENV, "").strip()
    if not raw:
        return Path(path)
    try:
        mounts = json.loads(raw)
    except ValueError:
        raise IdentityError(f"${MOUNTS_ENV} is not a JSON object of mount path -> directory") from None
    if not isinstance(mounts, dict):
        raise IdentityError(f"${MOUNTS_ENV} is not a JSON object of mount path -> directory")
    for mount in sorted((str(m) for m in mounts), key=len, reverse=True):
        base = mount.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return Path(str(mounts[mount]) + path[len(base):])
    return Path(path)


def kube_identity(env: Mapping[str, str], *, ca_address: str | None = None,
                  token_file: Path | None = None, root_cert_file: Path | None = None) -> IdentityOptions:
    """The identity options of an injected ``istio-proxy`` container (explicit arguments win over the
    environment); a one-line IdentityError for a policy or provider Mizzen does not implement."""
    policy = env.get("JWT_POLICY", "").strip() or "third-party-jwt"
    if token_file is None:
        if policy == "third-party-jwt":
            token_file = mounted(THIRD_PARTY_JWT_PATH, env)
        elif policy == "first-party-jwt":
            token_file = mounted(FIRST_PARTY_JWT_PATH, env)
        else:
            raise IdentityError(f"$JWT_POLICY={policy!r}: want third-party-jwt or first-party-jwt")
    provider = env.get("PILOT_CERT_PROVIDER", "").strip() or "istiod"
    if root_cert_file is None:
        if provider != "istiod":
            raise IdentityError(f"$PILOT_CERT_PROVIDER={provider!r}: only istiod (the istio-ca-root-cert "
                                "ConfigMap) is supported")
        root_cert_file = mounted(ISTIO_ROOT_CERT_PATH, env)
    return IdentityOptions(ca_address=ca_address or env.get("CA_ADDR", "").strip() or DEFAULT_CA_ADDR,
                           token_file=token_file, root_cert_file=root_cert_file,
                           trust_domain=env.get("TRUST_DOMAIN", "").strip() or DEFAULT_TRUST_DOMAIN,
                           debug_channel=True)
