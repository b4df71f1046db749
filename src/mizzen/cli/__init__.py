"""The ``mizzen`` command line (kubectl/istioctl-shaped); the typer app is :data:`mizzen.cli.main.app`."""

from __future__ import annotations
