"""PNG encoder candidates for the ingress, timed on a cut-out: speed, size, losslessness and GIL hold.

The ingress encodes on worker threads while its event loop keeps answering Serve's queue-length probes, so an
encoder that holds the GIL for the whole image stalls the replica even when it is fast; `max_loop_gap_ms`
measures that stall from a second thread.
"""

from __future__ import annotations

import importlib.util
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from serve_app.png import encode_png

Encoder = Callable[[np.ndarray], bytes]


def _pillow(level: int) -> Encoder:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()
    return encode


def candidates(threads: int = 8) -> dict[str, Encoder]:
    """Every candidate importable here; fpng and imagecodecs are optional (`pip install fpng imagecodecs`)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="png")
    found: dict[str, Encoder] = {
        "isal stripes, 1 thread": encode_png,  # what the ingress uses, here on the calling thread
        f"isal stripes, {threads} threads": lambda pixels: encode_png(pixels, pool, threads=threads),  # when idle
        "pillow level 1": _pillow(1),
        "pillow level 6 (default)": _pillow(6),
    }
    if importlib.util.find_spec("fpng"):
        import fpng

        found["fpng"] = lambda pixels: bytes(fpng.from_ndarray(pixels))
    if importlib.util.find_spec("imagecodecs"):
        import imagecodecs

        found["imagecodecs png level 1"] = lambda pixels: imagecodecs.png_encode(pixels, level=1)
    return found


def max_loop_gap_ms(work: Callable[[], object]) -> float:
    """Longest time a 1 ms sleeper thread waited while `work` ran on another thread (the GIL held)."""
    worker = threading.Thread(target=work)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return longest * 1000


def measure(encoder: Encoder, pixels: np.ndarray, repeats: int = 3) -> dict:
    encoded = encoder(pixels)  # warm-up, and the output checked below
    started = time.perf_counter()
    for _ in range(repeats):
        encoder(pixels)
    ms = (time.perf_counter() - started) / repeats * 1000
    lossless = np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), pixels)
    return {"ms": round(ms, 1), "megabytes": round(len(encoded) / 1e6, 2), "lossless": bool(lossless),
            "max_loop_gap_ms": round(max_loop_gap_ms(lambda: encoder(pixels)), 1)}
