"""The model's kernel settings under the short names of scripts/bench_model.py and scripts/check_accuracy.py
(`--kernels deform+attention+linear`): what each saves in a compiled, captured forward of the model users load, and
what it does to the masks. One kernel alone is timed by scripts/bench_kernels.py; here they meet the rest of the
network, the compiler and the CUDA graph.

    deform     capturable_deform_conv: triton      the deformable convolution as one Triton kernel where CUDA
                                                   graphs replay it (serve_app/model/deform_triton.py)
    attention  window_attention_kernel: flex       every Swin window attention layer through flex_attention, its
                                                   bias and shifted-window mask read by index, in compiled
                                                   executions (serve_app/model/flex_attention.py)
    linear     linear_precision: fp8               every linear layer whose sizes FP8 takes (multiples of 16) in
                                                   FP8 e4m3 (serve_app/model/fp8.py)

"none" is the settings as given. The downloaded code and weights stay as they are.
"""

from __future__ import annotations

from serve_app.model.core import BackgroundRemovalModel
from serve_app.settings import COMPILED_EXECUTIONS, ModelSettings

SETTINGS = {
    "deform": {"capturable_deform_conv": "triton"},
    "attention": {"window_attention_kernel": "flex"},
    "linear": {"linear_precision": "fp8"},
}
KERNELS = tuple(SETTINGS)


def parse_kernels(text: str) -> tuple[str, ...]:
    """"deform+linear" -> ("deform", "linear"); "none" or "" -> ()."""
    names = tuple(sorted({name for name in text.split("+") if name and name != "none"}))
    unknown = set(names) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}: choose from {', '.join(KERNELS)} or none")
    return names


def kernels_label(kernels: tuple[str, ...]) -> str:
    return "+".join(kernels) or "none"


def with_kernels(settings: ModelSettings, kernels: tuple[str, ...]) -> ModelSettings:
    """`settings` with the settings `kernels` name."""
    if "attention" in kernels and settings.execution not in COMPILED_EXECUTIONS:
        raise ValueError(f"the attention kernel runs in compiled executions ({', '.join(COMPILED_EXECUTIONS)}), not "
                         f"{settings.execution}: flex_attention run eagerly computes every window pair's scores")
    update: dict[str, str] = {}
    for kernel in kernels:
        update.update(SETTINGS[kernel])
    return settings.model_copy(update=update)


def load_model(settings: ModelSettings, kernels: tuple[str, ...]) -> BackgroundRemovalModel:
    """The model `settings` describe, with `kernels` in it."""
    return BackgroundRemovalModel.from_settings(with_kernels(settings, kernels))
