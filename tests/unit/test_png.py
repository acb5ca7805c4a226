"""The striped PNG encoder: strictly valid files (chunk CRCs, zlib stream with its Adler-32), lossless, and the
same stripes of the same filtered rows whether the stripes ran on threads or one after another."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from harness.photos import synthetic_photo
from serve_app.png import adler32_combine, encode_png, rows_per_stripe


def strict_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG, failing on a wrong signature, length or CRC (what libpng rejects)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset: offset + 4])
        kind, body = data[offset + 4: offset + 8], data[offset + 8: offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length: offset + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    return chunks


def assert_same_stream(encoded: bytes, expected: bytes) -> None:
    """The same header, the same stripes (IDAT chunks) and the same filtered rows inside them. Not the same deflate
    bytes: ISA-L's output for the same rows was identical in thousands of runs here, but differed once in CI while
    decoding to the same pixels, so byte equality would test the library, not this encoder."""
    ours, theirs = strict_chunks(encoded), strict_chunks(expected)
    assert [kind for kind, _ in ours] == [kind for kind, _ in theirs]
    assert ours[0] == theirs[0]  # IHDR
    payload = [b"".join(body for kind, body in chunks if kind == b"IDAT") for chunks in (ours, theirs)]
    assert zlib.decompress(payload[0]) == zlib.decompress(payload[1])


def read_back(data: bytes) -> np.ndarray:
    chunks = strict_chunks(data)
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    zlib.decompress(idat)  # raises on a broken deflate stream or a wrong Adler-32, which Pillow does not check
    return np.asarray(Image.open(io.BytesIO(data)))


def photo(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    rgb = np.asarray(synthetic_photo(width, height, np.random.default_rng(seed)))
    if channels == 3:
        return rgb
    alpha = np.zeros((height, width), np.uint8)
    alpha[height // 4: -height // 4 or None, width // 4: -width // 4 or None] = 255
    return alpha if channels == 1 else np.dstack([rgb, alpha])


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("stripe_bytes", [1, 5000, 1 << 20])
def test_lossless_and_strictly_valid_for_every_mode_and_stripe_size(channels, stripe_bytes):
    pixels = photo(301, 257, channels)
    assert np.array_equal(read_back(encode_png(pixels, stripe_bytes=stripe_bytes)), pixels)


def test_threads_give_the_same_bytes_as_one_thread():
    pixels = photo(600, 500, 4)
    with ThreadPoolExecutor(4) as pool:
        parallel = encode_png(pixels, pool, stripe_bytes=100_000)
    assert_same_stream(parallel, encode_png(pixels, stripe_bytes=100_000))
    assert len([kind for kind, _ in strict_chunks(parallel) if kind == b"IDAT"]) > 4  # it really was striped


def test_threads_get_whole_rounds_of_equal_stripes():
    pixels = photo(610, 500, 4)  # 1.22 MB: 3 rounds of 4 stripes of ~100 kB
    with ThreadPoolExecutor(4) as pool:
        parallel = encode_png(pixels, pool, stripe_bytes=100_000, threads=4)
    assert_same_stream(parallel, encode_png(pixels, stripe_bytes=100_000, threads=4))  # the pool changes nothing
    assert np.array_equal(read_back(parallel), pixels)
    idat_chunks = [kind for kind, _ in strict_chunks(parallel) if kind == b"IDAT"]
    assert len(idat_chunks) == 12 + 1  # the stripes, then the Adler-32 chunk
    # Plain 100 kB stripes are 13 (12 of 50 rows and a last of 10): a 4th round for one thread.
    assert len([kind for kind, _ in strict_chunks(encode_png(pixels, stripe_bytes=100_000))
                if kind == b"IDAT"]) == 13 + 1


@pytest.mark.parametrize(("height", "row_bytes", "threads", "rows"), [
    (1320, 1980 * 4, 8, 165),  # a 2.6 MP cut-out, 1 MiB stripes: one round of 8 instead of 10 stripes
    (2000, 3000 * 4, 8, 125),  # 6 MP: 24 MB, two rounds of 8
    (1320, 1980 * 4, 1, 132),  # one thread: 1 MiB stripes as they come
    (5, 700 * 4, 8, 5),        # 14 kB: one stripe, which runs on the calling thread
    (300, 700 * 4, 8, 50),     # 0.84 MB: 6 stripes of 140 kB, none under an eighth of 1 MiB
    (200, 700 * 4, 8, 50),     # 0.56 MB: 4 stripes, not 8 of 70 kB
])
def test_rows_per_stripe(height, row_bytes, threads, rows):
    assert rows_per_stripe(height, row_bytes, 1 << 20, threads) == rows


@pytest.mark.parametrize("shape", [(1, 1), (1, 700, 4), (900, 1, 3), (2, 2, 4)])
def test_tiny_and_one_pixel_wide_images(shape):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(read_back(encode_png(pixels, stripe_bytes=64)), pixels)


def test_non_contiguous_views_encode_what_they_show():
    pixels = photo(200, 300, 4)[::-1, 50:250]
    assert np.array_equal(read_back(encode_png(pixels)), pixels)


def test_smaller_than_pillow_fastest_level_on_a_photo():
    pixels = photo(800, 1200, 4)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    assert len(encode_png(pixels)) < len(buffer.getvalue())


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32),
                                    np.zeros((0, 4, 3), np.uint8), np.zeros(4, np.uint8)])
def test_rejects_what_png_cannot_hold(pixels):
    with pytest.raises(ValueError):
        encode_png(pixels)


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_adler32_combine_matches_zlib(first, second):
    assert adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)


@pytest.mark.parametrize("stripe_bytes", [1, 5000, 1 << 20])
def test_alpha_replaces_the_fourth_channel_without_touching_the_pixels(stripe_bytes):
    rgbx = photo(301, 257, 4, seed=3)
    rgbx[..., 3] = 99  # the spare channel of a decoded JPEG: whatever it holds must not show
    before = rgbx.copy()
    alpha = photo(301, 257, 1, seed=4)
    alpha[::7] = np.arange(257, dtype=np.uint8)  # values that wrap when Up-filtered
    with ThreadPoolExecutor(4) as pool:
        encoded = encode_png(rgbx, pool, alpha=alpha, stripe_bytes=stripe_bytes)
    composed = np.dstack([rgbx[..., :3], alpha])
    assert np.array_equal(read_back(encoded), composed)
    assert_same_stream(encoded, encode_png(composed, stripe_bytes=stripe_bytes))
    assert np.array_equal(rgbx, before)


@pytest.mark.parametrize(("pixels", "alpha"), [
    (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8)),
    (np.zeros((4, 5, 4), np.uint8), np.zeros((5, 4), np.uint8)),
    (np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5), np.float32)),
])
def test_alpha_that_does_not_fit_is_refused(pixels, alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        encode_png(pixels, alpha=alpha)


@pytest.mark.parametrize("stripe_bytes", [1, 5000, 1 << 20])
@pytest.mark.parametrize("own_alpha", [True, False])
def test_clear_transparent_writes_zeros_where_alpha_is_zero_and_nothing_else(stripe_bytes, own_alpha):
    pixels = photo(211, 173, 4, seed=5)
    alpha = photo(211, 173, 1, seed=6)
    alpha[alpha < 100] = 0  # ~40% transparent, in every stripe and on the rows either side of each boundary
    if own_alpha:
        pixels[..., 3] = alpha
    before = pixels.copy()
    with ThreadPoolExecutor(4) as pool:
        encoded = encode_png(pixels, pool, alpha=None if own_alpha else alpha, clear_transparent=True,
                             stripe_bytes=stripe_bytes)
    expected = np.dstack([pixels[..., :3], alpha])
    expected[alpha == 0] = 0
    assert np.array_equal(read_back(encoded), expected)
    assert_same_stream(encoded, encode_png(expected, stripe_bytes=stripe_bytes))  # as the cleared image's
    assert np.array_equal(pixels, before)


def test_clear_transparent_leaves_an_image_without_transparent_pixels_as_it_is():
    pixels = photo(97, 61, 4, seed=7)
    pixels[..., 3] = np.maximum(pixels[..., 3], 1)
    assert_same_stream(encode_png(pixels, clear_transparent=True, stripe_bytes=500),
                       encode_png(pixels, stripe_bytes=500))


def test_clear_transparent_needs_an_alpha_channel():
    with pytest.raises(ValueError, match="clear_transparent needs"):
        encode_png(np.zeros((4, 5, 3), np.uint8), clear_transparent=True)
