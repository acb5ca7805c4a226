"""Composing cut-outs: crop, margins, placement, size limits, backgrounds and formats, on small synthetic images."""

from __future__ import annotations

import io
import resource
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from serve_app import compose, imaging
from serve_app.compose import Layout, Length, Placement, Rendered
from serve_app.errors import InvalidOption

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def picture(height: int, width: int, box: tuple[int, int, int, int], color: tuple[int, int, int] = RED,
            alpha: int = 255) -> tuple[imaging.DecodedImage, np.ndarray]:
    """A grey photo with a `color` rectangle at `box` (top, left, height, width) and a mask that is `alpha` on it."""
    top, left, box_h, box_w = box
    rgb = np.full((height, width, 3), 128, np.uint8)
    rgb[top : top + box_h, left : left + box_w] = color
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + box_h, left : left + box_w] = alpha
    return imaging.DecodedImage(rgb, None), mask


def decode(rendered: Rendered) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(rendered.data)))


def render(image: imaging.DecodedImage, mask: np.ndarray, **layout) -> tuple[Rendered, np.ndarray]:
    rendered = compose.render_cutout(image, mask, Layout(**layout))
    pixels = decode(rendered)
    assert (rendered.width, rendered.height) == (pixels.shape[1], pixels.shape[0])
    return rendered, pixels


# --- crop and margins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("margin", "pad"),
    [(Length(0, False), 0), (Length(5, False), 5), (Length(20, True), 4)],  # 20% of the longer side (20 px)
    ids=["none", "5px", "20%"],
)
def test_crop_keeps_the_subject_and_adds_the_margin_on_every_side(margin: Length, pad: int) -> None:
    image, mask = picture(60, 80, (20, 30, 10, 20))
    rendered, pixels = render(image, mask, crop=True, crop_margin=margin)
    assert pixels.shape == (10 + 2 * pad, 20 + 2 * pad, 4)
    assert (pixels[pad : pad + 10, pad : pad + 20] == (*RED, 255)).all()
    assert rendered.foreground == (pad, pad, 20, 10)


def test_a_margin_beyond_the_image_edge_is_transparent_padding() -> None:
    image, mask = picture(30, 40, (0, 0, 8, 6))  # in the top-left corner
    rendered, pixels = render(image, mask, crop=True, crop_margin=Length(4, False))
    assert pixels.shape == (16, 14, 4)
    assert (pixels[4:12, 4:10] == (*RED, 255)).all()
    outside = np.ones((16, 14), bool)
    outside[4:12, 4:10] = False
    assert (pixels[outside][:, 3] == 0).all()
    assert rendered.foreground == (4, 4, 6, 8)


def test_a_semi_transparent_part_of_the_subject_is_cropped_with_it() -> None:
    image, mask = picture(30, 40, (10, 10, 8, 6))
    mask[9, 12] = 200  # just above the red box, over the grey photo
    _, pixels = render(image, mask, crop=True, crop_margin=Length(2, False))
    assert pixels.shape == (13, 10, 4)
    assert tuple(pixels[2, 4]) == (128, 128, 128, 200)


def test_crop_without_a_subject_leaves_the_image_as_it_is() -> None:
    image, mask = picture(20, 30, (0, 0, 0, 0))
    rendered, pixels = render(image, mask, crop=True, crop_margin=Length(5, False))
    assert pixels.shape == (20, 30, 4) and rendered.foreground is None


def test_a_region_of_interest_without_the_subject_gives_an_empty_cutout() -> None:
    image, mask = picture(40, 60, (5, 5, 10, 10))
    roi = (Length(50, True), Length(0, True), Length(100, True), Length(100, True))  # the right half
    rendered, pixels = render(image, mask, roi=roi)
    assert pixels.shape == (40, 60, 4) and pixels[..., 3].max() == 0
    assert rendered.foreground is None
    assert "X-Foreground-Top" not in rendered.headers()


def test_a_region_of_interest_keeps_only_the_subject_inside_it() -> None:
    image, mask = picture(40, 60, (5, 5, 10, 50))
    roi = (Length(0, False), Length(0, False), Length(30, False), Length(40, False))
    rendered, pixels = render(image, mask, roi=roi, crop=True)
    assert pixels.shape == (10, 25, 4) and rendered.foreground == (0, 0, 25, 10)


@pytest.mark.parametrize("roi", [(0, 0, 61, 40), (30, 0, 30, 40), (0, 20, 60, 10)],
                         ids=["past-the-edge", "empty-width", "upside-down"])
def test_a_region_of_interest_outside_the_image_is_refused(roi: tuple[int, int, int, int]) -> None:
    image, mask = picture(40, 60, (5, 5, 10, 10))
    with pytest.raises(InvalidOption, match="roi"):
        compose.render_cutout(image, mask, Layout(roi=tuple(Length(v, False) for v in roi)))


def test_a_region_is_refused_from_the_header_only_when_it_fits_neither_way_up() -> None:
    """Before the model runs, only the header's size is known, not the EXIF turn that the decode applies."""
    tall = tuple(Length(v, False) for v in (0, 0, 40, 60))  # fits a 40x60 photo, which a 60x40 header may be
    compose.check_roi_either_way(tall, (60, 40))
    compose.check_roi_either_way(tall, (40, 60))
    with pytest.raises(InvalidOption, match="roi must lie within the 60x40 image"):
        compose.check_roi_either_way(tuple(Length(v, False) for v in (0, 0, 61, 61)), (60, 40))


# --- placement -----------------------------------------------------------------------------------------


def test_scale_centres_the_subject_with_its_longest_side_the_given_share_of_the_canvas() -> None:
    image, mask = picture(80, 100, (3, 4, 10, 20))
    rendered, pixels = render(image, mask, placement=Placement(scale=0.5))
    assert pixels.shape == (80, 100, 4)
    top, left, width, height = rendered.foreground
    assert (width, height) == (50, 25)  # longest side 50% of the canvas's longest, aspect kept
    assert abs(left + width / 2 - 50) <= 1 and abs(top + height / 2 - 40) <= 1
    assert (pixels[top + 2 : top + height - 2, left + 2 : left + width - 2] == (*RED, 255)).all()


def test_scale_never_makes_the_subject_larger_than_the_canvas() -> None:
    image, mask = picture(20, 100, (5, 40, 10, 10))  # square subject on a wide canvas
    rendered, _ = render(image, mask, placement=Placement(scale=1.0))
    assert rendered.foreground == (0, 40, 20, 20)


@pytest.mark.parametrize(
    ("position", "top_left"),
    [((0.0, 0.0), (0, 0)), ((1.0, 1.0), (30, 70)), ((0.5, 0.5), (15, 35)), ((1.0, 0.0), (0, 70))],
)
def test_position_moves_the_subject_by_its_share_of_the_free_room(position: tuple[float, float],
                                                                   top_left: tuple[int, int]) -> None:
    image, mask = picture(40, 80, (3, 50, 10, 10))
    rendered, pixels = render(image, mask, placement=Placement(position=position))
    assert rendered.foreground == (*top_left, 10, 10)
    top, left = top_left
    assert (pixels[top : top + 10, left : left + 10] == (*RED, 255)).all()
    assert pixels[..., 3].sum() == 100 * 255  # moved, not copied


# --- size limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "max_side"),
    [(300, 200, 10_000, None), (200, 300, None, 50), (301, 97, 5_000, 60), (97, 301, 2_345, None),
     (256, 256, 65_535, None), (123, 45, None, 122), (640, 480, 250_000, 1000), (50, 40, 1, None)],
)
def test_size_limits_are_never_exceeded_and_keep_the_aspect_ratio(width: int, height: int, max_pixels: int | None,
                                                                   max_side: int | None) -> None:
    image, mask = picture(height, width, (height // 4, width // 4, height // 2, width // 2))
    rendered, pixels = render(image, mask, max_pixels=max_pixels, max_side=max_side)
    out_h, out_w = pixels.shape[:2]
    if max_pixels is not None:
        assert out_w * out_h <= max_pixels
    if max_side is not None:
        assert max(out_w, out_h) <= max_side
    assert out_w < width and out_h < height
    # Both sides are floored from the same factor: the aspect ratio is off by at most a pixel's worth.
    assert abs(out_w / out_h - width / height) <= width / height * (1 / out_h + 1 / out_w) + 1e-9


@pytest.mark.parametrize(("width", "height"), [(3037, 1000), (1000, 3037), (2049, 2048), (3037, 3037)])
def test_a_side_limit_gives_exactly_that_long_a_side(width: int, height: int) -> None:
    # 3037 * (1024 / 3037) is 1023.9999...: a floor alone would answer a pixel short of what the client asked for.
    image, mask = picture(height, width, (0, 0, height, width))
    _, pixels = render(image, mask, max_side=1024)
    assert max(pixels.shape[:2]) == 1024
    assert (pixels.shape[0] == pixels.shape[1]) == (width == height)


def test_an_image_within_the_limits_keeps_its_size() -> None:
    image, mask = picture(30, 40, (5, 5, 10, 10))
    _, pixels = render(image, mask, max_pixels=1200, max_side=40)
    assert pixels.shape == (30, 40, 4)


# --- backgrounds ---------------------------------------------------------------------------------------


def test_a_semi_transparent_background_colour_combines_both_alphas() -> None:
    image, mask = picture(20, 20, (0, 0, 20, 10), alpha=100)
    mask[:, 15:] = 255
    background = (*BLUE, 128)
    _, pixels = render(image, mask, bg_color=background)
    assert pixels.shape == (20, 20, 4)
    subject_a, background_a = 100 / 255, 128 / 255
    out_a = subject_a + background_a * (1 - subject_a)
    blended = (np.array(RED) * subject_a + np.array(BLUE) * background_a * (1 - subject_a)) / out_a
    assert abs(int(pixels[5, 5, 3]) - out_a * 255) <= 1
    assert np.abs(pixels[5, 5, :3] - blended).max() <= 1
    assert tuple(pixels[5, 12]) == (*BLUE, 128)  # no subject: the background as given
    assert tuple(pixels[5, 17]) == (128, 128, 128, 255)  # opaque subject: the photo


def test_an_opaque_background_colour_gives_an_opaque_rgb_image() -> None:
    image, mask = picture(20, 20, (5, 5, 10, 10))
    _, pixels = render(image, mask, bg_color=(*GREEN, 255))
    assert pixels.shape == (20, 20, 3)
    assert tuple(pixels[0, 0]) == GREEN and tuple(pixels[10, 10]) == RED


@pytest.mark.parametrize("keep_alpha", [False, True])
def test_a_soft_edge_over_an_opaque_colour_blends_by_its_alpha(keep_alpha: bool) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    _, pixels = render(imaging.DecodedImage(rgb, None), mask, bg_color=(*BLUE, 255), keep_alpha=keep_alpha)
    weight = mask[..., None] / 255
    expected = rgb * weight + np.array(BLUE) * (1 - weight)
    assert pixels.shape == (16, 24, 4 if keep_alpha else 3)
    assert np.abs(pixels[..., :3] - expected).max() <= 0.5 + 1e-6  # each channel rounded to the nearest value
    assert not keep_alpha or (pixels[..., 3] == 255).all()


def test_keep_alpha_answers_rgba_over_an_opaque_colour() -> None:
    image, mask = picture(20, 20, (5, 5, 10, 10))
    _, pixels = render(image, mask, bg_color=(*GREEN, 255), keep_alpha=True)
    assert pixels.shape == (20, 20, 4)
    assert (pixels[..., 3] == 255).all()
    assert tuple(pixels[0, 0]) == (*GREEN, 255) and tuple(pixels[10, 10]) == (*RED, 255)


def test_a_background_picture_is_scaled_to_cover_not_stretched() -> None:
    # 20x10 picture: red outer quarters, green middle half. Covering a square crops the outer quarters away;
    # stretching would show them.
    backdrop = np.zeros((10, 20, 3), np.uint8)
    backdrop[:] = RED
    backdrop[:, 5:15] = GREEN
    image, mask = picture(40, 40, (0, 0, 0, 0))
    _, pixels = render(image, mask, bg_image=backdrop)
    assert pixels.shape == (40, 40, 3)
    inner = pixels[:, 3:37].astype(int)  # the outermost columns carry the resampling filter's ringing
    assert (inner[..., 1] > 200).all() and (inner[..., 0] < 40).all()


def test_a_thin_background_strip_is_resampled_at_the_answers_size_only() -> None:
    # Scaled whole to cover 600 x 600, a 1 x 3000 strip would be 600 x 1,800,000 pixels (3 GB) before the crop.
    strip = np.zeros((3000, 1, 3), np.uint8)
    strip[1400:1600] = GREEN  # the middle, which the answer shows
    image, mask = picture(600, 600, (0, 0, 0, 0))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    _, pixels = render(image, mask, bg_image=strip)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert pixels.shape == (600, 600, 3)
    assert (pixels[..., 1] > 200).all() and (pixels[..., 0] < 40).all()
    assert grown_mib < 1024, f"the process's peak memory grew by {grown_mib:.0f} MiB"


def test_the_subject_stays_on_top_of_a_background_picture() -> None:
    image, mask = picture(40, 40, (10, 10, 20, 20), color=BLUE)
    _, pixels = render(image, mask, bg_image=np.full((8, 8, 3), GREEN, np.uint8))
    assert tuple(pixels[20, 20]) == BLUE and tuple(pixels[2, 2]) == GREEN


# --- formats and channels ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "width"), [("webp", 16384), ("jpg", 65501), ("zip", 65501)])
def test_an_answer_too_wide_for_its_format_is_refused_by_name(fmt: str, width: int) -> None:
    # libwebp and libjpeg cannot hold it; a client can ask for PNG or a smaller size instead
    image, mask = picture(2, width, (0, 0, 2, width))
    with pytest.raises(InvalidOption, match=f"at most .* pixels a side, and this answer is {width}x2; ask for png"):
        compose.render_cutout(image, mask, Layout(format=fmt))  # type: ignore[arg-type]
    assert compose.render_cutout(image, mask, Layout(format="png")).width == width


def test_jpeg_is_flattened_onto_white_by_default() -> None:
    image, mask = picture(32, 48, (8, 16, 16, 16))
    rendered, pixels = render(image, mask, format="jpg")
    assert rendered.media_type == "image/jpeg" and rendered.data[:3] == b"\xff\xd8\xff"
    assert pixels.shape == (32, 48, 3)
    assert pixels[:4, :8].min() > 245  # background: white, not the grey photo or black
    assert np.abs(pixels[12:20, 20:28].astype(int) - RED).max() < 12


@pytest.mark.parametrize(("background", "expected"), [((*BLUE, 0), (255, 255, 255)), ((*BLUE, 128), (127, 127, 255))],
                         ids=["transparent", "half"])
def test_jpeg_flattens_a_semi_transparent_background_colour_onto_white(
        background: tuple[int, int, int, int], expected: tuple[int, int, int]) -> None:
    image, mask = picture(32, 48, (8, 16, 16, 16))
    _, pixels = render(image, mask, format="jpg", bg_color=background)
    assert np.abs(pixels[:4, :8].astype(int) - expected).max() < 12


def test_channels_alpha_answers_the_mask_as_grey() -> None:
    image, mask = picture(20, 30, (2, 3, 10, 12), alpha=180)
    rendered, pixels = render(image, mask, channels="alpha", bg_color=(*GREEN, 255))
    assert rendered.media_type == "image/png"
    assert pixels.shape == (20, 30) and (pixels == mask).all()


def test_zip_holds_colour_jpeg_and_the_cutouts_alpha() -> None:
    image, mask = picture(32, 48, (8, 16, 16, 16), alpha=200)
    mask[8:24, 16] = 60
    cutout, rgba = render(image, mask, crop=True, crop_margin=Length(3, False))
    packed = compose.render_cutout(image, mask, Layout(format="zip", crop=True, crop_margin=Length(3, False)))
    assert packed.media_type == "application/zip"
    assert (packed.width, packed.height, packed.foreground) == (cutout.width, cutout.height, cutout.foreground)
    with zipfile.ZipFile(io.BytesIO(packed.data)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        colour = Image.open(io.BytesIO(archive.read("color.jpg")))
        alpha = Image.open(io.BytesIO(archive.read("alpha.png")))
    assert (colour.format, colour.mode, colour.size) == ("JPEG", "RGB", (cutout.width, cutout.height))
    assert alpha.mode == "L" and (np.asarray(alpha) == rgba[..., 3]).all()


@pytest.mark.parametrize("layout", [{}, {"crop": True, "crop_margin": Length(4, False)}, {"bg_color": (*GREEN, 128)},
                                    {"format": "webp"}], ids=["plain", "crop", "see-through-bg", "webp"])
def test_a_jpeg_upload_is_cut_out_as_its_own_pixels_with_the_mask_as_alpha(layout: dict) -> None:
    image, mask = picture(48, 64, (10, 12, 20, 30), alpha=200)
    jpeg = io.BytesIO()
    Image.fromarray(image.pixels).save(jpeg, format="JPEG", quality=95)
    decoded = imaging.decode_image(jpeg.getvalue(), max_pixels=10**6)
    assert decoded.pixels.shape[2] == 4  # a JPEG decodes with a spare channel, which the alpha then takes
    as_rgb = imaging.DecodedImage(decoded.rgb.copy(), None)
    _, expected = render(as_rgb, mask, **layout)
    _, pixels = render(decoded, mask, **layout)
    assert np.array_equal(pixels, expected)
    if layout == {}:
        assert np.array_equal(pixels[..., 3], mask) and np.array_equal(pixels[20, 20, :3], as_rgb.pixels[20, 20])


def test_channels_alpha_with_zip_answers_a_png_mask() -> None:
    image, mask = picture(20, 30, (2, 3, 10, 12))
    rendered = compose.render_cutout(image, mask, Layout(format="zip", channels="alpha"))
    assert rendered.media_type == "image/png" and (decode(rendered) == mask).all()


def test_webp_keeps_the_transparency() -> None:
    image, mask = picture(32, 32, (8, 8, 16, 16))
    rendered, pixels = render(image, mask, format="webp")
    assert rendered.media_type == "image/webp"
    assert pixels.shape == (32, 32, 4) and pixels[0, 0, 3] == 0 and pixels[16, 16, 3] == 255


def test_colours_replace_the_photos_colours() -> None:
    image, mask = picture(20, 20, (5, 5, 10, 10), alpha=128)
    colours = np.full((20, 20, 3), GREEN, np.uint8)
    rendered = compose.render_cutout(image, mask, Layout(), colours=colours)
    pixels = decode(rendered)
    assert tuple(pixels[10, 10]) == (*GREEN, 128)
    assert tuple(image.rgb[10, 10]) == RED  # the photo is left as it was


def test_the_uploads_own_transparency_limits_the_cutout() -> None:
    image, mask = picture(10, 10, (0, 0, 10, 10))
    transparent = imaging.DecodedImage(image.pixels, np.full((10, 10), 51, np.uint8))
    _, pixels = render(transparent, mask)
    assert (pixels[..., 3] == 51).all()


# --- boxes and masks -----------------------------------------------------------------------------------


def test_boxes_of_an_empty_mask_are_none() -> None:
    empty = np.zeros((7, 9), np.uint8)
    assert compose.subject_box(empty) is None and compose.foreground_box(empty) is None


def test_boxes_of_a_full_mask_cover_the_image() -> None:
    full = np.full((7, 9), 255, np.uint8)
    assert compose.subject_box(full) == (0, 0, 7, 9)  # top, left, height, width
    assert compose.foreground_box(full) == (0, 0, 9, 7)  # top, left, width, height


def test_faint_haze_does_not_count_as_subject() -> None:
    alpha = np.full((20, 30), compose.SUBJECT_ALPHA - 1, np.uint8)
    alpha[4:6, 10:20] = compose.SUBJECT_ALPHA
    assert compose.foreground_box(alpha) == (4, 10, 10, 2)


def eroded_slowly(binary: np.ndarray, size: int) -> np.ndarray:
    """Erosion by a size x size square, window starting at i - size // 2, outside the image counting as False."""
    height, width = binary.shape
    out = np.zeros_like(binary)
    for i in range(height):
        for j in range(width):
            inside = True
            for y in range(i - size // 2, i - size // 2 + size):
                for x in range(j - size // 2, j - size // 2 + size):
                    if not (0 <= y < height and 0 <= x < width and binary[y, x]):
                        inside = False
            out[i, j] = inside
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(6))
def test_erode_matches_a_plain_erosion(size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12)))
    binary = rng.random(shape) < 0.8
    assert (compose.erode(binary, size) == eroded_slowly(binary, size)).all()


def test_erode_memory_does_not_grow_with_a_size_larger_than_the_image() -> None:
    binary = np.ones((16, 16), bool)
    tracemalloc.start()
    try:
        eroded = compose.erode(binary, 1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not eroded.any()
    assert peak < 1_000_000


def test_snap_to_trimap_without_erosion_applies_the_thresholds() -> None:
    mask = np.array([[0, 9, 10, 11, 128, 239, 240, 241, 255]], np.uint8)
    snapped = compose.snap_to_trimap(mask, foreground_threshold=240, background_threshold=10, erode_size=1)
    assert snapped.tolist() == [[0, 0, 10, 11, 128, 239, 240, 255, 255]]
    assert mask.tolist() == [[0, 9, 10, 11, 128, 239, 240, 241, 255]]  # the model's mask is left as it was


def test_snap_to_trimap_erosion_keeps_the_soft_band_wider() -> None:
    mask = np.full((9, 9), 128, np.uint8)
    mask[4, 4] = 250  # one confident pixel: eroded away, so it keeps the model's own value
    mask[:, :3] = 250  # a confident region: its inner part snaps to opaque
    snapped = compose.snap_to_trimap(mask, foreground_threshold=240, background_threshold=10, erode_size=3)
    assert snapped[4, 4] == 250
    assert (snapped[1:8, 1] == 255).all()
    assert (snapped[:, 0] == 250).all()  # next to the image's edge: outside counts as unsure
    assert (snapped[:, 2] == 250).all() and (snapped[:, 3:] != 255).all()


def test_post_processing_gives_a_hard_mask_without_specks() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 200
    mask[3, 35] = 255  # an isolated speck
    mask[15, 15] = 0  # a pinhole in the subject
    cleaned = compose.post_process_mask(mask)
    assert set(np.unique(cleaned)) == {0, 255}
    assert cleaned[3, 35] == 0 and cleaned[:8, 32:].max() == 0
    assert (cleaned[13:27, 13:27] == 255).all()
    assert cleaned[0, 0] == 0


# --- lengths and headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default_unit", "length", "pixels_of_200"),
    [("30px", "px", Length(30, False), 30), ("30", "px", Length(30, False), 30),
     (" 12.5 % ", "px", Length(12.5, True), 25), ("10", "%", Length(10, True), 20), ("0", "px", Length(0, False), 0)],
)
def test_parse_length(text: str, default_unit: str, length: Length, pixels_of_200: int) -> None:
    parsed = compose.parse_length("crop_margin", text, default_unit=default_unit)
    assert parsed == length and parsed.pixels(200) == pixels_of_200


@pytest.mark.parametrize("text", ["", "px", "-5px", "10em", "1e3", "10 %%", "ten"])
def test_parse_length_refuses_what_is_not_a_length_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidOption, match="crop_margin must look like"):
        compose.parse_length("crop_margin", text)


@pytest.mark.parametrize(("text", "ok"), [("500px", True), ("500.5px", False), ("50%", True), ("50.1%", False),
                                          ("600", False)])
def test_parse_length_limits(text: str, ok: bool) -> None:
    def parse() -> Length:
        return compose.parse_length("crop_margin", text, max_px=500, max_percent=50)

    if ok:
        parse()
    else:
        with pytest.raises(InvalidOption, match="crop_margin is at most"):
            parse()


def test_headers_give_size_and_foreground_box() -> None:
    rendered = Rendered(b"", "image/png", 320, 200, (30, 40, 100, 80))
    assert rendered.headers() == {"X-Width": "320", "X-Height": "200", "X-Foreground-Top": "30",
                                  "X-Foreground-Left": "40", "X-Foreground-Width": "100",
                                  "X-Foreground-Height": "80"}
    assert Rendered(b"", "image/png", 320, 200, None).headers() == {"X-Width": "320", "X-Height": "200"}


def test_crop_margin_per_side_top_right_bottom_left() -> None:
    image, mask = picture(40, 60, (10, 20, 10, 20))  # top, left, height, width
    sides = (Length(1, False), Length(2, False), Length(3, False), Length(4, False))
    rendered = compose.render_cutout(image, mask, compose.Layout(crop=True, crop_margin=sides))
    assert (rendered.width, rendered.height) == (20 + 2 + 4, 10 + 1 + 3)
    assert rendered.foreground == (1, 4, 20, 10)


def test_only_the_photo_as_it_is_over_transparency_as_a_png_is_a_plain_cutout() -> None:
    """What the model's device may write whole (a large JPEG's PNG): nothing composed, cropped, moved or resized."""
    assert compose.Layout().plain_cutout
    for changed in ({"format": "webp"}, {"channels": "alpha"}, {"bg_color": (1, 2, 3, 255)}, {"crop": True},
                    {"roi": (compose.Length(0, False),) * 4}, {"placement": compose.Placement(scale=0.5)},
                    {"max_pixels": 10**6}, {"max_side": 1000}, {"bg_image": np.zeros((2, 2, 3), np.uint8)}):
        assert not compose.Layout(**changed).plain_cutout, changed  # type: ignore[arg-type]


def test_a_see_through_colour_behind_a_large_photo_takes_no_float_copy_of_it() -> None:
    height, width = 1500, 2000
    image, mask = picture(height, width, (100, 100, 1800, 1300), alpha=100)
    tracemalloc.start()
    try:
        _, pixels = render(image, mask, bg_color=(*BLUE, 128))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (height, width, 4)
    # the answer and its encoding's buffers are a few times the 12 MB of RGBA; float copies of the whole were 16x it
    assert peak < 6 * height * width * 4, peak
    assert abs(int(pixels[500, 500, 3]) - 178) <= 1  # 100/255 over 128/255


def test_rembgs_erosion_wider_than_the_mask_leaves_only_the_soft_band() -> None:
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 10:70] = 255
    for size in (61, 10**9):  # longer than a side: nothing is sure foreground or background
        snapped = compose.snap_to_trimap(mask, 240, 10, size)
        assert np.array_equal(snapped, mask)
    assert np.array_equal(compose.erode(mask > 0, 10**9), np.zeros_like(mask, dtype=bool))
