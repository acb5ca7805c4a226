"""The kernel candidates of harness/kernel_candidates.py put into the whole model, for scripts/bench_model.py and
scripts/check_accuracy.py (`--kernels`): what each saves in a compiled, captured forward of the model users load,
and what it does to the masks. One candidate alone is timed by scripts/bench_kernels.py; here they meet the rest of
the network, the compiler and the CUDA graph.

    deform     the service's setting `capturable_deform_conv: triton` (serve_app/model/deform_triton.py): the
               deformable convolution as one Triton kernel where CUDA graphs replay it
    window     the service's setting `window_attention_kernel: triton` (serve_app/model/window_attention_triton.py):
               each Swin window attention layer as one Triton kernel, its bias and mask read by index
    attention  every Swin window attention layer runs flex_attention, its bias and shifted-window mask read by
               index (compiled executions only: flex_attention is a compiler template, slow when run eagerly)
    linear     every linear layer whose sizes the tensor cores' FP8 takes (multiples of 16) runs in FP8 e4m3, the
               weights scaled per output channel from their float32 values, the inputs per row as they come

The downloaded code and weights stay as they are: after loading, layers are swapped or given another forward. Each
set that changes the traced forward from outside the service (attention, linear) compiles into a cache directory of
its own (`cache_dir`): the compile cache's key sees the service's code, not the harness's. The deformable
convolution is an operator the compiled graph calls, whatever runs it, and the service's key covers its own window
attention kernels, so the service's cache serves those.
"""

from __future__ import annotations

import hashlib
import sys
import types
from math import gcd
from pathlib import Path
from typing import Any

import torch

from harness import kernel_candidates
from harness.kernel_candidates import flex_window_attention, fp8_linear, fp8_weight
from serve_app.model.attention import _fused_window_attention, window_attention_layers
from serve_app.model.core import BackgroundRemovalModel
from serve_app.model.loading import load_segmentation_module
from serve_app.settings import COMPILED_EXECUTIONS, ModelSettings, default_compile_cache_dir

KERNELS = ("deform", "window", "attention", "linear")
# Windows per flex_attention sequence at most: 8 of 144 tokens are 9 of its 128-token blocks, and a block mask of
# that length is cheap enough to build inside every compiled forward.
_WINDOWS_PER_SEQUENCE = 8


def parse_kernels(text: str) -> tuple[str, ...]:
    """"deform+linear" -> ("deform", "linear"); "none" or "" -> ()."""
    names = tuple(sorted({name for name in text.split("+") if name and name != "none"}))
    unknown = set(names) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}: choose from {', '.join(KERNELS)} or none")
    return names


def kernels_label(kernels: tuple[str, ...]) -> str:
    return "+".join(kernels) or "none"


def cache_dir(base: Path, kernels: tuple[str, ...]) -> Path:
    """Where `kernels`' compiled buckets go: `base` itself without any, so that the service's cache serves those.
    The name carries a digest of the candidates' code, which a saved bucket's key does not cover: a changed
    kernel compiles afresh instead of loading the old one's trace."""
    kernels = tuple(kernel for kernel in kernels if kernel not in ("deform", "window"))  # the service's (docstring)
    if not kernels:
        return base
    digest = hashlib.sha256(b"".join(Path(module.__file__).read_bytes() for module in (kernel_candidates,
                                                                                       sys.modules[__name__])))
    return base / f"kernels-{kernels_label(kernels)}-{digest.hexdigest()[:12]}"


def load_model(settings: ModelSettings, kernels: tuple[str, ...]) -> BackgroundRemovalModel:
    """The model `settings` describe, with `kernels` in it (see the module's docstring)."""
    if "attention" in kernels and settings.execution not in COMPILED_EXECUTIONS:
        raise ValueError(f"the attention kernel runs in compiled executions ({', '.join(COMPILED_EXECUTIONS)}), not "
                         f"{settings.execution}: flex_attention run eagerly computes every window pair's scores")
    if "deform" in kernels:
        settings = settings.model_copy(update={"capturable_deform_conv": "triton"})
    if "window" in kernels:
        settings = settings.model_copy(update={"window_attention_kernel": "triton"})
    base = settings.compile_cache_dir or default_compile_cache_dir()
    settings = settings.model_copy(update={"compile_cache_dir": cache_dir(base, kernels)})
    if not {"attention", "linear"} & set(kernels):
        return BackgroundRemovalModel.from_settings(settings)
    module = load_segmentation_module(settings.model_id, settings.revision)
    if "linear" in kernels:
        fp8_linears(module)
    if "attention" in kernels:
        flex_window_attention_layers(module)
        settings = settings.model_copy(update={"fused_window_attention": False})  # the layers have their forward
    return BackgroundRemovalModel.from_settings(settings, module=module)


class Fp8Linear(torch.nn.Module):
    """A linear layer in FP8: `fp8_linear` with the layer's weight as float8 e4m3 and a float32 scale per output
    channel, quantised once from the weight as loaded. The bias stays a parameter of the model's dtype."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = fp8_weight(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight_fp8, self.weight_scale, self.bias)

    def _apply(self, fn: Any, recurse: bool = True) -> Fp8Linear:
        # Module.to(dtype) converts every floating-point tensor, float8 included: the weight and its scales go
        # where the model goes and keep their own dtypes.
        device = fn(torch.empty(0, device=self.weight_fp8.device)).device
        weight, scale = self.weight_fp8.to(device), self.weight_scale.to(device)
        super()._apply(fn, recurse)
        self.weight_fp8, self.weight_scale = weight, scale
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3"


def fp8_linears(module: torch.nn.Module) -> int:
    """Swap every linear layer of `module` that FP8 takes (sizes multiples of 16) for an Fp8Linear; how many."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                setattr(parent, name, Fp8Linear(child))
                swapped += 1
    return swapped


def flex_window_attention_layers(module: torch.nn.Module, *, eager: bool = False) -> int:
    """Give every Swin window attention layer of `module` the flex_attention forward; how many.

    The forward runs flex_attention where it is compiled, and the service's fused attention where it runs eagerly
    (a compiled execution serves the eager forward until its buckets load): run eagerly, flex_attention computes
    every score of its sequences, windows apart included. With `eager`, flex_attention runs eagerly too (a check
    on small inputs)."""
    layers = window_attention_layers(module)
    for layer in layers:
        layer._flex_eager = eager
        layer.forward = types.MethodType(_flex_forward, layer)
        type(layer)._flex_forward = _flex_forward  # a saved compiled bucket finds the bound method by this name
    return len(layers)


def _flex_forward(self: Any, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What serve_app.model.attention's fused forward computes, through flex_window_attention: `x` is (windows,
    tokens, channels), each image's windows consecutive; `mask` is (windows per image, tokens, tokens) or None."""
    if not (self._flex_eager or torch.compiler.is_compiling()):
        return _fused_window_attention(self, x, mask)
    windows, tokens, channels = x.shape
    heads = self.num_heads
    # Runs of windows as flex_attention's sequences, of any count that divides the batch's windows: a run may span
    # two images, since window w of the batch takes the shifted-window mask's window w modulo its count.
    run = gcd(_WINDOWS_PER_SEQUENCE, windows)
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)  # (heads, tokens, tokens)
    qkv = self.qkv(x).view(windows // run, run, tokens, 3, heads, channels // heads)
    query, key, value = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (sequences, run, heads, tokens, head_dim)
    attended = flex_window_attention(query, key, value, bias, mask, self.scale)
    return self.proj_drop(self.proj(attended.permute(0, 1, 3, 2, 4).reshape(windows, tokens, channels)))

