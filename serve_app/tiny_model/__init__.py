"""Write a tiny model directory that loads through the production path (remote code, local directory).

Used by the tests and by `scripts/make_tiny_model.py`; no weights are downloaded and nothing is trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from serve_app.model.core import IMAGENET_MEAN, IMAGENET_STD

MODELING_FILE = Path(__file__).with_name("modeling_tiny_segmenter.py")

# logit = GAIN * (sum over channels of (1 - colour_c) - THRESHOLD), colours in [0, 1].
# White scores -GAIN*THRESHOLD = -5 (alpha ~2/255); a saturated red (sum 2) scores +35 (alpha 255).
GAIN = 20.0
THRESHOLD = 0.25


def tiny_model_weights(inverted: bool = False) -> dict[str, torch.Tensor]:
    """Weights of the 1x1 convolution, derived for ImageNet-normalised input x_c = (colour_c - mean_c) / std_c.

    sum_c (1 - colour_c) = sum_c (1 - mean_c) - sum_c std_c * x_c, hence weight_c = -GAIN * std_c and
    bias = GAIN * (sum_c (1 - mean_c) - THRESHOLD). `inverted` negates the score: the model then keeps the white
    background and drops the object, so that tests serving two models can tell which one answered.
    """
    sign = -1.0 if inverted else 1.0
    weight = torch.tensor([-sign * GAIN * s for s in IMAGENET_STD]).view(1, 3, 1, 1)
    bias = torch.tensor([sign * GAIN * (sum(1.0 - m for m in IMAGENET_MEAN) - THRESHOLD)])
    return {"score.weight": weight.contiguous(), "score.bias": bias.contiguous()}


def write_tiny_model(out_dir: str | Path, inverted: bool = False) -> Path:
    """Create `out_dir` with config.json (auto_map), the modeling code and model.safetensors."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODELING_FILE, out / MODELING_FILE.name)
    module = MODELING_FILE.stem
    config = {
        "model_type": "tiny_segmenter",
        "architectures": ["TinySegmenter"],
        "auto_map": {
            "AutoConfig": f"{module}.TinySegmenterConfig",
            "AutoModelForImageSegmentation": f"{module}.TinySegmenter",
        },
        "coarse_stride": 4,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tiny_model_weights(inverted), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
