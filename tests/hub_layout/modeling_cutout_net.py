"""A small segmentation network in the Hugging Face remote-code layout, for tests of the real loading path.

It is written for this project's tests and mirrors only the shape of a BiRefNet-class modeling file: timm, kornia
and einops imported at module level, a configuration module imported relatively, torchvision's modulated
deformable convolution in the decoder, shifted-window attention with a relative-position bias written out as
matmul and softmax, and a list of predictions from coarse to fine. Weights are
random; the tests check loading and prediction, not what the masks show.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from kornia.filters import laplacian
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torchvision.ops import deform_conv2d
from transformers import PreTrainedModel

from .configuration_cutout_net import CutoutNetConfig


class PatchEmbedding(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=to_2tuple(patch_size), stride=to_2tuple(patch_size))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(rearrange(self.proj(x), "b c h w -> b h w c"))


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(windows, tokens, tokens): 0 between tokens of one region of the shifted map, -100 across regions."""
    labels = torch.zeros(height, width, device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        for j, cols in enumerate(bands):
            labels[rows, cols] = 3 * i + j
    flat = rearrange(labels, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window, ww=window)
    return (flat.unsqueeze(1) != flat.unsqueeze(2)).float() * -100.0


class WindowAttention(nn.Module):
    """Multi-head attention within each window, with a learned bias per relative position, written out as matmul
    and softmax as BiRefNet's published code runs it."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = to_2tuple(window)
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        offsets = (rows[:, None] - rows[None, :] + window - 1) * (2 * window - 1) + (cols[:, None] - cols[None, :]
                                                                                      + window - 1)
        self.register_buffer("relative_position_index", offsets)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj_drop = nn.Dropout(0.0)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        windows, tokens, channels = x.shape
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.num_heads)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        scores = scores + rearrange(bias, "(i j) h -> h i j", i=tokens).unsqueeze(0)
        if mask is not None:
            groups = mask.shape[0]
            scores = scores.view(windows // groups, groups, self.num_heads, tokens, tokens) + mask[None, :, None]
            scores = scores.view(windows, self.num_heads, tokens, tokens)
        attended = self.attn_drop(scores.softmax(dim=-1)) @ v
        return self.proj_drop(self.proj(rearrange(attended, "n h t d -> n t (h d)")))


class WindowBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, drop_path: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        batch, height, width, _ = x.shape
        shifted = torch.roll(self.norm(x), (-self.shift, -self.shift), dims=(1, 2)) if self.shift else self.norm(x)
        windows = rearrange(shifted, "b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c", wh=self.window, ww=self.window)
        mask = shifted_window_mask(height, width, self.window, self.shift, x.device).to(x.dtype) if self.shift else None
        merged = rearrange(self.attn(windows, mask=mask), "(b nh nw) (wh ww) c -> b (nh wh) (nw ww) c",
                           b=batch, nh=height // self.window, wh=self.window)
        if self.shift:
            merged = torch.roll(merged, (self.shift, self.shift), dims=(1, 2))
        return x + self.drop_path(merged)


class ModulatedDeformableConv(nn.Module):
    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.padding = kernel // 2
        self.offsets = nn.Conv2d(channels, 2 * kernel * kernel, kernel, padding=self.padding)
        self.modulation = nn.Conv2d(channels, kernel * kernel, kernel, padding=self.padding)
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x):
        mask = 2.0 * torch.sigmoid(self.modulation(x))
        return deform_conv2d(x, self.offsets(x), self.weight, self.bias, padding=self.padding, mask=mask)


class CutoutNet(PreTrainedModel):
    config_class = CutoutNetConfig
    main_input_name = "pixel_values"

    def __init__(self, config: CutoutNetConfig):
        super().__init__(config)
        dim = config.embed_dim
        self.embedding = PatchEmbedding(config.patch_size, dim)
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.ModuleList(
            WindowBlock(dim, config.num_heads, config.window_size, shift=(index % 2) * config.window_size // 2,
                        drop_path=rate) for index, rate in enumerate(rates))
        self.coarse_head = nn.Conv2d(dim, 1, kernel_size=1)
        self.refine = ModulatedDeformableConv(dim + 1)
        self.fine_head = nn.Conv2d(dim + 1, 1, kernel_size=3, padding=1)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, pixel_values):
        features = self.embedding(pixel_values)
        for block in self.blocks:
            features = block(features)
        features = rearrange(features, "b h w c -> b c h w")
        size = pixel_values.shape[-2:]
        coarse = F.interpolate(self.coarse_head(features), size=size, mode="bilinear", align_corners=True)
        edges = laplacian(pixel_values.mean(dim=1, keepdim=True), kernel_size=5)
        upsampled = F.interpolate(features, size=size, mode="bilinear", align_corners=True)
        fine = self.fine_head(self.refine(torch.cat([upsampled, edges], dim=1)))
        return [coarse, fine]
