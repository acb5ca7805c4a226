"""Model directories in the Hugging Face remote-code layout, and a Hub cache holding one, made by the tests.

The network (`modeling_cutout_net.py`, `configuration_cutout_net.py`) imports what BiRefNet-class modeling files
import, so loading it proves that those packages are installed and work together with this torch. Its weights are
seeded random values written by building the model through transformers' own remote-code path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODE_FILES = ("configuration_cutout_net.py", "modeling_cutout_net.py")
# Divisible by the patch size times the attention window (4 x 4).
INPUT_SIZE = (64, 48)


def write_cutout_net(out_dir: Path, seed: int = 0) -> Path:
    """Create `out_dir` with config.json (auto_map), the two code files and model.safetensors."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForImageSegmentation

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copyfile(HERE / name, out_dir / name)
    config = {
        "architectures": ["CutoutNet"],
        "auto_map": {"AutoConfig": "configuration_cutout_net.CutoutNetConfig",
                     "AutoModelForImageSegmentation": "modeling_cutout_net.CutoutNet"},
        "model_type": "cutout_net",
        "embed_dim": 16,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    built_config = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    torch.manual_seed(seed)
    model = AutoModelForImageSegmentation.from_config(built_config, trust_remote_code=True)
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def populate_hub_cache(hub_cache: Path, repo_id: str, model_dir: Path) -> str:
    """Lay `model_dir` out in `hub_cache` as a download of `repo_id` at `main` would be; returns the commit.

    Same layout as huggingface_hub's cache: content-addressed blobs, a snapshot folder named by the commit whose
    files link to them, and refs/main naming the commit. `HF_HUB_CACHE=hub_cache HF_HUB_OFFLINE=1` then loads
    the repository by id, with or without the commit as revision.
    """
    files = sorted(path for path in model_dir.iterdir() if path.is_file())
    commit = hashlib.sha1(b"".join(path.name.encode() + path.read_bytes() for path in files)).hexdigest()
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        link = snapshot / path.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
