"""The agent's workload-identity half (pilot-agent's SDS server and xds-proxy), started before Envoy.

The runner (the kubelet of the local mesh) puts the pod's credential and the mesh roots in the agent's
private work dir: ``credential`` and ``root-cert.pem``, both 0600 (a looser credential file is refused with
one line; it is never read from the environment or the command line). With them the agent

* runs the :class:`~mizzen.security.nodeagent.agent.IdentityAgent`: a key and a CSR for
  ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` to the CA over the control plane's TLS port,
  ``default`` and ``ROOTCA`` over SDS on ``<work dir>/sds.sock`` (0600), renewal at about half the TTL
  (``SECRET_TTL``, 24 h; ``SECRET_GRACE_PERIOD_RATIO``, 0.5: pilot-agent's names), retry with backoff while
  the CA is away, serving the still-valid certificate meanwhile;
* serves Envoy's ADS on ``<work dir>/xds.sock`` (0600) and forwards each stream to the control plane over
  TLS with the credential (:class:`~mizzen.agent.xds_proxy.XdsProxy`), so the control plane checks that the
  node is this pod's.

On Kubernetes (pilot-agent with ``JWT_POLICY=third-party-jwt``, :mod:`mizzen.agent.kube_identity`) the
credential is the pod's projected service-account token (``token_file``, audience ``istio-ca``), read again
for every CA call and xDS stream because the kubelet rotates it, and the roots are the mounted
``istio-ca-root-cert`` ConfigMap's ``root-cert.pem`` (a ConfigMap volume, so its mode is not checked).

Socket paths too long for ``sun_path`` are bound through the agent's open work-dir descriptor and written
relative (Envoy runs in the work dir), like the admin socket.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.xds_proxy import XdsProxy
from mizzen.config.durations import parse_duration
from mizzen.security.identity import DEFAULT_TRUST_DOMAIN, Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretItem, SecretManagerOptions
from mizzen.security.nodeagent.upstream import ControlPlaneTls, Credential, TokenFile, TokenFileError
from mizzen.security.serving import ISTIOD_SAN

log = logging.getLogger(__name__)

__all__ = [
    "CREDENTIAL_FILE",
    "ROOT_CERT_FILE",
    "SDS_SOCKET",
    "XDS_SOCKET",
    "IdentityError",
    "IdentityOptions",
    "WorkloadIdentity",
    "load_credential",
    "read_private",
    "read_roots",
    "secret_options_from_env",
]

CREDENTIAL_FILE = "credential"
ROOT_CERT_FILE = "root-cert.pem"
SDS_SOCKET = "sds.sock"
XDS_SOCKET = "xds.sock"
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class IdentityError(RuntimeError):
    """The agent cannot start its identity (one line; never the credential)."""


def secret_options_from_env() -> SecretManagerOptions:
    """pilot-agent's ``SECRET_TTL`` (requested certificate lifetime) and ``SECRET_GRACE_PERIOD_RATIO``."""
    ttl = dt.timedelta(hours=24)
    raw = os.environ.get("SECRET_TTL", "").strip()
    if raw:
        seconds = parse_duration(raw)
        if seconds is None or seconds <= 0:
            raise IdentityError(f"$SECRET_TTL={raw!r} is not a positive duration (like 30s or 24h)")
        ttl = dt.timedelta(seconds=seconds)
    ratio = 0.5
    raw = os.environ.get("SECRET_GRACE_PERIOD_RATIO", "").strip()
    if raw:
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 < ratio < 1.0:
            raise IdentityError(f"$SECRET_GRACE_PERIOD_RATIO={raw!r} must be a number between 0 and 1")
    return SecretManagerOptions(ttl=ttl, grace_ratio=ratio)


@dataclass(frozen=True)
class IdentityOptions:
    ca_address: str                                  # host:port of the control plane's TLS port (xDS + CA)
    xds_address: str = ""                            # xDS over TLS elsewhere (pilot-agent's discoveryAddress
                                                     # next to CA_ADDR); "" = ca_address
    credential_file: Path | None = None              # default <work dir>/credential
    root_cert_file: Path | None = None               # default <work dir>/root-cert.pem
    server_name: str = ISTIOD_SAN
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    # Kubernetes: the projected service-account token (re-read for every call) instead of a credential file;
    # the root certificate file is then a ConfigMap's (its mode is not checked)
    token_file: Path | None = None
    # open the debug channel (mizzen.agent.debug_channel) so the control plane can reach this proxy's admin
    # and log: on Kubernetes, where nothing else can
    debug_channel: bool = False
    secrets: SecretManagerOptions = field(default_factory=secret_options_from_env)
    # the runner's hand-off: write the credential files into the work dir before they are read, and revoke
    # the credential when the agent stops (None: the files are there already, e.g. `mizzen agent`)
    provision: Callable[[Path], Awaitable[None]] | None = None
    release: Callable[[], Awaitable[None]] | None = None


def read_private(path: Path, what: str) -> str:
    """A private file's text: missing, empty or readable by others is a one-line IdentityError."""
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise IdentityError(f"{what} {path} is accessible by group or others (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}); it must be 0600")
        text = path.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(f"{what} {path} does not exist (the runner writes it when the pod starts)") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"{what} {path}: cannot read it ({type(e).__name__})") from None
    if not text:
        raise IdentityError(f"{what} {path} is empty")
    return text


def read_roots(path: Path) -> str:
    """A root certificate file anyone may read (a mounted ConfigMap): missing or empty is one line."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(f"root certificate file {path} does not exist (the istio-ca-root-cert "
                            "ConfigMap is mounted there)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"root certificate file {path}: cannot read it ({type(e).__name__})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise IdentityError(f"root certificate file {path} holds no PEM certificate")
    return text


def load_credential(o: IdentityOptions, here: Path) -> tuple[Credential, str]:
    """The credential (a string, or the token file read again per call) and the roots to trust, from the
    options (files default to ``here``); one-line IdentityError when they cannot be read."""
    if o.token_file is not None:
        token = TokenFile(o.token_file)
        try:
            token.read()                                 # there and not empty, now
        except TokenFileError as e:
            raise IdentityError(f"{e} (the kubelet writes the projected service-account token there)") \
                from None
        return token, read_roots(o.root_cert_file or here / ROOT_CERT_FILE)
    credential = read_private(o.credential_file or here / CREDENTIAL_FILE, "credential file")
    roots = read_private(o.root_cert_file or here / ROOT_CERT_FILE, "root certificate file")
    return credential, roots


class WorkloadIdentity:
    """``start()`` before Envoy, ``stop()`` after it; :attr:`xds_socket`/:attr:`sds_socket` are the paths
    for Envoy's bootstrap (relative to the work dir when too long)."""

    def __init__(self, spec: ProxySpec, options: IdentityOptions, work_dir: Path, bind_dir: str,
                 envoy_dir: str) -> None:
        self.spec = spec
        self.options = options
        self.work_dir = work_dir
        self._bind_dir = bind_dir           # how this process reaches the work dir for binding sockets
        self._envoy_dir = envoy_dir         # how Envoy names it ("" = relative to its working directory)
        self.agent: IdentityAgent | None = None
        self.xds_proxy: XdsProxy | None = None
        self.xds_tls: ControlPlaneTls | None = None    # the TLS channel (+ credential) to the control plane
        self.identity = Identity(spec.namespace, spec.service_account, options.trust_domain)

    @property
    def xds_socket(self) -> str:
        return os.path.join(self._envoy_dir, XDS_SOCKET) if self._envoy_dir else XDS_SOCKET

    @property
    def sds_socket(self) -> str:
        return os.path.join(self._envoy_dir, SDS_SOCKET) if self._envoy_dir else SDS_SOCKET

    async def start(self) -> None:
        o = self.options
        if o.provision is not None:
            await o.provision(self.work_dir)
        credential, roots = load_credential(o, self.work_dir)
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        # one TLS helper each: the CA client and the xDS proxy follow the same roots
        ca_tls = ControlPlaneTls(o.ca_address, roots, credential, o.server_name)
        xds_address = o.xds_address or o.ca_address
        xds_tls = self.xds_tls = ControlPlaneTls(xds_address, roots, credential, o.server_name, options)
        self.agent = IdentityAgent(self.identity, o.ca_address, credential,
                                   Path(os.path.join(self._bind_dir, SDS_SOCKET)), o.secrets, tls=ca_tls)
        manager = self.agent.manager

        def follow_roots() -> None:
            if manager.current is not None:
                xds_tls.update_roots(manager.current.roots.pem)
        manager.subscribe(follow_roots)
        self.xds_proxy = XdsProxy(self.work_dir / XDS_SOCKET, xds_address, tls=xds_tls,
                                  bind_path=os.path.join(self._bind_dir, XDS_SOCKET))
        try:
            await self.agent.start()
            await self.xds_proxy.start()
        except BaseException:
            await self.stop()
            raise
        log.info("identity %s: SDS %s, xDS proxy %s -> %s (TLS)", self.identity, self.sds_socket,
                 self.xds_socket, xds_address)

    async def stop(self) -> None:
        if self.xds_proxy is not None:
            await self.xds_proxy.stop()
            self.xds_proxy = None
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
        if self.options.release is not None:
            try:
                await self.options.release()
            except Exception as e:     # the pod is going anyway; the credential dies with the runner's record
                log.warning("identity %s: revoking the credential failed: %s", self.identity, e)

    def secret_items(self) -> list[SecretItem]:
        return self.agent.secret_items() if self.agent is not None else []
