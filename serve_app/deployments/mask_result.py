"""What the GPU deployment answers, in a module without torch.

The ingress unpickles these; if the class lived in remover.py, every ingress replica would import torch
(about 500 MB of memory each, and seconds on its first answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskResult:
    """One image's mask plus where its time went, for the ingress's Server-Timing header."""

    mask: np.ndarray  # (H, W) uint8
    queued_ms: float  # from arrival at the model replica to the start of its forward pass
    batch_ms: float  # the whole pass on the device: upload, resize, forward, post-processing, download
    batch_size: int  # images in that pass
    device_decode_ms: float = 0.0  # decoding an EncodedJpeg on the replica's device (0: pixels were sent)
    device_backlog: int = 0  # other images queued or running on the replica when this answer left
    # The replica's wall clock at arrival and when this answer left: the rest of the call as the ingress times it
    # is Ray's (the image's and the mask's trips, routing). An ingress on the same Ray node (the same clock) also
    # splits it into the trip there and the trip back.
    arrived_at: float = 0.0
    left_at: float = 0.0
    replica_node: str = ""
    foreground: np.ndarray | None = None  # (H, W, 3) uint8: the subject's own colours, when refining was asked
    refine_ms: float = 0.0  # estimating them on the device
