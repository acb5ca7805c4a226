"""Lossless PNG encoding with one image's rows compressed on several threads at once.

Why this is written here: fpng, Pillow, libpng and libspng compress an image on one core, and the one parallel
PNG encoder with Python bindings (pymtpng) ships no Linux wheels. At one client, a 3-6 MP cut-out's PNG on one
core is most of the time left between the model and the response.

How the output stays one valid PNG (the way pigz splits gzip): each stripe of rows is filtered and deflated
on its own and ends with a full flush, which closes its last block on a byte boundary and resets the window,
so the stripes' deflate streams concatenate into one zlib stream. Each stripe is written as its own IDAT chunk
(PNG readers join consecutive IDATs); the zlib header leads the first, and the Adler-32 of all filtered bytes,
combined from the stripes', trails in a last 4-byte chunk. Rows use the Up filter (one numpy subtraction) and
ISA-L's deflate at level 1 (python-isal); both release the GIL. On one core that is slower than fpng, for
smaller files; on 8 threads a lone image's PNG is done in a fraction of fpng's time (scripts/bench_png.py).
With `threads`, the stripes come in a multiple of that count, all of a size: 1 MiB stripes of a 2.6 MP cut-out
are 10, which 8 threads would run as 8 and then 2, where 8 equal stripes run at once. The stripes and their
filtered rows depend on `stripe_bytes` and `threads`, never on the pool that runs them; the compressed bytes
usually do too, but are not guaranteed to (the pixels always are).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor

import numpy as np
from isal import isal_zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA
_UP_FILTER = 2
_ADLER_BASE = 65521
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level hint
# ~1 MiB of pixels per stripe (or somewhat more, to fill whole rounds of threads: rows_per_stripe): restarting the
# 32 KiB window once per MiB costs under 0.1% in size.
DEFAULT_STRIPE_BYTES = 1 << 20
_Piece = bytes | memoryview  # of a chunk's data: a uint8 array's memoryview joins without a copy of its own


def encode_png(pixels: np.ndarray, pool: Executor | None = None, *, alpha: np.ndarray | None = None,
               clear_transparent: bool = False, stripe_bytes: int = DEFAULT_STRIPE_BYTES, threads: int = 1,
               level: int = 1, icc_profile: bytes | None = None) -> bytes:
    """PNG of (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 pixels; stripes run on `pool` when given.

    Stripes are ~`stripe_bytes` of pixels each; with `threads` (the pool's), a multiple of that many equal ones.

    With `alpha` ((H, W) uint8), the PNG's fourth channel is `alpha` instead of the pixels' own (RGBX in, RGBA
    out, `pixels` unchanged): each stripe writes it as it filters its rows, so the composite costs no pass of its
    own over the image on the caller's thread. The bytes are those of the composed RGBA array.

    With `clear_transparent` (four channels only), every pixel whose alpha is 0 is written as (0, 0, 0, 0), again
    by the stripes and with `pixels` unchanged. Nobody sees those colours, and runs of zeros deflate at a fraction
    of the cost of photo noise: a cut-out with half its area transparent compresses in well under an opaque one's
    time, to about half the bytes; one with none takes a little longer.

    With `icc_profile` (an RGB profile; RGB or RGBA pixels only), the PNG carries it (an iCCP chunk), so that the
    colours mean what they meant in the upload: an iPhone's photo is in Display P3, not sRGB.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ValueError(f"expected non-empty uint8 (H, W[, C]) pixels, got {pixels.dtype} {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _COLOR_TYPES:
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    height, width = pixels.shape[:2]
    if alpha is not None and (channels != 4 or alpha.dtype != np.uint8 or alpha.shape != (height, width)):
        raise ValueError(f"alpha must be uint8 {(height, width)} for (H, W, 4) pixels, got {alpha.dtype} "
                         f"{alpha.shape} for {pixels.shape}")
    if clear_transparent and channels != 4:
        raise ValueError(f"clear_transparent needs (H, W, 4) pixels, got {pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    per_stripe = rows_per_stripe(height, rows.shape[1], stripe_bytes, threads)
    starts = range(0, height, per_stripe)
    clear_by = (rows[:, 3::4] if alpha is None else alpha) if clear_transparent else None
    jobs = [(rows, start, min(start + per_stripe, height), level, alpha, clear_by) for start in starts]
    parts = _head(width, height, channels, icc_profile)
    adler = 1
    for stripe_adler, stripe_length, idat_pieces in _run(_compress_stripe, jobs, pool):
        adler = adler32_combine(adler, stripe_adler, stripe_length)
        parts.extend(idat_pieces)
    parts.append(_chunk(b"IDAT", struct.pack(">I", adler)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def wrap_zlib_stream(stream: bytes | memoryview, width: int, height: int, *, icc_profile: bytes | None = None
                     ) -> bytes:
    """The RGBA PNG whose Up-filtered rows are the zlib `stream` (serve_app/model/png_device.py writes one on the
    model's device; a uint8 array's `.data`): the chunks around it, with `icc_profile` as encode_png carries it."""
    return b"".join([*_head(width, height, 4, icc_profile), *_chunk_pieces(b"IDAT", [stream]), _chunk(b"IEND", b"")])


def _head(width: int, height: int, channels: int, icc_profile: bytes | None) -> list[bytes]:
    """The signature and the chunks before the image data."""
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    parts = [_SIGNATURE, _chunk(b"IHDR", header)]
    if icc_profile is not None and channels in (3, 4):
        parts.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + isal_zlib.compress(icc_profile)))
    return parts


def rows_per_stripe(height: int, row_bytes: int, stripe_bytes: int, threads: int = 1) -> int:
    """Rows in each stripe (the last may have fewer): ~`stripe_bytes` per stripe, and with several `threads`
    as many stripes as fill whole rounds of them, ~`stripe_bytes` or more each. A small image gets fewer stripes,
    none under an eighth of `stripe_bytes`: each stripe costs a fresh compressor, which many small stripes pay
    for more than they gain."""
    if threads <= 1:
        return max(1, stripe_bytes // row_bytes)
    image_bytes = height * row_bytes
    rounds = max(1, image_bytes // (threads * stripe_bytes))
    stripes = max(1, min(threads * rounds, image_bytes // max(1, stripe_bytes // 8)))
    return -(-height // stripes)


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """Adler-32 of A + B from A's, B's and B's length (zlib's adler32_combine, which Python does not expose)."""
    low1, high1 = adler1 & 0xFFFF, adler1 >> 16
    low2, high2 = adler2 & 0xFFFF, adler2 >> 16
    low = (low1 + low2 - 1) % _ADLER_BASE
    high = (high1 + high2 + length2 * low1 - length2) % _ADLER_BASE
    return low | high << 16


def _compress_stripe(rows: np.ndarray, start: int, stop: int, level: int, alpha: np.ndarray | None,
                     clear_by: np.ndarray | None) -> tuple[int, int, list[_Piece]]:
    """Rows [start, stop) Up-filtered (each minus the row above; the image's first row as is) and deflated, as
    a whole IDAT chunk in pieces (its CRC computed here, on the stripe's thread), with the filtered bytes' Adler-32
    and length; with `alpha`, its Up-filtered values replace every 4th byte; with `clear_by`, pixels where it is 0
    are zeros first.

    Pieces rather than one bytes object: joining them here would copy the stripe's output twice with the GIL held,
    and the GIL-held work of all the stripes, which finish together, is the tail of a lone request's encode (the
    caller joins every piece once)."""
    filtered = np.empty((stop - start, 1 + rows.shape[1]), dtype=np.uint8)
    filtered[:, 0] = _UP_FILTER
    above = max(start - 1, 0)  # the Up filter reads the row above the stripe too
    block = rows[above:stop]
    if clear_by is not None and not clear_by[above:stop].all():  # a quarter of the bytes: cheap to look first
        # One 32-bit word a pixel: 9x faster than broadcasting over the 4 bytes in numpy.
        block = (block.view(np.uint32) * (clear_by[above:stop] != 0)).view(np.uint8)
    _up_filter(block, start == 0, filtered[:, 1:])
    if alpha is not None:  # byte 0 of a filtered row is its filter type: pixel k's alpha is byte 4k + 4
        _up_filter(alpha[above:stop], start == 0, filtered[:, 4::4])
    last = stop == rows.shape[0]
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)  # raw deflate: the zlib framing is ours
    data = [_ZLIB_HEADER] if start == 0 else []
    data += [compressor.compress(filtered), compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_FULL_FLUSH)]
    return isal_zlib.adler32(filtered), filtered.size, _chunk_pieces(b"IDAT", data)


def _up_filter(block: np.ndarray, first: bool, out: np.ndarray) -> None:
    """out = each row of `block` minus the row above it (mod 256). `block` starts with the row above the stripe,
    except for the image's `first` stripe, whose first row PNG subtracts zeros from."""
    if first:
        out[0] = block[0]
        np.subtract(block[1:], block[:-1], out=out[1:])
    else:
        np.subtract(block[1:], block[:-1], out=out)


def _run(function: Callable, jobs: list[tuple], pool: Executor | None) -> Iterator:
    """Results in job order: from the pool (all submitted at once) or, without one, computed one by one."""
    if pool is None or len(jobs) == 1:
        return (function(*job) for job in jobs)
    futures = [pool.submit(function, *job) for job in jobs]
    return (future.result() for future in futures)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join(_chunk_pieces(kind, [data]))


def _chunk_pieces(kind: bytes, data: Sequence[_Piece]) -> list[_Piece]:
    """A PNG chunk whose data is the concatenation of `data`, as pieces to be joined."""
    crc = isal_zlib.crc32(kind)
    for piece in data:
        crc = isal_zlib.crc32(piece, crc)
    return [struct.pack(">I", sum(len(piece) for piece in data)) + kind, *data, struct.pack(">I", crc)]
