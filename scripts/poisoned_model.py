"""A small segmentation network that breaks its CUDA context on one kind of input, for fault injection.

An all-black image makes its forward pass index far out of bounds on the device: a device-side assert, after
which every CUDA call in the process fails (the state a real Xid error or illegal memory access leaves behind).
Any other image gets a plausible mask. Used by scripts/cuda_fault.py as `import:poisoned_model:build`.
"""

import torch


class PoisonedSegmenter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # ImageNet-normalised black is below -1.8 in every channel; no photo is that dark everywhere.
        if pixels.device.type == "cuda" and bool(pixels.amax() < -1.5):
            flat = pixels.flatten()
            flat[torch.tensor([flat.numel() * 1000], device=pixels.device)].sum().item()
        return self.body(pixels)


def build() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PoisonedSegmenter()
