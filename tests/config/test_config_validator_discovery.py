"""Validator modules are discovered: a module in the validation package registers its kind's validator by
existing, with no import line to add anywhere else."""

from __future__ import annotations

import sys
from pathlib import Path

from mizzen.config.validation import VALIDATORS, import_modules

MODULE = '''\
from mizzen.config.validation.common import Report, register


@register("DiscoveredKind")
def _check(config, report: Report) -> None:
    report.error("spec.x", "found by discovery")
'''


def test_every_module_of_a_package_is_imported_and_registers(tmp_path: Path) -> None:
    pkg = tmp_path / "discovered_validators"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "discoveredkind.py").write_text(MODULE)
    (pkg / "_private.py").write_text("raise AssertionError('private modules are not imported')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert "DiscoveredKind" not in VALIDATORS
        assert import_modules("discovered_validators", [str(pkg)]) == ["discoveredkind"]
        assert "DiscoveredKind" in VALIDATORS
    finally:
        VALIDATORS.pop("DiscoveredKind", None)
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("discovered_validators")]:
            del sys.modules[name]


def test_the_package_modules_registered_the_shipped_kinds() -> None:
    # no module list in validation/__init__.py: these come from discovery alone
    for kind in ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar", "Service"):
        assert kind in VALIDATORS, kind
