"""Decoding, compositing and encoding: the pure image functions."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageOps

from serve_app.errors import InvalidImage, InvalidOption, PayloadTooLarge, UnsupportedMediaType
from serve_app.imaging import (
    DecodedImage,
    compose_result,
    decode_image,
    encode_image,
    header_size,
    parse_bg_color,
    render,
)
from tests.images import BOX, SIZE, encode, red_square

MAX_PIXELS = 10_000_000


def decode(data: bytes, max_pixels: int = MAX_PIXELS):
    return decode_image(data, max_pixels=max_pixels)


def png_with_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG signature + IHDR claiming the given size, with a tiny IDAT."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "LA"])
def test_common_modes_decode_to_rgb_with_the_object_where_it_was(mode: str) -> None:
    image = red_square().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode(encode(image, fmt))
    assert decoded.rgb.shape == (SIZE[1], SIZE[0], 3) and decoded.rgb.dtype == np.uint8
    left, top, right, bottom = BOX
    inside = decoded.rgb[(top + bottom) // 2, (left + right) // 2].astype(int)
    outside = decoded.rgb[5, SIZE[0] - 5].astype(int)
    assert outside.min() > 240, f"background became {outside}"
    assert inside.min() < 200, f"object became {inside}"


def test_16_bit_png_is_scaled_not_clipped() -> None:
    gradient = np.linspace(0, 65535, 256, dtype=np.uint16)[None, :].repeat(4, axis=0)
    decoded = decode(encode(Image.fromarray(gradient)))  # uint16 -> mode I;16
    row = decoded.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert 120 <= row[128] <= 135, "mid-grey must stay mid-grey, not saturate"
    assert (row == np.rint(gradient[0] / 257)).all()


def test_a_16_bit_grey_pngs_transparent_grey_is_transparent() -> None:
    grey = np.full((4, 6), 5000, np.uint16)
    grey[:, :3] = 1000
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG", transparency=1000)  # a tRNS chunk naming one 16-bit grey
    decoded = decode(buffer.getvalue())
    assert decoded.alpha is not None
    assert (decoded.alpha[:, :3] == 0).all() and (decoded.alpha[:, 3:] == 255).all()


def test_exif_orientation_is_applied() -> None:
    image = red_square()  # 320 x 200
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (SIZE[1], SIZE[0]), "displayed picture is portrait"
    # Clockwise rotation puts the original's top-left object at the top-right.
    assert decoded.rgb[60, SIZE[1] - 70].min() < 200 <= decoded.rgb[60, 70].min()


def noisy_photo(width: int = 97, height: int = 61) -> Image.Image:
    """No symmetry, so that every flip and turn shows; odd sizes exercise partial JPEG blocks."""
    return Image.fromarray(np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8))


def pillow_upright(data: bytes, mode: str = "RGB") -> np.ndarray:
    """What Pillow alone makes of the bytes: the reference the fast JPEG path must equal."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert(mode))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_pixel_for_pixel(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(noisy_photo(), "JPEG", exif=exif.tobytes(), quality=90)
    np.testing.assert_array_equal(decode(data).rgb, pillow_upright(data))


def test_header_size_reads_the_header_alone() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned: the header still says 97x61
    assert header_size(encode(noisy_photo(), "JPEG", exif=exif.tobytes())) == (97, 61)
    assert header_size(png_with_header(5000, 3)) == (5000, 3)
    assert header_size(b"") is None and header_size(b"\x89PNG\r\n\x1a\nbroken") is None


@pytest.mark.parametrize(("mode", "subsampling"), [("RGB", 0), ("RGB", 2), ("L", 0)])
def test_jpeg_pixels_equal_pillow_decode(mode: str, subsampling: int) -> None:
    extra = {} if mode == "L" else {"subsampling": subsampling}
    data = encode(noisy_photo().convert(mode), "JPEG", quality=85, **extra)
    np.testing.assert_array_equal(decode(data).rgb, pillow_upright(data))


def test_progressive_and_cmyk_jpegs_decode_like_pillow() -> None:
    progressive = encode(noisy_photo(), "JPEG", quality=85, progressive=True)
    np.testing.assert_array_equal(decode(progressive).rgb, pillow_upright(progressive))
    cmyk = encode(noisy_photo().convert("CMYK"), "JPEG", quality=95)
    np.testing.assert_array_equal(decode(cmyk).rgb, pillow_upright(cmyk))


def test_jpeg_with_stray_bytes_decodes_as_pillow_does() -> None:
    data = encode(noisy_photo(), "JPEG", quality=90)
    marker = data.index(b"\xff\xdb")  # libjpeg warns: "2 extraneous bytes before marker 0xdb"; Pillow decodes it
    damaged = data[:marker] + b"\x00\x00" + data[marker:]
    np.testing.assert_array_equal(decode(damaged).rgb, pillow_upright(data))


def test_truncated_jpeg_is_invalid_image() -> None:
    data = encode(noisy_photo(400, 300), "JPEG", quality=90)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode(data[: len(data) // 2])


def test_transparency_is_kept_and_hidden_pixels_shown_as_white() -> None:
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (0, 0, 0, 0)  # transparent black: should look white to the model
    rgba[:, 10:] = (0, 0, 255, 255)
    decoded = decode(encode(Image.fromarray(rgba, "RGBA")))
    assert decoded.alpha is not None
    assert decoded.alpha[0, 0] == 0 and decoded.alpha[0, 15] == 255
    assert tuple(decoded.model_input[0, 0]) == (255, 255, 255)
    assert tuple(decoded.model_input[0, 15]) == (0, 0, 255)
    assert tuple(decoded.rgb[0, 0]) == (0, 0, 0), "the cut-out keeps the original colours"


def test_opaque_rgba_reports_no_alpha() -> None:
    decoded = decode(encode(red_square().convert("RGBA")))
    assert decoded.alpha is None and decoded.model_input is decoded.pixels


def test_semi_transparent_colours_are_kept_in_the_cutout() -> None:
    decoded = decode(encode(Image.new("RGBA", (2, 2), (200, 0, 0, 100))))
    assert tuple(decoded.rgb[0, 0]) == (200, 0, 0)
    out = compose_result(decoded, np.full((2, 2), 255, np.uint8))
    assert tuple(out[0, 0]) == (200, 0, 0, 100)


def test_palette_with_transparency_becomes_alpha() -> None:
    image = red_square().convert("P")
    white_index = image.getpixel((0, 0))
    data = encode(image, transparency=white_index)
    decoded = decode(data)
    assert decoded.alpha is not None and decoded.alpha[0, 0] == 0


@pytest.mark.parametrize(("mode", "transparent"), [("L", 255), ("RGB", (255, 255, 255))])
def test_a_grey_or_rgb_png_with_a_transparent_colour_keeps_it_transparent(mode: str, transparent: object) -> None:
    # PNG's tRNS chunk: one colour of a grey or RGB image is transparent, as a palette entry can be.
    data = encode(red_square().convert(mode), transparency=transparent)
    decoded = decode(data)
    left, top, right, bottom = BOX
    assert decoded.alpha is not None and decoded.alpha[0, 0] == 0
    assert decoded.alpha[(top + bottom) // 2, (left + right) // 2] == 255


def test_animated_gif_takes_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = decode(buffer.getvalue())
    red, green, blue = decoded.rgb[4, 8].astype(int)
    assert red > 200 and blue < 50


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"just some text, not an image\n", UnsupportedMediaType),
        (encode(red_square(), "JPEG")[:300], InvalidImage),
        (png_with_header(0, 10), InvalidImage),
        (png_with_header(5000, 5000), PayloadTooLarge),
    ],
    ids=["empty", "text", "truncated-jpeg", "zero-width", "too-many-pixels"],
)
def test_bad_input_raises_a_client_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        decode(data)
    assert raised.value.status in (413, 415, 422)
    assert raised.value.message


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="320x200"):
        decode(encode(red_square()), max_pixels=320 * 200 - 1)


def test_compose_rgba_cutout_keeps_colours_and_uses_mask_as_alpha() -> None:
    decoded = decode(encode(red_square()))
    mask = np.full(decoded.rgb.shape[:2], 128, dtype=np.uint8)
    out = compose_result(decoded, mask)
    assert out.shape == (SIZE[1], SIZE[0], 4)
    assert np.array_equal(out[..., :3], decoded.rgb) and np.all(out[..., 3] == 128)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_rgba_cutout_png_reads_back_with_the_photo_colours_and_the_mask(fmt: str) -> None:
    data = encode(noisy_photo(), fmt, quality=90) if fmt == "JPEG" else encode(noisy_photo(), fmt)
    colours = decode(data).rgb.copy()
    mask = np.random.default_rng(3).integers(0, 256, colours.shape[:2], dtype=np.uint8)
    png = render(decode(data), mask, "png")
    cutout = np.asarray(Image.open(io.BytesIO(png)))
    assert cutout.shape == (*colours.shape[:2], 4)
    np.testing.assert_array_equal(cutout[..., :3], visible_colours(colours, mask))
    np.testing.assert_array_equal(cutout[..., 3], mask)


def visible_colours(colours: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """What a PNG cut-out keeps of the photo: its colours, black where the pixel is fully transparent."""
    return np.where(alpha[..., None] == 0, 0, colours).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fully_transparent_pixels_come_out_as_zeros_and_the_photo_is_untouched(fmt: str) -> None:
    data = encode(noisy_photo(), fmt, quality=90) if fmt == "JPEG" else encode(noisy_photo(), fmt)
    decoded = decode(data)
    before = decoded.pixels.copy()
    mask = np.zeros(before.shape[:2], np.uint8)
    mask[:, before.shape[1] // 2:] = 255  # the right half kept, the left half transparent
    cutout = np.asarray(Image.open(io.BytesIO(render(decoded, mask, "png"))))
    assert not cutout[:, : before.shape[1] // 2].any(), "transparent pixels keep no colour"
    np.testing.assert_array_equal(cutout[:, before.shape[1] // 2:, :3], before[:, before.shape[1] // 2:, :3])
    if fmt == "PNG":  # RGB pixels: composed into a new array. A JPEG's RGBX pixels may take the alpha, nothing else
        np.testing.assert_array_equal(decoded.pixels, before)
    else:
        np.testing.assert_array_equal(decoded.pixels[..., :3], before[..., :3])
    assert len(render(decode(data), mask, "png")) < 0.6 * len(render(decode(data), np.full_like(mask, 255), "png"))


def test_png_render_of_a_read_only_jpeg_reads_it_without_writing() -> None:
    decoded = decode(encode(noisy_photo(), "JPEG", quality=90))
    decoded.pixels.flags.writeable = False  # as arrays from Ray's object store arrive (the bulk path)
    mask = np.random.default_rng(5).integers(0, 256, decoded.pixels.shape[:2], dtype=np.uint8)
    with ThreadPoolExecutor(3) as pool:
        cutout = np.asarray(Image.open(io.BytesIO(render(decoded, mask, "png", png_pool=pool))))
    np.testing.assert_array_equal(cutout[..., :3], visible_colours(decoded.rgb, mask))
    np.testing.assert_array_equal(cutout[..., 3], mask)


def test_compose_leaves_the_image_as_it_was_unless_told_to_reuse_it() -> None:
    decoded = decode(encode(noisy_photo(), "JPEG", quality=90))
    assert decoded.pixels.shape[2] == 4, "JPEGs decode with a spare channel for the alpha"
    before = decoded.pixels.copy()
    mask = np.full(decoded.pixels.shape[:2], 7, np.uint8)
    out = compose_result(decoded, mask)
    np.testing.assert_array_equal(decoded.pixels, before)
    assert np.all(out[..., 3] == 7)
    reused = compose_result(decoded, mask, reuse_pixels=True)
    assert reused is decoded.pixels and np.all(reused[..., 3] == 7)
    np.testing.assert_array_equal(reused[..., :3], before[..., :3])


def test_compose_copies_read_only_pixels_even_when_told_to_reuse_them() -> None:
    decoded = decode(encode(noisy_photo(), "JPEG", quality=90))
    decoded.pixels.flags.writeable = False  # as arrays from Ray's object store arrive
    out = compose_result(decoded, np.full(decoded.pixels.shape[:2], 9, np.uint8), reuse_pixels=True)
    assert out is not decoded.pixels and np.all(out[..., 3] == 9)


def test_compose_multiplies_mask_with_existing_transparency() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    decoded = decode(encode(Image.fromarray(rgba, "RGBA")))
    out = compose_result(decoded, np.full((4, 4), 255, np.uint8))
    assert np.all(out[..., 3] == 128)


def test_compose_on_background_colour_blends() -> None:
    decoded = decode(encode(Image.new("RGB", (4, 4), (200, 0, 0))))
    mask = np.array([[0, 255, 128, 255]] * 4, dtype=np.uint8)
    out = compose_result(decoded, mask, bg_color=(0, 0, 255))
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[0, 1]) == (200, 0, 0)
    assert tuple(out[0, 2]) == (100, 0, 127)


@pytest.mark.parametrize("background", [0, 1, 127, 128, 254, 255])
def test_compose_on_background_colour_rounds_every_blend_to_the_nearest_value(background: int) -> None:
    values = np.arange(256, dtype=np.uint8)
    colour = np.repeat(values[:, None, None], 256, axis=1).repeat(3, axis=2)  # every colour value...
    mask = np.repeat(values[None, :], 256, axis=0)  # ...with every alpha
    decoded = DecodedImage(colour, None)
    out = compose_result(decoded, mask, bg_color=(background,) * 3)
    exact = (colour[..., 0].astype(np.int64) * mask + background * (255 - mask.astype(np.int64))) / 255
    assert np.abs(out[..., 0] - exact).max() <= 0.5


def test_compose_only_mask_returns_the_mask() -> None:
    decoded = decode(encode(red_square()))
    mask = np.random.default_rng(0).integers(0, 256, decoded.rgb.shape[:2], dtype=np.uint8)
    assert np.array_equal(compose_result(decoded, mask, only_mask=True), mask)


def test_compose_rejects_a_mask_of_another_size() -> None:
    decoded = decode(encode(red_square()))
    with pytest.raises(ValueError, match="does not match"):
        compose_result(decoded, np.zeros((SIZE[0], SIZE[1]), np.uint8))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (37, 53, 4)], ids=["grey", "rgb", "rgba"])
def test_png_encoding_is_lossless_but_for_the_colour_of_invisible_pixels(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    expected = pixels.copy()
    if len(shape) == 3 and shape[2] == 4:
        pixels[::3, ::2, 3] = 0  # fully transparent: their colours are not kept
        expected = visible_colours(pixels, pixels[..., 3])
        expected[..., 3] = pixels[..., 3]
    decoded = Image.open(io.BytesIO(encode_image(pixels, "png")))
    assert decoded.format == "PNG"
    assert np.array_equal(np.asarray(decoded), expected)


def test_webp_encoding_keeps_size_and_alpha() -> None:
    pixels = np.zeros((30, 50, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, :25, 3] = 0
    decoded = Image.open(io.BytesIO(encode_image(pixels, "webp")))
    assert decoded.format == "WEBP" and decoded.size == (50, 30) and decoded.mode == "RGBA"
    assert decoded.getpixel((5, 5))[3] < 10 and decoded.getpixel((45, 5))[3] > 245


@pytest.mark.parametrize(("text", "color"), [("#ff8000", (255, 128, 0)), ("00FF00", (0, 255, 0)), ("", None)])
def test_parse_bg_color(text: str, color: tuple[int, int, int] | None) -> None:
    assert parse_bg_color(text) == color


@pytest.mark.parametrize("text", ["red", "#fff", "#gggggg", "#12345678"])
def test_parse_bg_color_rejects_non_hex(text: str) -> None:
    with pytest.raises(InvalidOption):
        parse_bg_color(text)


def test_broken_file_with_known_magic_is_invalid_not_unsupported() -> None:
    with pytest.raises(InvalidImage, match="PNG"):
        decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def _profile(space: str) -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


@pytest.mark.parametrize("upload_format", ["JPEG", "PNG", "WEBP"])
def test_the_uploads_colour_profile_goes_with_the_cut_out(upload_format: str) -> None:
    # an iPhone's photo is in Display P3: without its profile the cut-out's colours would be read as sRGB
    from serve_app import compose

    profile = _profile("sRGB")  # any RGB profile: the test follows the bytes
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format=upload_format, icc_profile=profile)
    decoded = decode_image(buffer.getvalue(), max_pixels=10_000)
    assert decoded.icc_profile == profile
    mask = np.full((40, 60), 255, np.uint8)
    for fmt in ("png", "webp"):
        answer = Image.open(io.BytesIO(render(decode_image(buffer.getvalue(), max_pixels=10_000), mask, fmt)))
        assert answer.info.get("icc_profile") == profile, fmt
    for layout in (compose.Layout(format="jpg"), compose.Layout(format="png", crop=True)):
        rendered = compose.render_cutout(decode_image(buffer.getvalue(), max_pixels=10_000), mask, layout)
        assert Image.open(io.BytesIO(rendered.data)).info.get("icc_profile") == profile, layout.format
    only_mask = render(decode_image(buffer.getvalue(), max_pixels=10_000), mask, "png", only_mask=True)
    assert "icc_profile" not in Image.open(io.BytesIO(only_mask)).info  # grey: an RGB profile would not fit


def test_a_png_with_a_profile_of_megabytes_reads_with_it() -> None:
    # a printer's profile with large lookup tables: Pillow's own limit for a PNG's compressed chunks is 1 MB
    profile = _profile("sRGB") + np.random.default_rng(0).bytes(3 * 1024 * 1024)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(buffer, format="PNG", icc_profile=profile)
    assert decode_image(buffer.getvalue(), max_pixels=10_000).icc_profile == profile


def test_a_profile_that_is_not_rgb_is_not_carried() -> None:
    photo = Image.fromarray(np.zeros((10, 10, 3), np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG", icc_profile=_profile("LAB"))
    assert decode_image(buffer.getvalue(), max_pixels=10_000).icc_profile is None


def test_a_transparent_photo_decodes_in_little_more_memory_than_its_result() -> None:
    # The result holds 7 bytes a pixel (RGB, alpha, RGB over white); whole-image uint16 temporaries took 24.
    height, width = 2400, 3200  # 7.7 MP: the composite runs in stripes of rows
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., 0] = np.arange(width, dtype=np.uint8)  # a pattern that compresses: the test's time is the decode's
    rgba[:, width // 2 :, 3] = 255
    data = encode(Image.fromarray(rgba))
    tracemalloc.start()
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * height * width, peak / (height * width)
    assert (decoded.flattened[:, : width // 2] == 255).all()
    assert (decoded.flattened[:, width // 2 :] == rgba[:, width // 2 :, :3]).all()
