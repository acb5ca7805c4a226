"""PyTorch model core, usable without Ray (the bulk tool and the benchmarks import it directly)."""

from serve_app.model.core import BackgroundRemovalModel

__all__ = ["BackgroundRemovalModel"]
