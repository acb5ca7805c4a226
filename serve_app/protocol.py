"""What travels between the ingress and the model replica: the image as the model gets it, and the answer.

No torch here: the ingress unpickles these, and torch would cost every ingress replica ~500 MB and seconds on its
first answer. The ingress sends a model replica one of: decoded pixels ((H, W, 3) RGB or (H, W, 4) RGBX uint8
arrays), a ReducedImage (the model's copy of a large JPEG) or an EncodedJpeg (the file, for the replica to decode on
its device); it gets a MaskResult back, or ModelNotReady, or DeviceDecodeFailed for an EncodedJpeg the replica
cannot decode. Pending is the model core's handle on a batch queued on the device, which the replica's batching
waits on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Pending(Protocol):
    """A batch queued on the device (the model core's submit()); result() waits for its masks, in order."""

    def result(self) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ReducedImage:
    """The model's copy of a large JPEG, decoded by libjpeg at a fraction of its size (DCT scaling, in steps of
    1/8) but never below the model's input size, which the model resizes it to anyway. It decodes faster than the
    whole photo and moves a fraction of the bytes to the model replica, so the model call starts while the full
    decode for the cut-out runs beside it. The mask comes back at `size`."""

    pixels: np.ndarray  # (h, w, 3) uint8 RGB, upright
    size: tuple[int, int]  # (height, width) of the whole image, upright: the mask's size


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG for the model replica to decode on its own device, beside the ingress's CPU decode of the same bytes.

    The ingress needs the full-size pixels for the cut-out, the model only a copy at its input size: sent as the
    file (~0.4 MB) instead of decoded RGBX (~10 MB), and decoded by nvJPEG on an idle GPU in a fraction of the CPU
    decode's time, the model's copy waits neither for the CPU decode nor for the object store to carry it in full.
    """

    data: bytes
    orientation: int  # EXIF orientation (1 = upright) to apply after decoding, as imaging.decode_image does
    size: tuple[int, int]  # (height, width) once upright: the mask's size


class DeviceDecodeFailed(ValueError):
    """The model replica could not decode an EncodedJpeg; the ingress sends its decoded pixels instead.

    Only a message: Ray pickles it to the ingress as it is (BaseException's own reduce keeps `args`)."""


@dataclass(frozen=True)
class MaskResult:
    """One image's mask plus where its time went, for the ingress's Server-Timing header."""

    mask: np.ndarray  # (H, W) uint8
    queued_ms: float  # from arrival at the model replica to the start of its forward pass
    batch_ms: float  # the whole pass on the device: upload, resize, forward, post-processing, download
    batch_size: int  # images in that pass
    device_decode_ms: float = 0.0  # decoding an EncodedJpeg on the replica's device (0: pixels were sent)
    # Other calls the replica held, queued or on the device, any model's, when this answer left: with a pass of
    # one, 0 tells the ingress the device is idle (EncodedJpeg is worth sending).
    device_backlog: int = 0
    # The replica's wall clock at arrival and when this answer left: the rest of the call as the ingress times it
    # is Ray's (the image's and the mask's trips, routing). An ingress on the same Ray node (the same clock) also
    # splits it into the trip there and the trip back.
    arrived_at: float = 0.0
    left_at: float = 0.0
    replica_node: str = ""
    foreground: np.ndarray | None = None  # (H, W, 3) uint8: the subject's own colours, when refining was asked
    refine_ms: float = 0.0  # estimating them on the device
    # The zlib stream of the RGBA cut-out's PNG rows, written on the device from its own decode of an EncodedJpeg,
    # when the ingress asked for it and the device could (None: the ingress encodes the PNG); uint8, an array so
    # that Ray carries it out of band, as the mask, where bytes would be pickled and copied twice more.
    png_stream: np.ndarray | None = None
    png_ms: float = 0.0  # writing it
    model: str = ""  # the name of the model that made the mask


class OutOfDeviceMemory(RuntimeError):
    """A step of one image alone (its clean edges) ran out of device memory: no smaller batch to retry it in. The
    device is fine, and its cached blocks were given back."""


class ModelNotReady(RuntimeError):
    """The model a request asked for is not loaded yet (or has no room to load): answered 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple:  # Ray pickles it to the ingress with both arguments
        return (ModelNotReady, (str(self), self.retry_after_s))
