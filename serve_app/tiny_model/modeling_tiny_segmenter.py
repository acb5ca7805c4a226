"""A tiny background-removal network in the Hugging Face remote-code layout, for tests.

This file is copied into every generated model directory and loaded by `transformers` with
`trust_remote_code=True`, exactly as BiRefNet's own modeling code is, so it imports nothing from this project.

The network sees an ImageNet-normalised image and scores how far each pixel is from white. Its weights are
written by `serve_app.tiny_model.write_tiny_model`, computed rather than trained, so that anything that is not
near-white (a dark or coloured object) gets a high logit and white background a low one. Like BiRefNet, it
returns a list of predictions from coarse to fine, and the caller takes the last.
"""

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel


class TinySegmenterConfig(PretrainedConfig):
    model_type = "tiny_segmenter"

    def __init__(self, coarse_stride: int = 4, **kwargs):
        self.coarse_stride = coarse_stride
        super().__init__(**kwargs)


class TinySegmenter(PreTrainedModel):
    config_class = TinySegmenterConfig
    base_model_prefix = "tiny_segmenter"
    main_input_name = "pixel_values"

    def __init__(self, config: TinySegmenterConfig):
        super().__init__(config)
        # One 1x1 convolution: logit = bias + sum_c weight_c * x_c, i.e. an affine score of the pixel colour.
        self.score = torch.nn.Conv2d(3, 1, kernel_size=1)
        self.post_init()

    def _init_weights(self, module):
        # Real values come from model.safetensors; nothing to initialise.
        pass

    def forward(self, pixel_values: torch.Tensor):
        fine = self.score(pixel_values)
        stride = self.config.coarse_stride
        coarse = F.avg_pool2d(fine, kernel_size=stride, stride=stride)
        return [coarse, fine]
