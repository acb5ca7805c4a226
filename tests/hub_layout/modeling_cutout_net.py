"""A small segmentation network in the Hugging Face remote-code layout, for tests of the real loading path.

It is written for this project's tests and mirrors only the shape of a BiRefNet-class modeling file: timm, kornia
and einops imported at module level, a configuration module imported relatively, torchvision's modulated
deformable convolution in the decoder, window attention that a module-level switch sends through
`scaled_dot_product_attention` or an explicit softmax, and a list of predictions from coarse to fine. Weights are
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


class Switches:
    """Read at forward time, so that a caller can change them after loading."""

    def __init__(self) -> None:
        self.sdpa_enabled = False


switches = Switches()


class PatchEmbedding(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=to_2tuple(patch_size), stride=to_2tuple(patch_size))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(rearrange(self.proj(x), "b c h w -> b h w c"))


class WindowAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, drop_path: float):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.position_bias = nn.Parameter(torch.zeros(heads, window * window, window * window))
        trunc_normal_(self.position_bias, std=0.02)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        batch, height, width, _ = x.shape
        windows = rearrange(self.norm(x), "b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c", wh=self.window, ww=self.window)
        q, k, v = rearrange(self.qkv(windows), "n t (three h d) -> three n h t d", three=3, h=self.heads)
        bias = self.position_bias.unsqueeze(0).expand(q.shape[0], -1, -1, -1).to(q.dtype)
        if switches.sdpa_enabled:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
            attended = scores.softmax(dim=-1) @ v
        merged = rearrange(self.proj(rearrange(attended, "n h t d -> n t (h d)")),
                           "(b nh nw) (wh ww) c -> b (nh wh) (nw ww) c",
                           b=batch, nh=height // self.window, wh=self.window)
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
            WindowAttentionBlock(dim, config.num_heads, config.window_size, rate) for rate in rates)
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
