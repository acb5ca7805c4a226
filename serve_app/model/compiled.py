"""Ahead-of-time compiled forward passes (AOTInductor), one package per batch bucket, cached on disk.

`torch.compile` of BiRefNet takes minutes per shape; paying that at every start would keep a replica out of
service for a quarter of an hour. Each bucket is instead exported and compiled once into a package
(`torch._inductor.aoti_compile_and_package`), stored under a key of everything that changes the code or the
weights (model, weights fingerprint, dtype, input size, torch version, GPU), and loaded in seconds afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from serve_app.model.buckets import pad_to, run_in_buckets

logger = logging.getLogger(__name__)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer: a package is only valid for the weights it was built with."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            values = tensor.detach().double()
            digest.update(f"{name}{tuple(tensor.shape)}{values.sum().item():.10e}{values.abs().sum().item():.10e}"
                          .encode())
    return digest.hexdigest()[:16]


def device_signature(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} sm{major}{minor}".replace(" ", "-")
    return "cpu"


def cache_key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()[:20]


class _FinalLogits(torch.nn.Module):
    """The exported graph: the network plus picking its final prediction, as the eager path does."""

    def __init__(self, network: torch.nn.Module, select: Callable[[object], torch.Tensor]):
        super().__init__()
        self.network, self.select = network, select

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.select(self.network(pixels))


class CompiledForward:
    """Callable like the eager forward: (B, 3, H, W) in the model dtype -> (B, 1, h, w) float32 logits."""

    def __init__(self, network: torch.nn.Module, select: Callable[[object], torch.Tensor], *,
                 sample_shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                 batch_sizes: Sequence[int], cache_dir: Path, key: str):
        self.batch_sizes = sorted(set(batch_sizes))
        self.package_dir = cache_dir / key
        self.compile_s: dict[int, float] = {}  # buckets compiled by this process, and how long each took
        self._runners: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        exported_module = _FinalLogits(network, select)
        started = time.perf_counter()
        for size in self.batch_sizes:
            path = self.package_dir / f"batch{size}.pt2"
            if not path.exists():
                example = torch.zeros((size, *sample_shape), dtype=dtype, device=device)
                self.compile_s[size] = self._compile(exported_module, example, path)
            self._runners[size] = torch._inductor.aoti_load_package(str(path))
        logger.info("compiled forward ready for batch sizes %s in %.1f s (compiled now: %s; packages in %s)",
                    self.batch_sizes, time.perf_counter() - started, self.compile_s or "none", self.package_dir)

    @staticmethod
    def _compile(module: torch.nn.Module, example: torch.Tensor, path: Path) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            exported = torch.export.export(module, (example,))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed: replicas starting together never load a half package.
        partial = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
        torch._inductor.aoti_compile_and_package(exported, package_path=str(partial))
        os.replace(partial, path)
        seconds = time.perf_counter() - started
        logger.info("compiled batch size %d in %.1f s -> %s", example.shape[0], seconds, path)
        return seconds

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return run_in_buckets(batch, self.batch_sizes, lambda size, images: self._runners[size](pad_to(images, size)))
