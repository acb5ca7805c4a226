"""Build the real BiRefNet architecture with random weights, for benchmarks on machines without Hub access.

The architecture comes from BiRefNet's public repository, which is never committed here: put a checkout of it
(at least config.py and models/) in the folder named by BIREFNET_SRC (default: .birefnet at the repo root) and use

    model_id: import:birefnet_random:build      (with scripts/ on PYTHONPATH)

Only the inference graph is needed, so two training-only imports of that code are replaced by stand-ins:
`dataset` (which pulls in OpenCV for its class list) and `kornia.filters.laplacian` (used only in training).
The random weights are seeded, so every build gives the same ones.
"""

import os
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _install_training_only_stand_ins() -> None:
    if "dataset" not in sys.modules:
        sys.modules["dataset"] = types.SimpleNamespace(class_labels_TR_sorted=[])  # type: ignore[assignment]
    try:
        import kornia.filters  # noqa: F401
    except ImportError:
        def laplacian(*_args, **_kwargs):
            raise RuntimeError("kornia is not installed; laplacian is only used in training")

        kornia = types.ModuleType("kornia")
        kornia.filters = types.SimpleNamespace(laplacian=laplacian)  # type: ignore[attr-defined]
        sys.modules["kornia"] = kornia
        sys.modules["kornia.filters"] = kornia.filters  # type: ignore[assignment]


def build():
    source = Path(os.environ.get("BIREFNET_SRC", REPO_ROOT / ".birefnet")).resolve()
    if not (source / "models" / "birefnet.py").exists():
        raise FileNotFoundError(f"no BiRefNet checkout at {source} (set BIREFNET_SRC)")
    sys.path.insert(0, str(source))
    _install_training_only_stand_ins()
    import torch
    from models.birefnet import BiRefNet  # the public repository's code, imported at run time only

    # The same random weights at every build: compiled packages are keyed by a weights fingerprint, so a
    # restarted replica finds the packages the last one built.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BiRefNet(bb_pretrained=False)
