"""JPEG decoding on the model's device: nvJPEG (through torchvision) on CUDA, libjpeg-turbo on the CPU.

Only for the model's copy of an image (serve_app.protocol.EncodedJpeg): the ingress decodes its own copy for the
cut-out, so that the colours a client gets back come from one decoder whatever the model saw. nvJPEG's pixels
differ a little from libjpeg-turbo's (chroma upsampling: mean 0.6 levels, 6% of pixels by more than 2, on the
benchmark photos, H200); the masks were checked against the CPU decode's.
"""

from __future__ import annotations

import logging

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg

logger = logging.getLogger(__name__)


def upright(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """(H, W, C) pixels turned as EXIF `orientation` says: serve_app.imaging's turns, in torch."""
    if orientation == 2:
        return pixels.flip(1)
    if orientation == 3:
        return pixels.flip(0, 1)
    if orientation == 4:
        return pixels.flip(0)
    if orientation == 5:
        return pixels.transpose(0, 1)
    if orientation == 6:
        return pixels.rot90(-1, (0, 1))
    if orientation == 7:
        return pixels.flip(0, 1).transpose(0, 1)
    if orientation == 8:
        return pixels.rot90(1, (0, 1))
    return pixels


def decode_on_device(encoded: EncodedJpeg, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB on `device`, upright, of `encoded.size`.

    Raises DeviceDecodeFailed when neither nvJPEG nor torchvision's CPU decoder reads the file (nvJPEG refuses
    some encodings, e.g. arithmetic coding), or when the result is not the size the ingress read from the header.
    """
    data = torch.frombuffer(bytearray(encoded.data), dtype=torch.uint8)
    try:
        chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:
        if device.type == "cpu":
            raise DeviceDecodeFailed(f"torchvision cannot decode this JPEG: {error}") from None
        logger.warning("nvJPEG refused a JPEG (%s); decoding it on the CPU", error)
        try:
            chw = decode_jpeg(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)
        except RuntimeError as cpu_error:
            raise DeviceDecodeFailed(f"torchvision cannot decode this JPEG: {cpu_error}") from None
    pixels = upright(chw.permute(1, 2, 0), encoded.orientation)
    width, height = encoded.size
    if tuple(pixels.shape) != (height, width, 3):
        raise DeviceDecodeFailed(f"decoded {tuple(pixels.shape)}, the header said {(height, width, 3)}")
    return pixels
