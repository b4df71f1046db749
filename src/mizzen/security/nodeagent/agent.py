"""One pod's identity agent: CA client + SecretManager + SDS server, started and stopped together.

This is what the agent process runs beside its Envoy (pilot-agent's SDS half): give it the pod's identity,
the CA's address, the credential the runner issued and the SDS socket path that Envoy's ``sds-grpc``
cluster points at (:func:`mizzen.security.sdsconfig.sds_cluster`). ``secret_items()`` is the data for
``mizzen proxy-config secret``. With ``tls`` (the agent) the CA is reached over the control plane's TLS
port, and every new certificate's roots become the roots that port is verified with.
"""

from __future__ import annotations

from pathlib import Path

from mizzen.security.identity import Identity
from mizzen.security.nodeagent.cache import SecretItem, SecretManager, SecretManagerOptions
from mizzen.security.nodeagent.caclient import CAClient
from mizzen.security.nodeagent.sds import SdsServer
from mizzen.security.nodeagent.upstream import ControlPlaneTls, Credential

__all__ = ["IdentityAgent"]


class IdentityAgent:
    def __init__(self, identity: Identity, ca_target: str, credential: Credential, sds_socket: Path,
                 options: SecretManagerOptions | None = None, metadata: dict[str, str] | None = None,
                 tls: ControlPlaneTls | None = None) -> None:
        self.client = CAClient(ca_target, credential, metadata=metadata, tls=tls)
        self.manager = SecretManager(identity, self.client, options)
        self.sds = SdsServer(self.manager)
        self.sds_socket = sds_socket
        self.tls = tls
        if tls is not None:
            manager = self.manager

            def follow_roots() -> None:
                if manager.current is not None:
                    tls.update_roots(manager.current.roots.pem)
            manager.subscribe(follow_roots)

    async def start(self) -> None:
        """Serve SDS (Envoy's streams wait for the first certificate) and start fetching."""
        await self.sds.start(self.sds_socket)
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()
        await self.sds.stop()
        await self.client.close()

    async def __aenter__(self) -> IdentityAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def secret_items(self) -> list[SecretItem]:
        return self.manager.secret_items()
