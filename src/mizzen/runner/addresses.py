"""Loopback address allocation for the local mode: each replica gets a pod IP (where its sidecar binds) and an
app host (where the app listens) with the same host part in two /16s, e.g. 127.20.0.5 and 127.21.0.5.

An address whose ports are already taken (another runner, another test) is skipped, so several runners can
share one machine as long as they use the same or different ranges. Between checking the ports and binding
them (the sidecar and the app start a moment later) another runner could take the same address: each
allocated address is therefore also reserved machine-wide (per network namespace) by an abstract Unix socket
named after it, which the kernel frees when the pool releases it or its process dies (no file is left).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_POD_NET = "127.20.0.0/16"
DEFAULT_APP_NET = "127.21.0.0/16"
# agent admin proxy, http_proxy, Envoy's prometheus_stats: bound on the pod IP when a sidecar runs
SIDECAR_PORTS = (15004, 15080, 15090)


class AddressesExhausted(RuntimeError):
    pass


@dataclass(frozen=True)
class PodAddresses:
    pod_ip: str
    app_host: str


def port_free(host: str, port: int) -> bool:
    """True when host:port can be bound right now (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve(pod_ip: str) -> socket.socket | None:
    """Hold the abstract Unix socket ``@mizzen-address-<pod ip>``; None when another process holds it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(f"\0mizzen-address-{pod_ip}")
    except OSError:
        s.close()
        return None
    return s


class AddressPool:
    def __init__(self, pod_net: str = DEFAULT_POD_NET, app_net: str = DEFAULT_APP_NET) -> None:
        self.pod_net = ipaddress.IPv4Network(pod_net)
        self.app_net = ipaddress.IPv4Network(app_net)
        if not (self.pod_net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
                and self.app_net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))):
            raise ValueError("pod and app networks must be inside 127.0.0.0/8")
        if self.pod_net.prefixlen != self.app_net.prefixlen or self.pod_net.overlaps(self.app_net):
            raise ValueError("pod and app networks must be the same size and must not overlap")
        self._used: dict[int, socket.socket] = {}      # offset -> its machine-wide reservation
        self._next = 1

    def allocate(self, ports: Iterable[int] = (), sidecar: bool = True) -> PodAddresses:
        """The next free pair whose pod IP and app host can bind ``ports`` (and the sidecar's own ports)."""
        wanted = tuple(ports)
        size = self.pod_net.num_addresses
        for _ in range(size):
            offset = self._next
            self._next = self._next % (size - 2) + 1      # skip the network and broadcast-like ends
            if offset in self._used:
                continue
            pod_ip = str(self.pod_net.network_address + offset)
            app_host = str(self.app_net.network_address + offset)
            pod_ports = wanted + (SIDECAR_PORTS if sidecar else ())
            held = reserve(pod_ip)
            if held is None:                               # another runner's, maybe not bound yet
                continue
            if all(port_free(pod_ip, p) for p in pod_ports) and all(port_free(app_host, p) for p in wanted):
                self._used[offset] = held
                return PodAddresses(pod_ip, app_host)
            held.close()
        raise AddressesExhausted(f"no free address pair in {self.pod_net} / {self.app_net}")

    def allocated(self, address: str) -> bool:
        """Whether ``address`` is a pod IP this pool handed out and has not taken back."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return ip in self.pod_net and int(ip) - int(self.pod_net.network_address) in self._used

    def release(self, addrs: PodAddresses) -> None:
        held = self._used.pop(int(ipaddress.IPv4Address(addrs.pod_ip)) - int(self.pod_net.network_address),
                              None)
        if held is not None:
            held.close()

    @property
    def in_use(self) -> int:
        return len(self._used)
