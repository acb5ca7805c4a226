"""A large JPEG whose PNG the model replica writes (device_png_min_pixels) costs the ingress only a check of its
scan, not a decode: the answer is the replica's PNG rows with the upload's colour profile. The ingress decodes the
photo when the answer needs its pixels: the replica left the PNG to it, or libjpeg warns about the file (the
replica's decode of such a scan may hold rows it never wrote, so neither its PNG nor its mask is used)."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from types import MethodType, SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageCms

from serve_app import compose, imaging
from serve_app.deployments.ingress import PNG_OUTCOMES_BEFORE_JUDGING, PNG_OUTCOMES_KEPT, Ingress
from serve_app.errors import InvalidImage
from serve_app.options import OutputOptions
from serve_app.protocol import EncodedJpeg, MaskResult
from serve_app.settings import IngressSettings
from serve_app.timing import StageTimer
from tests.images import BOX, SIZE, encode, expected_alpha, jpeg_scan_cut_short_with_an_end_marker, red_square

LIMIT = 10**8
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
PHOTO = encode(red_square(), "JPEG", quality=95, icc_profile=SRGB)
PIXELS = imaging.decode_image(PHOTO, max_pixels=LIMIT).rgb
MASK = expected_alpha(SIZE, BOX).astype(np.uint8) * 255
MODEL = "hub"


def device_stream(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the replica's device writes (serve_app/model/png_device.py): the RGBA rows, transparent pixels all
    zero, Up-filtered, as one zlib stream in a uint8 array."""
    rgba = np.concatenate([pixels[..., :3], mask[..., None]], axis=2)
    rgba[mask == 0] = 0
    rows = rgba.reshape(len(rgba), -1)
    filtered = np.concatenate([rows[:1], rows[1:] - rows[:-1]])  # uint8: modulo 256
    stream = zlib.compress(np.concatenate([np.full((len(rows), 1), 2, np.uint8), filtered], axis=1).tobytes())
    return np.frombuffer(stream, np.uint8)


class Replica:
    """The model replica as the ingress calls it: the file's mask (and, when asked and `writes_png`, its PNG rows,
    of a decode told apart from the ingress's by its colours: libjpeg's, inverted, stands in for nvJPEG's); a call
    for the file may be held until the ingress drops it."""

    def __init__(self, writes_png: bool = True, holds_the_file: bool = False):
        self.writes_png, self.holds_the_file = writes_png, holds_the_file
        self.asked: list[str] = []
        self.dropped = asyncio.Event()

    async def segment(self, image, timer, refine=False, model=None, with_png=False) -> MaskResult:  # type: ignore[no-untyped-def]
        if isinstance(image, EncodedJpeg):
            self.asked.append("file with its PNG" if with_png else "file")
            if self.holds_the_file:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    self.dropped.set()
                    raise
            pixels = 255 - imaging.decode_image(image.data, max_pixels=LIMIT).rgb
            stream = device_stream(pixels, MASK) if with_png and self.writes_png else None
            return MaskResult(MASK, 0.0, 1.0, 1, device_decode_ms=1.0, png_stream=stream)
        self.asked.append("pixels")
        return MaskResult(MASK // 2, 0.0, 1.0, 1)  # told apart from the file's mask


def ingress(replica: Replica, pool: ThreadPoolExecutor, outcomes: deque | None = None) -> SimpleNamespace:
    one = SimpleNamespace(settings=IngressSettings(device_png_min_pixels=SIZE[0] * SIZE[1]), _cutting_out=1,
                          _device_idle=True, _input_sizes={MODEL: (64, 64)}, _codec_pool=pool, _png_pool=pool,
                          _segment=replica.segment,
                          _png_outcomes=deque(maxlen=PNG_OUTCOMES_KEPT) if outcomes is None else outcomes)
    for name in ("_decode_segment_finish", "_to_decode_on_device", "_segment_with_device_png", "_scan_first",
                 "_segment_beside_decode", "_file_answer", "_mask_for", "_in_pool", "_native_finish",
                 "_png_stripes"):
        setattr(one, name, MethodType(getattr(Ingress.func_or_class, name), one))
    return one


def cut_out(replica: Replica, data: bytes, outcomes: deque | None = None,
            device_png: bool = True) -> tuple[compose.Rendered, dict[str, float]]:
    """The plain PNG cut-out of `data`, and its stages, as the native API asks for it (of an ingress replica that
    saw the PNG `outcomes` before); without `device_png`, as an answer the replica's PNG cannot be."""
    async def run() -> compose.Rendered:
        with ThreadPoolExecutor(2) as pool:
            one = ingress(replica, pool, outcomes)
            finish = one._native_finish(OutputOptions())
            return await asyncio.wait_for(one._decode_segment_finish(data, finish, timer, False, MODEL, device_png),
                                          20)

    timer = StageTimer()
    rendered = asyncio.run(run())
    return rendered, dict(timer.stages)


def test_the_replicas_png_is_the_answer_and_the_photo_is_only_scanned_here() -> None:
    replica = Replica()
    rendered, stages = cut_out(replica, PHOTO)
    assert replica.asked == ["file with its PNG"]
    assert "model_cpu_scan" in stages and "model_cpu_decode" not in stages, stages
    answer = Image.open(io.BytesIO(rendered.data))
    assert answer.mode == "RGBA" and answer.size == SIZE and answer.info.get("icc_profile") == SRGB
    rgba = np.asarray(answer)
    np.testing.assert_array_equal(rgba[..., 3], MASK)
    np.testing.assert_array_equal(rgba[MASK > 0][:, :3], 255 - PIXELS[MASK > 0])  # the replica's colours
    assert rendered.foreground == (BOX[1], BOX[0], BOX[2] - BOX[0], BOX[3] - BOX[1])  # top, left, width, height


def test_a_png_the_replica_leaves_is_written_here_from_this_decode_with_the_files_mask() -> None:
    replica = Replica(writes_png=False)
    rendered, stages = cut_out(replica, PHOTO)
    assert replica.asked == ["file with its PNG"]  # the mask of the file serves: its scan is clean
    assert "model_cpu_scan" in stages and "model_cpu_decode" in stages, stages
    answer = Image.open(io.BytesIO(rendered.data))
    assert answer.info.get("icc_profile") == SRGB
    rgba = np.asarray(answer)
    np.testing.assert_array_equal(rgba[..., 3], MASK)
    np.testing.assert_array_equal(rgba[MASK > 0][:, :3], PIXELS[MASK > 0])  # this replica's colours


def test_a_jpeg_libjpeg_warns_about_gets_neither_the_replicas_png_nor_its_mask() -> None:
    replica = Replica(holds_the_file=True)
    body = jpeg_scan_cut_short_with_an_end_marker()  # Pillow decodes it, greying the rows it did not reach
    rendered, stages = cut_out(replica, body)
    assert replica.asked == ["file with its PNG", "pixels"] and replica.dropped.is_set()
    assert "model_cpu_decode" in stages, stages
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rendered.data)))[..., 3], MASK // 2)


def test_a_jpeg_broken_after_its_header_is_invalid_and_the_replicas_call_is_dropped() -> None:
    replica = Replica(holds_the_file=True)
    whole = encode(red_square(), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        cut_out(replica, whole[: len(whole) // 2])
    assert replica.asked == ["file with its PNG"] and replica.dropped.is_set()


def test_while_the_replica_leaves_most_pngs_large_photos_are_decoded_beside_the_call_and_its_pngs_still_used() -> None:
    """Scanning first and decoding afterwards costs more than decoding beside the call when the replica leaves the
    PNG to the ingress: after enough such answers the ingress decodes beside the call, still asking for the PNG,
    and goes back to scanning first once the PNGs come back written again."""
    outcomes: deque = deque(maxlen=PNG_OUTCOMES_KEPT)
    leaving = Replica(writes_png=False)
    for _ in range(PNG_OUTCOMES_BEFORE_JUDGING):
        _, stages = cut_out(leaving, PHOTO, outcomes)
        assert "model_cpu_scan" in stages, stages  # not judged yet: scan first
    _, stages = cut_out(leaving, PHOTO, outcomes)
    assert "model_cpu_scan" not in stages and "model_cpu_decode" in stages, stages
    assert leaving.asked[-1] == "file with its PNG"  # still asked: the outcomes stay current
    assert list(outcomes) == [False] * (PNG_OUTCOMES_BEFORE_JUDGING + 1)
    cut_out(leaving, PHOTO, outcomes, device_png=False)  # no PNG asked: no outcome
    assert len(outcomes) == PNG_OUTCOMES_BEFORE_JUDGING + 1
    writing = Replica()
    left = len(outcomes)
    for _ in range(left):  # written now, beside the decode: the answer is the replica's PNG
        rendered, stages = cut_out(writing, PHOTO, outcomes)
        assert "model_cpu_decode" in stages and "model_cpu_scan" not in stages, stages
        answer = Image.open(io.BytesIO(rendered.data))
        assert answer.info.get("icc_profile") == SRGB
        rgba = np.asarray(answer)
        np.testing.assert_array_equal(rgba[..., 3], MASK)
        np.testing.assert_array_equal(rgba[MASK > 0][:, :3], 255 - PIXELS[MASK > 0])  # the replica's colours
    assert list(outcomes) == [False] * left + [True] * left
    _, stages = cut_out(writing, PHOTO, outcomes)  # as many written as left now: scanning first again
    assert "model_cpu_scan" in stages and "model_cpu_decode" not in stages, stages


def test_a_jpeg_libjpeg_warns_about_is_answered_from_its_pixels_on_the_decode_beside_path_too() -> None:
    outcomes: deque = deque([False] * PNG_OUTCOMES_KEPT, maxlen=PNG_OUTCOMES_KEPT)
    replica = Replica()  # would write the PNG of nvJPEG's decode, rows it never reached included
    rendered, stages = cut_out(replica, jpeg_scan_cut_short_with_an_end_marker(), outcomes)
    assert "model_cpu_scan" not in stages and replica.asked == ["file with its PNG", "pixels"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rendered.data)))[..., 3], MASK // 2)
