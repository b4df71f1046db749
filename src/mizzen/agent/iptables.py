"""Istio's iptables traffic capture (``istio-iptables`` / the ``istio-init`` container, REDIRECT mode) as
pure functions: a :class:`CaptureConfig` in, the nat-table rules out, either as ``iptables-restore`` input
or as one ``iptables`` command per rule; :func:`parse_flags` reads istio-iptables' flags. Only ``main``
(``python -m mizzen.agent.iptables [flags] [--apply]``, the istio-init step) runs a command. TPROXY, DNS
capture and IPv6 are not modelled.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CHAINS",
    "DEFAULT_EXCLUDE_INBOUND_PORTS",
    "ISTIO_INBOUND",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_REDIRECT",
    "PROXY_UID",
    "CaptureConfig",
    "iptables_commands",
    "main",
    "nat_rules",
    "parse_flags",
    "render_restore",
]

ISTIO_INBOUND = "ISTIO_INBOUND"
ISTIO_REDIRECT = "ISTIO_REDIRECT"
ISTIO_IN_REDIRECT = "ISTIO_IN_REDIRECT"
ISTIO_OUTPUT = "ISTIO_OUTPUT"
CHAINS = (ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT, ISTIO_OUTPUT)
PROXY_UID = 1337
# what Istio's injector passes as excludeInboundPorts: Prometheus stats, health, the agent's status port
DEFAULT_EXCLUDE_INBOUND_PORTS = (15090, 15021, 15020)
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32"   # Envoy's inbound passthrough binds this source
_MULTIPORT_MAX = 15                           # iptables' multiport match takes at most 15 ports


@dataclass(frozen=True)
class CaptureConfig:
    """The istio-iptables flags Mizzen supports, with Istio's defaults.

    ``inbound_ports``/``outbound_ip_ranges``: ``"*"`` captures everything, a sequence captures only those
    ports / CIDRs, an empty sequence captures nothing. Mizzen's agent serves its admin proxy on the pod IP
    (15004; Envoy's admin itself is a Unix socket), so a sidecar's capture must also exclude that port: see
    :meth:`for_sidecar`.
    """

    proxy_port: int = 15001                     # virtualOutbound (-p)
    inbound_capture_port: int = 15006           # virtualInbound (-z)
    inbound_tunnel_port: int = 15008            # HBONE, never captured
    proxy_uids: tuple[int, ...] = (PROXY_UID,)  # -u: traffic of these users is not captured outbound
    proxy_gids: tuple[int, ...] = (PROXY_UID,)  # -g
    inbound_ports: Literal["*"] | tuple[int, ...] = "*"                  # -b
    exclude_inbound_ports: tuple[int, ...] = DEFAULT_EXCLUDE_INBOUND_PORTS  # -d
    exclude_outbound_ports: tuple[int, ...] = ()                         # -o
    outbound_ip_ranges: Literal["*"] | tuple[str, ...] = "*"             # -i
    exclude_outbound_ip_ranges: tuple[str, ...] = ()                     # -x
    exclude_interfaces: tuple[str, ...] = ()                             # -c
    loopback_cidr: str = "127.0.0.1/32"

    @classmethod
    def for_sidecar(cls, admin_port: int) -> CaptureConfig:
        """Istio's defaults plus the agent's admin proxy port among the inbound exclusions
        (``dataclasses.replace`` the result for other flags)."""
        return cls(exclude_inbound_ports=tuple(dict.fromkeys((*DEFAULT_EXCLUDE_INBOUND_PORTS, admin_port))))

    def __post_init__(self) -> None:
        ports = [self.proxy_port, self.inbound_capture_port, self.inbound_tunnel_port,
                 *self.exclude_inbound_ports, *self.exclude_outbound_ports,
                 *(() if self.inbound_ports == "*" else self.inbound_ports)]
        bad = [p for p in ports if not 0 < p < 65536]
        if bad:
            raise ValueError(f"invalid port(s): {bad}")
        ranges = [*self.exclude_outbound_ip_ranges,
                  *(() if self.outbound_ip_ranges == "*" else self.outbound_ip_ranges), self.loopback_cidr]
        for r in ranges:
            try:
                net = ipaddress.ip_network(r, strict=False)
            except ValueError as e:
                raise ValueError(f"invalid CIDR {r!r}: {e}") from None
            if net.version != 4:
                raise ValueError(f"IPv6 range {r!r}: only IPv4 capture is supported")
        if any(not i or " " in i for i in self.exclude_interfaces):
            raise ValueError(f"invalid interface name in {self.exclude_interfaces}")

    @property
    def captures_loopback(self) -> bool:
        """An outbound include range covering loopback: app->self traffic over lo is then captured too."""
        if self.outbound_ip_ranges == "*":
            return False
        return any(ipaddress.ip_network(r, strict=False).network_address.is_loopback
                   for r in self.outbound_ip_ranges)


def _cidr(r: str) -> str:
    return str(ipaddress.ip_network(r, strict=False))


def _port_matches(ports: Sequence[int]) -> list[list[str]]:
    """``--dport P`` for one port, ``-m multiport --dports a,b,..`` per 15 for several (as istio-iptables)."""
    if len(ports) == 1:
        return [["--dport", str(ports[0])]]
    return [["-m", "multiport", "--dports", ",".join(str(p) for p in ports[i:i + _MULTIPORT_MAX])]
            for i in range(0, len(ports), _MULTIPORT_MAX)]


def nat_rules(cfg: CaptureConfig) -> list[list[str]]:
    """The nat-table rules in order: chain creations (``-N``) first, then appends (``-A``), each as the
    arguments after ``iptables -t nat``; the rule order is istio-iptables' (``tools/istio-iptables``)."""
    rules: list[list[str]] = [["-N", c] for c in CHAINS]

    def add(chain: str, *args: str) -> None:
        rules.append(["-A", chain, *args])

    for iface in cfg.exclude_interfaces:
        add("PREROUTING", "-i", iface, "-j", "RETURN")
        add("OUTPUT", "-o", iface, "-j", "RETURN")
    add(ISTIO_INBOUND, "-p", "tcp", "--dport", str(cfg.inbound_tunnel_port), "-j", "RETURN")
    add(ISTIO_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(cfg.proxy_port))
    add(ISTIO_IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(cfg.inbound_capture_port))

    # inbound: everything (minus exclusions) or the listed ports goes to virtualInbound
    if cfg.inbound_ports == "*" or cfg.inbound_ports:
        add("PREROUTING", "-p", "tcp", "-j", ISTIO_INBOUND)
        if cfg.inbound_ports == "*":
            if cfg.exclude_inbound_ports:
                for m in _port_matches(cfg.exclude_inbound_ports):
                    add(ISTIO_INBOUND, "-p", "tcp", *m, "-j", "RETURN")
            add(ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT)
        else:
            for p in cfg.inbound_ports:
                add(ISTIO_INBOUND, "-p", "tcp", "--dport", str(p), "-j", ISTIO_IN_REDIRECT)

    # outbound
    add("OUTPUT", "-j", ISTIO_OUTPUT)
    if cfg.exclude_outbound_ports:
        for proto in ("tcp", "udp"):
            for m in _port_matches(cfg.exclude_outbound_ports):
                add(ISTIO_OUTPUT, "-p", proto, *m, "-j", "RETURN")
    add(ISTIO_OUTPUT, "-o", "lo", "-s", INBOUND_PASSTHROUGH_SOURCE, "-j", "RETURN")
    loopback = _cidr(cfg.loopback_cidr)
    for flag, ids in (("--uid-owner", cfg.proxy_uids), ("--gid-owner", cfg.proxy_gids)):
        for ident in ids:
            # the proxy calling the pod's own IP over lo (app -> VIP -> own pod) goes back through inbound
            add(ISTIO_OUTPUT, "-o", "lo", "!", "-d", loopback, "-p", "tcp", "!", "--dport",
                str(cfg.inbound_tunnel_port), "-m", "owner", flag, str(ident), "-j", ISTIO_IN_REDIRECT)
            # the app calling itself by pod IP stays on lo, uncaptured
            if not cfg.captures_loopback:
                add(ISTIO_OUTPUT, "-o", "lo", "-m", "owner", "!", flag, str(ident), "-j", "RETURN")
            # the proxy's own upstream traffic is never captured (no loops)
            add(ISTIO_OUTPUT, "-m", "owner", flag, str(ident), "-j", "RETURN")
    add(ISTIO_OUTPUT, "-d", loopback, "-j", "RETURN")
    for r in cfg.exclude_outbound_ip_ranges:
        add(ISTIO_OUTPUT, "-d", _cidr(r), "-j", "RETURN")
    if cfg.outbound_ip_ranges == "*":
        add(ISTIO_OUTPUT, "-j", ISTIO_REDIRECT)
    else:
        for r in cfg.outbound_ip_ranges:
            add(ISTIO_OUTPUT, "-d", _cidr(r), "-j", ISTIO_REDIRECT)
    return rules


def render_restore(cfg: CaptureConfig) -> str:
    """``iptables-restore --noflush`` input for the nat table (what istio-init feeds to iptables-restore)."""
    lines = ["* nat", *(" ".join(r) for r in nat_rules(cfg)), "COMMIT"]
    return "\n".join(lines) + "\n"


def iptables_commands(cfg: CaptureConfig, binary: str = "iptables") -> list[list[str]]:
    """The same rules as one argv per rule (``iptables -t nat -A ...``), for callers without
    iptables-restore."""
    return [[binary, "-t", "nat", *r] for r in nat_rules(cfg)]


# --- the istio-iptables command line ---------------------------------------------------------------------
def _ports(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want comma-separated ports") from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mizzen.agent.iptables",
                                description="Print (or --apply) istio-iptables' REDIRECT capture rules.")
    p.add_argument("-p", "--envoy-port", type=int, default=15001)
    p.add_argument("-z", "--inbound-capture-port", type=int, default=15006)
    p.add_argument("-u", "--proxy-uid", type=_ports, default=(PROXY_UID,))
    p.add_argument("-g", "--proxy-gid", type=_ports, default=(PROXY_UID,))
    p.add_argument("-m", "--istio-inbound-interception-mode", default="REDIRECT", choices=["REDIRECT"])
    p.add_argument("-b", "--istio-inbound-ports", default="*", help="'*' or comma-separated ports")
    p.add_argument("-d", "--istio-local-exclude-ports", type=_ports, default=DEFAULT_EXCLUDE_INBOUND_PORTS)
    p.add_argument("-o", "--istio-local-outbound-ports-exclude", type=_ports, default=())
    p.add_argument("-i", "--istio-service-cidr", default="*", help="'*' or comma-separated CIDRs")
    p.add_argument("-x", "--istio-service-exclude-cidr", type=_words, default=())
    p.add_argument("-c", "--exclude-interfaces", type=_words, default=())
    p.add_argument("-q", "--istio-local-outbound-ports", type=_ports, default=(),
                   help="(not supported: must be empty)")
    p.add_argument("-k", "--kube-virt-interfaces", type=_words, default=(),
                   help="(not supported: must be empty)")
    p.add_argument("--log_output_level", default="", help="accepted for istio-iptables compatibility")
    p.add_argument("--log_as_json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--apply", action="store_true", help="feed the rules to `iptables-restore --noflush`")
    return p


def parse_flags(argv: Sequence[str]) -> tuple[CaptureConfig, bool]:
    """istio-iptables' flags (the subset above) -> (config, apply?). Raises SystemExit on bad flags."""
    p = _parser()
    a = p.parse_args(list(argv))
    for flag, value in (("-q", a.istio_local_outbound_ports), ("-k", a.kube_virt_interfaces)):
        if value:
            p.error(f"{flag}: not supported by Mizzen's capture (REDIRECT of all outbound ports)")
    try:
        cfg = CaptureConfig(
            proxy_port=a.envoy_port, inbound_capture_port=a.inbound_capture_port,
            proxy_uids=a.proxy_uid, proxy_gids=a.proxy_gid,
            inbound_ports="*" if a.istio_inbound_ports.strip() == "*" else _ports(a.istio_inbound_ports),
            exclude_inbound_ports=a.istio_local_exclude_ports,
            exclude_outbound_ports=a.istio_local_outbound_ports_exclude,
            outbound_ip_ranges="*" if a.istio_service_cidr.strip() == "*" else _words(a.istio_service_cidr),
            exclude_outbound_ip_ranges=a.istio_service_exclude_cidr, exclude_interfaces=a.exclude_interfaces)
    except (ValueError, argparse.ArgumentTypeError) as e:
        p.error(str(e))
    return cfg, bool(a.apply)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, apply = parse_flags(sys.argv[1:] if argv is None else argv)
    text = render_restore(cfg)
    if not apply:
        sys.stdout.write(text)
        return 0
    r = subprocess.run(["iptables-restore", "--noflush"], input=text, text=True, capture_output=True,
                       check=False)
    if r.returncode != 0:
        sys.stderr.write(f"iptables-restore failed ({r.returncode}): {r.stderr}")
    return r.returncode


if __name__ == "__main__":
    raise SystemExit(main())
