"""Configuration of the remote-code test network (loaded by transformers from the model directory)."""

from transformers import PretrainedConfig


class CutoutNetConfig(PretrainedConfig):
    model_type = "cutout_net"

    def __init__(self, patch_size: int = 4, embed_dim: int = 16, num_heads: int = 2, window_size: int = 4,
                 depth: int = 2, drop_path_rate: float = 0.1, **kwargs):
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.depth = depth
        self.drop_path_rate = drop_path_rate
        super().__init__(**kwargs)
