"""Istio's ``istio.v1.auth.IstioCertificateService/CreateCertificate`` over gRPC (grpc.aio).

:class:`CAService` authenticates the caller (the configured :class:`~mizzen.security.authn.Authenticator`
list), has the CA sign the CSR for the caller's proven identities and answers Istio's chain
``[leaf, cert chain, root bundle]``. Errors map to gRPC codes as istiod's: no/invalid credential ->
UNAUTHENTICATED, a CSR for another identity -> PERMISSION_DENIED, a bad CSR or TTL -> INVALID_ARGUMENT.
It mounts on any ``grpc.aio.Server`` (the control plane's, later) with :meth:`CAService.add_to_server`, or
runs alone with :meth:`CAService.serve`. Credentials and keys are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from mizzen.security import caproto
from mizzen.security.authn import AuthenticationError, Authenticator, RequestContext, authenticate
from mizzen.security.ca import CAError, CertificateAuthority, IdentityMismatch
from mizzen.security.pki import cert_info, load_certs
from mizzen.security.xdsauth import is_tls

log = logging.getLogger(__name__)

__all__ = ["CAService"]


class CAService:
    """The CA's gRPC face. ``issued`` counts signed certificates (for tests and metrics)."""

    def __init__(self, ca: CertificateAuthority, authenticators: Sequence[Authenticator], *,
                 require_tls: bool = False) -> None:
        self.ca = ca
        self.require_tls = require_tls        # mounted on a server with a plaintext port: refuse there
        self.authenticators = list(authenticators)
        self.issued = 0
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if self.require_tls and not is_tls(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "the CA is served over TLS only (the control plane's secure port, 15012)")
        metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            caller = await authenticate(self.authenticators, RequestContext(metadata=metadata))
        except AuthenticationError as e:
            log.info("CA: refused a CSR: %s", e)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        ttl = dt.timedelta(seconds=request.validity_duration) if request.validity_duration else None
        try:
            chain = self.ca.sign(request.csr, caller.identities, ttl)
        except IdentityMismatch as e:
            log.warning("CA: refused a CSR from %s: %s", caller.pod or caller.identities[0], e)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except CAError as e:
            log.info("CA: refused a CSR from %s: %s", caller.pod or caller.identities[0], e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        self.issued += 1
        if log.isEnabledFor(logging.DEBUG):
            info = cert_info(load_certs(chain[0])[0])
            log.debug("CA: issued serial %s for %s (%s), valid until %s", info.serial, ",".join(info.uris),
                      caller.pod or "-", info.not_after.isoformat())
        return caproto.IstioCertificateResponse(cert_chain=chain)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.create_certificate,
            request_deserializer=caproto.IstioCertificateRequest.FromString,
            response_serializer=caproto.IstioCertificateResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(caproto.SERVICE, {"CreateCertificate": method})

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((self.rpc_handler(),))

    async def serve(self, address: str) -> int:
        """Serve on ``address`` (``host:port``, port 0 picks one; or ``unix:/path``); the bound port (0 for a
        Unix socket). Plaintext for now: the CA over TLS comes with xDS over TLS (issue 10, item 6)."""
        server = grpc.aio.server()
        self.add_to_server(server)
        port: int = server.add_insecure_port(address)
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
