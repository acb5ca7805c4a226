"""The codec benchmark's work for one photo: the native and the composed cut-out are the same picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from bench_codec import photo_work

from harness.photos import synthetic_photo


@pytest.mark.parametrize("stages", ["all", "png"])
def test_the_composed_cut_out_is_the_native_one_as_a_png(stages: str) -> None:
    buffer = io.BytesIO()
    synthetic_photo(640, 480, np.random.default_rng(0)).save(buffer, format="JPEG", quality=90)
    photos = [buffer.getvalue()]
    sizes = {cutout: [photo_work(photos, stages, None, 1, 10**7, cutout)(index) for index in range(2)]
             for cutout in ("native", "composed")}
    # each run makes a whole PNG of the 640x480 photo, the same size from round to round and from path to path
    assert sizes["native"][0] > 640 * 480 and len(set(sizes["native"] + sizes["composed"])) == 1
