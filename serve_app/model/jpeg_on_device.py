"""JPEG decoding on the model's device: nvJPEG (through torchvision) on CUDA, libjpeg-turbo on the CPU.

For the model's copy of an image (serve_app.protocol.EncodedJpeg), and for a large photo's PNG cut-out written on
the device (png_device.py); the ingress decodes its own copy for every other answer. nvJPEG's pixels differ a
little from libjpeg-turbo's (chroma upsampling: under a level on average, a few percent of pixels by more than
2), so a mask can differ slightly from the one the ingress's pixels give; on the CPU torchvision's libjpeg-turbo
gives the ingress's pixels exactly.
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
    some encodings, e.g. arithmetic coding; libjpeg-turbo refuses a file cut short), or when the result is not the
    size the ingress read from the header. The copy of a CPU decode to the device is outside that: a device that
    cannot take it is the device's failure, not the file's.
    """
    buffer = bytearray(encoded.data)  # writable: frombuffer warns about read-only memory
    # frombuffer refuses an empty buffer: torchvision refuses the empty tensor instead, like any other bad file.
    data = torch.frombuffer(buffer, dtype=torch.uint8) if buffer else torch.empty(0, dtype=torch.uint8)
    chw = None
    if device.type == "cuda":
        try:
            chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as error:
            logger.warning("nvJPEG refused a JPEG (%s); decoding it on the CPU", error)
    if chw is None:
        try:
            chw = decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise DeviceDecodeFailed(f"torchvision cannot decode this JPEG: {error}") from None
        chw = chw.to(device, non_blocking=True)
    pixels = upright(chw.permute(1, 2, 0), encoded.orientation)
    if tuple(pixels.shape) != (*encoded.size, 3):
        raise DeviceDecodeFailed(f"decoded {tuple(pixels.shape)}, the header said {(*encoded.size, 3)}")
    return pixels
