"""The ingress replicas do not load torch: Serve imports the application module in every replica."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_application_leaves_torch_unloaded() -> None:
    probe = "import sys, serve_app.app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"  # each ingress replica would otherwise pay seconds and ~0.3 GB for it
