"""Linear layers in FP8 (e4m3) on the tensor cores that have it (compute capability 8.9 and up: Ada, Hopper).

BiRefNet's Swin backbone spends most of its arithmetic in linear layers (83% of a forward pass's floating-point
operations). Hopper's tensor cores run FP8 products at twice their fp16 rate; here each layer's weight is quantised
once, per output channel, from its values as loaded, and each input per row as it comes (dynamic scaling, which
inductor fuses into the neighbouring kernels when compiled); the products accumulate in float32.
"""

from __future__ import annotations

from typing import Any

import torch

FP8_MAX = 448.0  # the largest float8_e4m3fn value


def fp8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer's (out, in) weight as float8_e4m3fn with one float32 scale per output channel, (1, out)."""
    quantized, scale = _fp8_rows(weight)
    return quantized, scale.t().contiguous()


def _fp8_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`matrix` (rows, columns) as float8_e4m3fn, each row scaled to the format's range, and the float32 scales."""
    scale = matrix.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    # row-major whatever `matrix`'s layout: CUDA's _scaled_mm takes no other first operand
    return (matrix.float() / scale).to(torch.float8_e4m3fn).contiguous(), scale


def fp8_linear(x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` with both operands in FP8 (e4m3) and a scale per row of `x` and per output
    channel, computed here for `x` (dynamic), accumulated in float32, returned in `x`'s dtype. Hopper's tensor cores
    run FP8 at twice their fp16 rate; the rows' scaling is elementwise work that inductor fuses when compiled.

    The product comes out in bfloat16, the one output type that torch's CUDA kernel for row-wise scales has long
    taken (some versions refuse float16 and float32 there), and the bias is added after the cast, in `x`'s dtype."""
    quantized, scale = _fp8_rows(x.reshape(-1, x.shape[-1]))
    out = torch._scaled_mm(quantized, weight_fp8.t(), scale_a=scale, scale_b=weight_scale,
                           out_dtype=torch.bfloat16).to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight_fp8.shape[0])


class Fp8Linear(torch.nn.Module):
    """A linear layer in FP8: `fp8_linear` with the layer's weight as float8 e4m3 and a float32 scale per output
    channel, quantised once from the weight as loaded. The bias stays a parameter of the model's dtype."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

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


def fp8_supported(device: torch.device) -> bool:
    """Whether `device` multiplies in FP8: a GPU of compute capability 8.9 or later, or the CPU (slowly: for checks)."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 9)
