"""What a container process gets: its argv (``command``/``args`` after ``$(VAR)`` expansion, or our own app
for Istio's Bookinfo images when no command is given) and its environment (pod identity, the local networking
model's HOST/PORT/MIZZEN_APP_HOST/HTTP_PROXY, then the container's ``env`` with Kubernetes' expansion rules).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mizzen.runner.manifests import ContainerSpec, expand

# Host variables a local process needs to run at all (a container would get these from its image).
INHERITED_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "PYTHONPATH", "VIRTUAL_ENV",
)
# Istio's proxy image: its entrypoint is pilot-agent, which is ``python -m mizzen.agent`` here (also when a
# command names it, as the injector's postStart hook ``pilot-agent wait`` does)
_PROXY_IMAGE = re.compile(r"(^|/)proxyv2(?::|@|$)")
_BOOKINFO_IMAGE = re.compile(r"examples-bookinfo-(productpage|details|reviews|ratings)-(v\d+)(?::|@|$)")


class CommandError(ValueError):
    pass


@dataclass(frozen=True)
class PodIdentity:
    name: str
    namespace: str
    pod_ip: str
    app_host: str
    service_account: str
    labels: Mapping[str, str]
    sidecar: bool                 # when False there is no http_proxy listener, so HTTP_PROXY is not set
    python: str
    http_proxy_port: int = 15080
    host_ip: str = "127.0.0.1"    # status.hostIP: the node's address (loopback in the local model)
    node_name: str = "local"      # spec.nodeName
    uid: str = ""                 # metadata.uid
    annotations: Mapping[str, str] = field(default_factory=dict)


def field_ref(path: str, pod: PodIdentity) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for ``pod`` ("" when unknown)."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "status.podIP": pod.pod_ip,
        "status.podIPs": pod.pod_ip,
        "status.hostIP": pod.host_ip,
        "status.hostIPs": pod.host_ip,
        "spec.nodeName": pod.node_name,
        "metadata.uid": pod.uid,
        "spec.serviceAccountName": pod.service_account,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    if m:
        return pod.labels.get(m.group(1), "")
    m = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
    if m:
        return pod.annotations.get(m.group(1), "")
    return ""


def container_env(container: ContainerSpec, pod: PodIdentity) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    port = container.ports[0].container_port if container.ports else 0
    env.update(
        PYTHONUNBUFFERED="1",
        MIZZEN_PYTHON=pod.python,
        HOSTNAME=pod.name,
        POD_NAME=pod.name,
        POD_NAMESPACE=pod.namespace,
        POD_IP=pod.pod_ip,
        INSTANCE_IP=pod.pod_ip,
        SERVICE_ACCOUNT=pod.service_account,
        HOST=pod.app_host,
        MIZZEN_APP_HOST=pod.app_host,
    )
    if port:
        env["PORT"] = str(port)
    if pod.sidecar and pod.http_proxy_port:
        proxy = f"http://{pod.pod_ip}:{pod.http_proxy_port}"
        env.update(HTTP_PROXY=proxy, http_proxy=proxy)
    for var in container.env:
        if var.field_path is not None:
            env[var.name] = field_ref(var.field_path, pod)
        else:
            env[var.name] = expand(var.value or "", env)
    return env


def container_argv(container: ContainerSpec, env: Mapping[str, str], python: str) -> list[str]:
    if container.command and container.command[0] == "pilot-agent":
        return [python, "-m", "mizzen.agent", *(expand(a, env) for a in (*container.command[1:],
                                                                          *container.args))]
    if container.command:
        return [expand(a, env) for a in (*container.command, *container.args)]
    if _PROXY_IMAGE.search(container.image):
        return [python, "-m", "mizzen.agent", *(expand(a, env) for a in container.args)]
    m = _BOOKINFO_IMAGE.search(container.image)
    if m:
        base = [python, "-m", "mizzen.bookinfo", m.group(1), "--version", m.group(2)]
        return base + [expand(a, env) for a in container.args]
    raise CommandError(
        f"container {container.name!r}: no command, and image {container.image!r} is not one the local "
        "runner knows how to run; give the container a command (e.g. [\"$(MIZZEN_PYTHON)\", \"-m\", ...])"
    )
