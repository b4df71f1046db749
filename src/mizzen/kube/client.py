"""An asyncio Kubernetes API client from a kubeconfig file or the in-cluster service account.

The library is ``kubernetes_asyncio``: it is generated from Kubernetes' own OpenAPI for each release (36.x
for Kubernetes 1.36), so every API the control plane needs (TokenReview, Lease, EndpointSlice, admission) is
there with its exact parameters; it exposes list/watch verbatim (``resourceVersion``,
``allowWatchBookmarks``, ``timeoutSeconds``) and reports 410 Gone as an ``ApiException``, which a reflector
needs; and it runs on aiohttp, which Mizzen already uses. lightkube and kr8s are pleasant but hide parts of
that protocol behind their own abstractions.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client, config

__all__ = ["KubeConfigError", "connect"]

_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubeConfigError(Exception):
    """The kubeconfig could not be read (a one-line reason)."""


async def connect(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """An API client for ``kubeconfig`` (``$KUBECONFIG`` or ``~/.kube/config`` when None), or the in-cluster
    configuration when running in a pod with no kubeconfig. Close it with ``await api.close()``."""
    cfg = client.Configuration()
    path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    try:
        if path is None and _IN_CLUSTER_TOKEN.exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            path = path or Path.home() / ".kube" / "config"
            if not path.is_file():
                raise KubeConfigError(f"kubeconfig {path} does not exist")
            await config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg,
                                          persist_config=False)
    except KubeConfigError:
        raise
    except Exception as e:  # the library raises several kinds for a bad file; say which file and why
        raise KubeConfigError(f"cannot use kubeconfig {path}: {' '.join(str(e).split())}") from None
    return client.ApiClient(configuration=cfg)
