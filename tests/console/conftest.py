"""The console's tests also use the demo tests' helpers (``demo_helpers``: a real ``mizzen demo``)."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "demo"))
