"""``mizzen x authz check POD`` against a real control plane and the proxies it configured, and ``mizzen
validate`` on AuthorizationPolicy / RequestAuthentication mistakes (one line each, exit 1)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from authz_kit import NS, world
from test_authz_jwt import INLINE
from test_authz_table import ap

from harness import Mesh

pytestmark = pytest.mark.e2e
MIZZEN = str(Path(sys.executable).parent / "mizzen")


async def mizzen(*args: str, mesh: Mesh | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIZZEN_")}
    if mesh is not None:
        env.update(MIZZEN_SERVER=mesh.cp.http_url, MIZZEN_TOKEN=mesh.cp.token)
    p = await asyncio.create_subprocess_exec(MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode or 0, out.decode(), err.decode()


async def test_x_authz_check_lists_the_policies_of_a_pod(mesh: Mesh) -> None:
    w = await world(mesh)
    code, out, err = await mizzen("x", "authz", "check", "server", "-n", NS, mesh=mesh)
    assert code == 0, err
    assert "no AuthorizationPolicy applies" in out
    await w.apply(INLINE + ap("allow-get", "  rules: [{to: [{operation: {methods: [GET]}}]}, {}]")
                  + ap("deny-admin", "  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]")
                  + ap("audit", "  action: AUDIT\n  rules: [{}]", namespace="istio-system")
                  + ap("try", "  action: DENY\n  rules: [{}]", annotations='{"istio.io/dry-run": "true"}')
                  + ap("other", "  selector: {matchLabels: {app: nobody}}\n  rules: [{}]"))
    code, out, err = await mizzen("x", "authz", "check", "server", "-n", NS, mesh=mesh)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()[1:]]
    assert lines[0] == ["ACTION", "AuthorizationPolicy", "RULES"]
    assert ["AUDIT", "audit.istio-system", "1"] in lines
    assert ["DENY", "deny-admin.foo", "1"] in lines
    assert ["DENY", "(dry-run)", "try.foo", "1"] in lines
    assert ["ALLOW", "allow-get.foo", "2"] in lines
    assert not any("other.foo" in line for line in lines)        # its selector does not match this pod
    assert "JWT: validated" in out
    code, out, err = await mizzen("get", "ap", "-n", NS, mesh=mesh)       # Istio's printer column Action
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "ACTION", "AGE"]
    assert rows[[r[0] for r in rows].index("deny-admin")][:2] == ["deny-admin", "DENY"]
    assert len(rows[[r[0] for r in rows].index("allow-get")]) == 2       # no action set: empty, like kubectl


async def test_validate_rejects_bad_policies_in_one_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        ap("custom", "  action: CUSTOM\n  rules: [{}]")
        + ap("keys", '  rules: [{when: [{key: "request.weird", values: [x]}, '
                     '{key: source.ip, values: [nope]}]}]')
        + ap("empty", "  rules: [{from: [{source: {}}]}]")
        + "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n"
          "  jwtRules: [{issuer: x, jwksUri: 'ftp://x'}]\n")
    code, out, err = await mizzen("validate", "-f", str(bad))
    assert code == 1
    text = out + err
    assert "Traceback" not in text
    for want in ("spec.provider.name: must specify a provider name for CUSTOM action",
                 "unknown attribute: request.weird", "nope is not a valid IP",
                 "`from.source` must not be empty", "invalid jwksUri 'ftp://x'"):
        assert want in text, text
