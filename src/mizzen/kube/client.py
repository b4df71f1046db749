"""An asyncio Kubernetes API client from a kubeconfig file or the in-cluster service account.

The library is ``kubernetes_asyncio``: it is generated from Kubernetes' own OpenAPI for each release (36.x
for Kubernetes 1.36), so every API the control plane needs (TokenReview, Lease, EndpointSlice, admission) is
there with its exact parameters; it exposes list/watch verbatim (``resourceVersion``,
``allowWatchBookmarks``, ``timeoutSeconds``) and reports 410 Gone as an ``ApiException``, which a reflector
needs; and it runs on aiohttp, which Mizzen already uses. lightkube and kr8s are pleasant but hide parts of
that protocol behind their own abstractions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

__all__ = ["KubeConfigError", "connect", "service_account_dir"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_IN_CLUSTER_TOKEN = Path(SERVICE_ACCOUNT_DIR) / "token"
MOUNTS_ENV = "MIZZEN_MOUNTS"


def service_account_dir() -> Path:
    """Where the pod's service-account token, CA and namespace are: the standard path, or where the test
    cluster's node agent (which has no mount namespace) put that mount (its ``$MIZZEN_MOUNTS`` map)."""
    try:
        mounts = json.loads(os.environ.get(MOUNTS_ENV) or "{}")
    except ValueError:
        mounts = {}
    if not isinstance(mounts, dict):
        mounts = {}
    for mount_path, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        mp = str(mount_path).rstrip("/")
        if mp == SERVICE_ACCOUNT_DIR or SERVICE_ACCOUNT_DIR.startswith(mp + "/"):
            return Path(str(host) + SERVICE_ACCOUNT_DIR[len(mp):])
    return Path(SERVICE_ACCOUNT_DIR)


class KubeConfigError(Exception):
    """The kubeconfig could not be read (a one-line reason)."""


async def connect(kubeconfig: Path | None = None, context: str | None = None, *,
                  in_cluster: bool = False) -> client.ApiClient:
    """An API client for ``kubeconfig`` (``$KUBECONFIG`` or ``~/.kube/config`` when None), or the in-cluster
    configuration when running in a pod with no kubeconfig; ``in_cluster`` insists on the latter
    (:func:`service_account_dir`). Close it with ``await api.close()``."""
    cfg = client.Configuration()
    if in_cluster:
        sa = service_account_dir()
        if not os.environ.get("KUBERNETES_SERVICE_HOST") or not (sa / "token").is_file():
            raise KubeConfigError(f"not in a pod: no KUBERNETES_SERVICE_HOST or no token in {sa}")
        try:
            loader = InClusterConfigLoader(token_filename=str(sa / "token"), cert_filename=str(sa / "ca.crt"))
            loader.load_and_set(cfg)
        except Exception as e:
            raise KubeConfigError(f"in-cluster config: {' '.join(str(e).split())}") from None
        return client.ApiClient(configuration=cfg)
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
