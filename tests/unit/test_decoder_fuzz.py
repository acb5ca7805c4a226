"""Property tests on the decoder: any bytes give an image or a client error (ApiError), never a crash."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.errors import ApiError
from serve_app.imaging import DecodedImage, decode_image
from tests.images import encode, red_square

SEEDS = [encode(red_square((40, 30), (5, 5, 20, 20)), fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_pixels=1_000_000)
    except ApiError as error:
        assert error.status in (413, 415, 422) and error.message
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3
    assert decoded.alpha is None or decoded.alpha.shape == decoded.rgb.shape[:2]


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=12))
def test_valid_files_with_corrupted_bytes(seed: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    decodes_or_refuses(bytes(data))


@FUZZ
@given(seed=st.sampled_from(SEEDS), cut=st.floats(0, 1))
def test_valid_files_truncated_anywhere(seed: bytes, cut: float) -> None:
    decodes_or_refuses(seed[: int(len(seed) * cut)])
