"""Unit tests of the istio-init-like rule builder (mizzen.agent.iptables); no root needed. The expected texts
follow istio-iptables' golden outputs (tools/istio-iptables/pkg/capture/testdata)."""

from __future__ import annotations

import dataclasses

import pytest

from mizzen.agent.iptables import (
    CaptureConfig,
    iptables_commands,
    main,
    nat_rules,
    parse_flags,
    render_restore,
)

# istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 22,80,443 (inbound-wildcard-exclude
# golden, plus the outbound '*' jump)
ISTIO_WILDCARD_EXCLUDE = """\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m multiport --dports 22,80,443 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""


def _appends(cfg: CaptureConfig, chain: str) -> list[str]:
    return [" ".join(r[2:]) for r in nat_rules(cfg) if r[0] == "-A" and r[1] == chain]


def test_netns_rules_match_istio_golden() -> None:
    assert render_restore(CaptureConfig(exclude_inbound_ports=(22, 80, 443))) == ISTIO_WILDCARD_EXCLUDE


def test_netns_rules_sidecar_defaults_exclude_admin_and_agent_ports() -> None:
    inbound = _appends(CaptureConfig.for_sidecar(15000), "ISTIO_INBOUND")
    assert inbound == ["-p tcp --dport 15008 -j RETURN",
                       "-p tcp -m multiport --dports 15090,15021,15020,15000 -j RETURN",
                       "-p tcp -j ISTIO_IN_REDIRECT"]
    # the admin port already excluded is not repeated
    assert CaptureConfig.for_sidecar(15090).exclude_inbound_ports == (15090, 15021, 15020)


def test_netns_rules_inbound_port_list_and_none() -> None:
    listed = CaptureConfig(inbound_ports=(9080, 9090))
    assert _appends(listed, "ISTIO_INBOUND")[1:] == ["-p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
                                                     "-p tcp --dport 9090 -j ISTIO_IN_REDIRECT"]
    none = CaptureConfig(inbound_ports=())
    assert _appends(none, "PREROUTING") == []
    assert _appends(none, "ISTIO_INBOUND") == ["-p tcp --dport 15008 -j RETURN"]


def test_netns_rules_outbound_exclusions_come_before_the_owner_rules() -> None:
    cfg = CaptureConfig(exclude_outbound_ports=(22, 80, 443), exclude_outbound_ip_ranges=("10.96.0.0/12",),
                        outbound_ip_ranges=("10.0.0.0/8", "192.168.1.7"))
    out = _appends(cfg, "ISTIO_OUTPUT")
    assert out[:3] == ["-p tcp -m multiport --dports 22,80,443 -j RETURN",
                       "-p udp -m multiport --dports 22,80,443 -j RETURN",
                       "-o lo -s 127.0.0.6/32 -j RETURN"]
    assert out[-4:] == ["-d 127.0.0.1/32 -j RETURN", "-d 10.96.0.0/12 -j RETURN",
                        "-d 10.0.0.0/8 -j ISTIO_REDIRECT", "-d 192.168.1.7/32 -j ISTIO_REDIRECT"]
    assert "-j ISTIO_REDIRECT" not in out      # no catch-all when ranges are listed


def test_netns_rules_loopback_include_keeps_app_self_calls_captured() -> None:
    cfg = CaptureConfig(outbound_ip_ranges=("127.0.0.0/8",))
    assert cfg.captures_loopback
    assert not any("! --uid-owner" in r for r in _appends(cfg, "ISTIO_OUTPUT"))
    assert any("! --uid-owner 1337 -j RETURN" in r for r in _appends(CaptureConfig(), "ISTIO_OUTPUT"))


def test_netns_rules_several_proxy_users_groups_and_interfaces() -> None:
    cfg = CaptureConfig(proxy_uids=(1337, 0), proxy_gids=(), exclude_interfaces=("eth1",))
    out = _appends(cfg, "ISTIO_OUTPUT")
    assert [r for r in out if r.startswith("-m owner")] == ["-m owner --uid-owner 1337 -j RETURN",
                                                            "-m owner --uid-owner 0 -j RETURN"]
    assert not any("gid-owner" in r for r in out)
    assert _appends(cfg, "PREROUTING")[0] == "-i eth1 -j RETURN"
    assert _appends(cfg, "OUTPUT") == ["-o eth1 -j RETURN", "-j ISTIO_OUTPUT"]


def test_netns_rules_multiport_is_split_by_fifteen() -> None:
    ports = tuple(range(20000, 20020))
    inbound = _appends(CaptureConfig(exclude_inbound_ports=ports), "ISTIO_INBOUND")
    assert inbound[1] == "-p tcp -m multiport --dports " + ",".join(map(str, ports[:15])) + " -j RETURN"
    assert inbound[2] == "-p tcp -m multiport --dports " + ",".join(map(str, ports[15:])) + " -j RETURN"


def test_netns_rules_custom_ports_and_commands() -> None:
    cfg = dataclasses.replace(CaptureConfig(), proxy_port=16001, inbound_capture_port=16006)
    cmds = iptables_commands(cfg, binary="/usr/sbin/iptables")
    assert cmds[0] == ["/usr/sbin/iptables", "-t", "nat", "-N", "ISTIO_INBOUND"]
    assert ["/usr/sbin/iptables", "-t", "nat", "-A", "ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT",
            "--to-ports", "16001"] in cmds
    assert len(cmds) == len(nat_rules(cfg))
    assert "--to-ports 16006" in render_restore(cfg)


@pytest.mark.parametrize("kw", [
    {"proxy_port": 0}, {"exclude_inbound_ports": (70000,)}, {"exclude_outbound_ip_ranges": ("10.0.0.300/8",)},
    {"outbound_ip_ranges": ("fd00::/8",)}, {"exclude_interfaces": ("",)},
])
def test_netns_rules_reject_invalid_flags(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CaptureConfig(**kw)  # type: ignore[arg-type]


def test_netns_rules_istio_flags(capsys: pytest.CaptureFixture[str]) -> None:
    cfg, apply = parse_flags(["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                              "-x", "10.96.0.0/12,169.254.169.254/32", "-b", "*", "-d", "22,80,443",
                              "-o", "5432", "-c", "eth1"])
    assert not apply
    assert cfg == CaptureConfig(exclude_inbound_ports=(22, 80, 443), exclude_outbound_ports=(5432,),
                                exclude_outbound_ip_ranges=("10.96.0.0/12", "169.254.169.254/32"),
                                exclude_interfaces=("eth1",))
    assert parse_flags(["-b", "9080,9090", "-i", "10.0.0.0/8", "--apply"]) == (
        CaptureConfig(inbound_ports=(9080, 9090), outbound_ip_ranges=("10.0.0.0/8",)), True)
    assert main(["-d", "22,80,443"]) == 0
    assert capsys.readouterr().out == ISTIO_WILDCARD_EXCLUDE
    for bad in (["-m", "TPROXY"], ["-d", "http"], ["-x", "10.0.0.0/33"]):
        with pytest.raises(SystemExit):
            parse_flags(bad)
