"""The loop users start from, as the baseline every figure is compared with.

Per image, one at a time: Pillow decode, Pillow resize to the model size, torchvision ToTensor + Normalize on the
CPU, a batch of 1 in fp32, sigmoid, ToPILImage, Pillow resize back, putalpha, PNG at Pillow's default level 6.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms

from serve_app.model.core import IMAGENET_MEAN, IMAGENET_STD, final_logits

# Built once, as a user's script would at the top.
_TO_MODEL = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
_TO_PIL = transforms.ToPILImage()


def naive_cutout(network: torch.nn.Module, jpeg: bytes, input_size: tuple[int, int], device: torch.device) -> bytes:
    """One photo through the naive loop: RGBA PNG bytes."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    pixels = _TO_MODEL(image.resize(input_size, Image.Resampling.BILINEAR)).unsqueeze(0).to(device)
    with torch.no_grad():
        probabilities = final_logits(network(pixels)).sigmoid()[0].cpu()
    mask = _TO_PIL(probabilities).resize(image.size, Image.Resampling.BILINEAR)
    image.putalpha(mask)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # compress_level 6, Pillow's default
    return buffer.getvalue()


def run_naive(network: torch.nn.Module, photos: Sequence[bytes], input_size: tuple[int, int],
              device: torch.device, warmup: int = 2) -> dict:
    """Images per second of the naive loop over `photos` (after `warmup` unmeasured images)."""
    network = network.to(device=device, dtype=torch.float32).eval()
    for jpeg in photos[:warmup]:
        naive_cutout(network, jpeg, input_size, device)
    started = time.perf_counter()
    sizes = [len(naive_cutout(network, jpeg, input_size, device)) for jpeg in photos]
    seconds = time.perf_counter() - started
    return {"images": len(photos), "seconds": round(seconds, 2), "images_per_s": round(len(photos) / seconds, 3),
            "mean_png_bytes": int(sum(sizes) / len(sizes))}
