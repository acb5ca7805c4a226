"""The cut-out's PNG written on the model's device (serve_app/model/png_device.py), its kernels here through
Triton's interpreter on the CPU: the zlib stream holds exactly the Up-filtered rows of the composed cut-out (zlib
checks its Adler-32), so Pillow reads the PNG back to those pixels, whatever the strides of the colours; its
Huffman codes are complete and never longer than deflate allows; and the PNG around a stream carries the photo's
colour profile."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from serve_app import png
from serve_app.model.png_device import MAX_BITS, _huffman, block_header, canonical_codes, huffman_lengths
from tests.helpers import triton_interpreter_results

INTERPRETED = """
import json, zlib
import numpy as np, torch
from serve_app.model.png_device import encode_cutout_stream
generator = np.random.default_rng(0)
results = {}
def up_filtered(rgba):
    rows = rgba.reshape(rgba.shape[0], -1).astype(np.int16)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = (rows[1:] - rows[:-1]) % 256
    return filtered.tobytes()
def soft(height, width):
    rows, columns = np.mgrid[0:height, 0:width]
    return np.clip((min(height, width) * 0.4 - np.hypot(rows - height / 2, columns - width / 2)) * 8, 0, 255)
cases = {  # name: (height, width, colours' layout, alpha)
    "one pixel": (1, 1, "planes", "noise"),
    "a row over several programs": (3, 1100, "planes", "soft"),
    "planes (nvJPEG's), soft edge": (61, 77, "planes", "soft"),
    "interleaved, half transparent": (40, 90, "interleaved", "half"),
    "turned (a transposed view)": (37, 50, "turned", "soft"),
    "all transparent": (20, 1000, "interleaved", "clear"),
    "all opaque noise": (20, 64, "interleaved", "opaque"),
}
for name, (height, width, layout, kind) in cases.items():
    rgb = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2] //= 16  # smooth areas too: a skewed histogram, long and short codes
    alpha = {"noise": lambda: generator.integers(0, 256, (height, width)),
             "soft": lambda: soft(height, width), "half": lambda: np.where(np.arange(width) < width // 2, 0, 255),
             "clear": lambda: np.zeros((height, width)), "opaque": lambda: np.full((height, width), 255)}[kind]()
    alpha = np.broadcast_to(alpha, (height, width)).astype(np.uint8)
    if layout == "planes":
        colours = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).permute(1, 2, 0)
    elif layout == "turned":
        colours = torch.from_numpy(np.ascontiguousarray(rgb.transpose(1, 0, 2))).transpose(0, 1)
    else:
        colours = torch.from_numpy(rgb)
    stream = encode_cutout_stream(colours, torch.from_numpy(np.ascontiguousarray(alpha)))
    rgba = np.dstack([rgb, alpha])
    rgba[alpha == 0] = 0
    results[name] = {"rows_equal": zlib.decompress(stream) == up_filtered(rgba), "bytes": len(stream),
                     "raw": rgba.size}
from serve_app.model.png_device import check_cutout_stream
check_cutout_stream(torch.device("cpu"))  # the model's warm-up check passes where the kernels are right
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreted() -> dict:
    return triton_interpreter_results(INTERPRETED)


def test_the_stream_holds_the_filtered_rows_of_the_composed_cutout(interpreted: dict) -> None:
    assert interpreted and all(case["rows_equal"] for case in interpreted.values()), interpreted


def test_transparent_areas_cost_next_to_nothing(interpreted: dict) -> None:
    clear = interpreted["all transparent"]
    assert clear["bytes"] < clear["raw"] / 20, clear  # runs of zeros as matches: literals take a bit a byte at best


@pytest.mark.parametrize("weights", [
    [1, 1],
    [5, 1, 1, 1, 1, 1, 1],
    [int(1.6**power) for power in range(40)],  # Fibonacci-like: a plain Huffman code would need 39 bits
    list(np.random.default_rng(1).integers(1, 10**6, 286)),
])
def test_codes_are_complete_prefix_codes_of_at_most_15_bits(weights: list[int]) -> None:
    lengths = huffman_lengths(np.array(weights))
    assert lengths.max() <= MAX_BITS and lengths.min() >= 1
    assert sum(2.0 ** -int(length) for length in lengths) == 1.0  # complete: every bit string decodes
    codes = canonical_codes(lengths)
    words = {format(int(code), f"0{length}b")[::-1] for code, length in zip(codes, lengths, strict=True)}
    assert len(words) == len(weights)
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # no code begins another


def test_a_photos_code_is_cut_to_15_bits_at_almost_no_cost_in_size() -> None:
    """Up-filtered photo rows: most bytes near 0 (or 255, a small step down), tens of millions of them, and symbols
    seen once or never (every symbol has a code): an unlimited Huffman code would need more than 15 bits."""
    distance = np.minimum(np.arange(256), 256 - np.arange(256))
    weights = np.ones(286, np.int64)
    weights[:256] += (4e7 * np.exp(-distance / 5)).astype(np.int64)
    unlimited = _huffman(weights)
    assert unlimited.max() > MAX_BITS
    lengths = huffman_lengths(weights)
    assert lengths.max() <= MAX_BITS and sum(2.0 ** -int(length) for length in lengths) == 1.0
    assert (lengths * weights).sum() <= 1.01 * (unlimited * weights).sum()


def test_a_block_of_only_an_end_decodes_to_nothing() -> None:
    """The header and the code tables alone: a final block whose only symbol is the end of the block."""
    lengths = huffman_lengths(np.ones(286, np.int64))
    header = block_header(lengths)
    header.write(int(canonical_codes(lengths)[256]), int(lengths[256]))
    data = header.value.to_bytes(-(-header.count // 8), "little")
    assert zlib.decompress(data, -15) == b""


def test_the_png_around_a_stream_carries_the_colour_profile() -> None:
    rgba = np.dstack([np.full((4, 5, 3), 90, np.uint8), np.full((4, 5), 255, np.uint8)])
    rows = np.hstack([np.full((4, 1), 0, np.uint8), rgba.reshape(4, -1)])  # filter type 0: the rows as they are
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.open(io.BytesIO(png.wrap_zlib_stream(zlib.compress(rows.tobytes()), 5, 4, icc_profile=profile)))
    assert np.array_equal(np.asarray(image), rgba)
    assert image.info["icc_profile"] == profile
