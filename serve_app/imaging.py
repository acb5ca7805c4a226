"""Pure image functions: decode and validate uploads, composite cut-outs, encode results.

No torch and no Ray here: the ingress, the bulk tool and the tests call these directly.
"""

from __future__ import annotations

import io
import re
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pillow_heif
import simplejpeg
from PIL import AvifImagePlugin, Image, ImageOps, PngImagePlugin, UnidentifiedImageError  # noqa: F401 (Avif: below)

from serve_app import png
from serve_app.errors import InvalidImage, InvalidOption, PayloadTooLarge, UnsupportedMediaType
from serve_app.protocol import EncodedJpeg, ReducedImage

OutputFormat = Literal["png", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "webp": "image/webp"}

# HEIC/HEIF through libheif, AVIF through Pillow's own plugin. Both claim the generic "mif1"/"msf1" brands and
# Pillow tries plugins in the order registered: AVIF goes first (its import above registers it), because
# pillow-heif's libheif has no AV1 decoder and would take such an AVIF only to fail on its pixels, while
# Pillow's AVIF plugin passes a HEIC on to the HEIF one.
pillow_heif.register_heif_opener()

# A PNG's ICC profile is a compressed chunk that Pillow refuses to inflate past 1 MB, which fails the whole upload
# ("cannot read the image header"), where the same profile in a JPEG reads. Profiles run to a few MB (a printer's
# lookup tables); the limit stays, at 16 MiB, a JPEG's largest (255 APP2 segments).
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 16 * 1024 * 1024)

# Formats sniffed by Pillow from the bytes themselves; the client's Content-Type is never trusted.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF"})
_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{6})$")
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the numpy view that shows the pixels upright (the same as ImageOps.exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
# ISO BMFF files (HEIF, AVIF) start with a box size, b"ftyp" and the major brand.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
_FTYP_BRANDS = dict.fromkeys(_HEIF_BRANDS, "HEIF") | {b"avif": "AVIF", b"avis": "AVIF"}


def sniff_format(data: bytes) -> str | None:
    """The image format the magic bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12])
    return next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)


@dataclass(frozen=True)
class DecodedImage:
    """An upload as the model sees it (RGB) plus the transparency it came with, if any."""

    # (height, width, 3) uint8 RGB, EXIF orientation applied: the colours the cut-out keeps. JPEGs decode to
    # (height, width, 4) RGBX instead, a spare fourth channel that the cut-out's alpha is written into: adding a
    # channel to a 6 MP RGB array afterwards is a strided 24 MB copy (~60% of the PNG encode's time, py-spy).
    pixels: np.ndarray
    alpha: np.ndarray | None  # (height, width) uint8, or None when fully opaque
    flattened: np.ndarray | None = None  # rgb over white where alpha < 255; None when the same as rgb
    # A JPEG that libjpeg-turbo read to the end of its scan without a warning. Only such a file's decode by the
    # model replica (nvJPEG) stands for these pixels: nvJPEG reports no error for a scan cut short and leaves the
    # rows it did not reach as its output memory held them, possibly another photo's.
    clean_jpeg_scan: bool = False
    # The upload's RGB colour profile (ICC), carried into the cut-out: its colours are in that space (an iPhone's
    # Display P3, a camera's Adobe RGB), and a file without the profile would be read as sRGB. None: sRGB as is.
    icc_profile: bytes | None = None

    @property
    def rgb(self) -> np.ndarray:
        """(height, width, 3) RGB (a view of `pixels`)."""
        return self.pixels[..., :3]

    @property
    def model_input(self) -> np.ndarray:
        """What the model sees, RGB or RGBX: colours hidden under transparency are arbitrary, so it sees white
        there. The model core reads the first three channels."""
        return self.pixels if self.flattened is None else self.flattened

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's convention."""
        return self.pixels.shape[1], self.pixels.shape[0]


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode bytes into RGB, checking format and size before the full decode.

    Raises InvalidImage (422), UnsupportedMediaType (415) or PayloadTooLarge (413).
    """
    if not data:
        raise InvalidImage("the request body is empty; send the image bytes")
    with warnings.catch_warnings():
        # Our own pixel limit applies below; Pillow's bomb warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            claimed = sniff_format(data)
            if claimed:
                raise InvalidImage(f"the data starts like a {claimed} file but is not a valid one") from None
            raise UnsupportedMediaType(
                "the body is not an image in a supported format "
                f"({', '.join(sorted(ALLOWED_FORMATS - {'MPO'}))})"
            ) from None
        except Image.DecompressionBombError as error:
            raise PayloadTooLarge(f"image too large: {error}") from None
        except Exception as error:  # Pillow raises many types for broken headers
            raise InvalidImage(f"cannot read the image header: {error}") from None
        if image.format not in ALLOWED_FORMATS:
            raise UnsupportedMediaType(f"image format {image.format} is not supported")
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage(f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
            )
        profile = rgb_profile(image.info.get("icc_profile"))
        try:
            if image.format == "JPEG" and image.mode in ("RGB", "L"):
                rgbx = _decode_jpeg(data)
                if rgbx is not None:
                    return DecodedImage(_upright(rgbx, _orientation(image)), None, clean_jpeg_scan=True,
                                        icc_profile=profile)
            image.seek(0)  # animated GIF/WebP/APNG: the first frame
            image.load()
            _apply_orientation(image)
            return replace(_to_rgb(image), icc_profile=profile)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as error:
            raise InvalidImage(f"the image data is corrupt or truncated: {error}") from None
        except RuntimeError as error:  # libheif lacks the codec inside, say AV1 in a file branded HEIC
            raise UnsupportedMediaType(f"cannot decode the pixels of this {image.format} file: {error}") from None


def rgb_profile(profile: object) -> bytes | None:
    """An ICC profile the cut-out can carry: one for RGB data (a grey or CMYK upload's would not describe the RGB
    pixels it becomes), else None."""
    if isinstance(profile, bytes) and len(profile) >= 128 and profile[16:20] == b"RGB ":
        return profile
    return None


def _jpeg_header(data: bytes, max_pixels: int) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) as stored, of a colour or grey JPEG within `max_pixels`; else None.

    Header only (Pillow reads no pixel data here). Everything else, and any JPEG that turns out broken, takes
    decode_image's path, which also gives the error the client sees.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Exception:  # not an image, or a broken header: decode_image reports it
            return None
        width, height = image.size
        if image.format != "JPEG" or image.mode not in ("RGB", "L") or not 0 < width * height <= max_pixels:
            return None
        return width, height, _orientation(image)


def reduced_jpeg(data: bytes, *, min_size: tuple[int, int], max_pixels: int) -> ReducedImage | None:
    """The model's copy of a colour or grey JPEG at least twice `min_size` ((width, height), upright) in both
    directions, or None (anything else, or a JPEG libjpeg warns about: decode_image decides those)."""
    header = _jpeg_header(data, max_pixels)
    if header is None:
        return None
    width, height, orientation = header
    turned = orientation in _TRANSPOSING  # the stored image is turned: its width becomes the upright height
    upright = (height, width) if turned else (width, height)
    if not large_enough_to_reduce(upright, min_size):
        return None
    min_width, min_height = min_size[::-1] if turned else min_size  # as stored
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_width, min_height=min_height)
    except ValueError:
        return None
    return ReducedImage(_upright(pixels, orientation), (upright[1], upright[0]))


def large_enough_to_reduce(size: tuple[int, int], min_size: tuple[int, int]) -> bool:
    """Whether an image of upright `size` ((width, height)) is at least twice `min_size` in both directions: its
    model copy can be a reduced decode (reduced_jpeg), or the model replica's decode (device_jpeg_decode)."""
    return size[0] >= 2 * min_size[0] and size[1] >= 2 * min_size[1]


def device_decodable_jpeg(data: bytes, *, max_pixels: int) -> EncodedJpeg | None:
    """The upload as an EncodedJpeg, for the model replica to decode on its device, if it is a YCbCr JPEG with
    chroma at full, half or quarter resolution (4:4:4, 4:2:2, 4:2:0: what cameras and encoders write) or a grey
    one, within `max_pixels`; else None (anything else, or a broken header: _jpeg_header). The device's pixels can
    be the answer's (device_png_min_pixels), so the rarer layouts, whose decode the device tests do not cover
    (colour stored as RGB, 4:4:0 from a lossless turn of a 4:2:2 photo, 4:1:1), are decoded here.

    Only the header is read: a file broken further on fails the ingress's own decode beside the model call, which
    answers the client, and the replica's, which the ingress then no longer waits for.
    """
    header = _jpeg_header(data, max_pixels)
    if header is None:
        return None
    try:
        layout = simplejpeg.decode_jpeg_header(data)[2:]
    except ValueError:  # libjpeg-turbo reads the header otherwise than Pillow: its own decode decides
        return None
    if layout not in _DEVICE_JPEG_LAYOUTS:
        return None
    width, height, orientation = header
    upright = (height, width) if orientation not in _TRANSPOSING else (width, height)
    return EncodedJpeg(data, orientation, upright)


@dataclass(frozen=True)
class JpegScan:
    """What the answer needs of a JPEG whose cut-out's PNG the model replica wrote from its own decode."""

    clean: bool  # libjpeg-turbo reads its scan to the end without a warning (DecodedImage.clean_jpeg_scan)
    icc_profile: bytes | None  # as DecodedImage.icc_profile


def scan_jpeg(data: bytes) -> JpegScan:
    """Whether libjpeg-turbo reads the JPEG's scan as decode_image's full decode would, without a warning (only
    then does the model replica's decode of it stand for the photo), at about half that decode's cost: the decode
    here is to grey at 1/8 scale, for which libjpeg still reads every component's every coefficient, where its
    warnings come from, but transforms only the luma's DC ones. Plus the upload's colour profile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            profile = rgb_profile(Image.open(io.BytesIO(data)).info.get("icc_profile"))
        except Exception:  # not a JPEG Pillow reads: decode_image reports it
            return JpegScan(False, None)
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=1, min_height=1)
    except ValueError:
        return JpegScan(False, profile)
    return JpegScan(True, profile)


_DEVICE_JPEG_LAYOUTS = frozenset({("YCbCr", "444"), ("YCbCr", "422"), ("YCbCr", "420"), ("Gray", "Gray")})
_TRANSPOSING = frozenset({5, 6, 7, 8})  # orientations that swap width and height


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """(H, W, 4) RGBX from libjpeg-turbo straight into a numpy array, with the GIL released; None if it warns.

    The same library and settings (accurate DCT, smooth upsampling) as Pillow's decoder, so the same pixels, in
    less time: Pillow's route adds a full copy on the way to numpy.
    CMYK and other rare JPEGs take Pillow's route, and so do damaged ones: libjpeg's warnings (stray bytes
    before a marker, common from some cameras and editors) are errors here, and Pillow decides as it always did.
    """
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGBX")
    except ValueError:
        return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the image's header gives it, before any EXIF turn; None when the header does not read
    (decode_image then says why)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data)).size
        except Exception:  # Pillow raises many types for broken or unknown headers
            return None


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); a corrupt EXIF block costs the rotation, not the whole image."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # Pillow raises several types for malformed EXIF
        return 1


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    turn = _UPRIGHT.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def _apply_orientation(image: Image.Image) -> None:
    """Rotate in place as the EXIF orientation says (in place: a copy of a 6 MP image costs ~10 ms)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # Pillow raises several types for malformed EXIF
        pass


def _to_rgb(image: Image.Image) -> DecodedImage:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        rgb = np.repeat(_high_depth_to_uint8(image)[..., None], 3, axis=2)
        key = image.info.get("transparency")  # a 16-bit grey PNG's tRNS: the grey value that is transparent
        if not isinstance(key, int) or isinstance(key, bool):
            return DecodedImage(rgb, None)
        alpha = np.where(np.asarray(image) == key, np.uint8(0), np.uint8(255))
        if alpha.min() == 255:
            return DecodedImage(rgb, None)
        return DecodedImage(rgb, alpha, _composite_on_color(rgb, alpha, (255, 255, 255)))
    if image.mode in ("P", "L", "1", "RGB") and "transparency" in image.info:  # a palette's or a PNG's tRNS colour
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"))
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        del rgba  # copied out: its memory goes before the composite's
        if alpha.min() == 255:
            return DecodedImage(rgb, None)
        return DecodedImage(rgb, alpha, _composite_on_color(rgb, alpha, (255, 255, 255)))
    converted = image if image.mode == "RGB" else image.convert("RGB")  # convert() to the same mode would copy
    return DecodedImage(np.ascontiguousarray(np.asarray(converted)), None)


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """16-bit and float grey to 8 bits by scaling, where Pillow's convert() would clip at 255."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        # round(v / 257) in integers (v / 257 is never halfway): a float64 copy of a 50 MP image would be 400 MB.
        wide = values.astype(np.uint32)
        wide *= 2
        wide += 257
        wide //= 514
        return wide.astype(np.uint8)
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    values -= low
    values *= 255.0 / (high - low)
    return np.clip(np.rint(values, out=values), 0, 255).astype(np.uint8)


def parse_bg_color(value: str | None) -> tuple[int, int, int] | None:
    if value is None or value == "":
        return None
    match = _HEX_COLOR.match(value.strip())
    if not match:
        raise InvalidOption(f"bg_color must be a colour like #rrggbb, got {value!r}")
    hex_digits = match.group(1)
    return tuple(int(hex_digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


# uint16 temporaries of one stripe of rows: over a whole 50 MP image they would take more than a gigabyte.
_COMPOSITE_STRIPE_BYTES = 1 << 22


def _composite_on_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    height, width = alpha.shape
    out = np.empty((height, width, 3), np.uint8)
    background = np.asarray(color, dtype=np.uint16)
    rows = max(1, _COMPOSITE_STRIPE_BYTES // (width * 3 * 2))
    for top in range(0, height, rows):
        weight = alpha[top : top + rows].astype(np.uint16)[..., None]
        blend = rgb[top : top + rows].astype(np.uint16) * weight
        blend += background * (255 - weight)
        blend += 128
        # round(v / 255) for v <= 255 * 255 as (v + 128 + ((v + 128) >> 8)) >> 8, within uint16: numpy's integer
        # division by 255 took most of the blend's time.
        blend += blend >> 8
        out[top : top + rows] = blend >> 8
    return out


def compose_result(
    image: DecodedImage, mask: np.ndarray, *, only_mask: bool = False, bg_color: tuple[int, int, int] | None = None,
    reuse_pixels: bool = False,
) -> np.ndarray:
    """The pixels to return: the mask alone, a cut-out over a solid colour, or an RGBA cut-out.

    With `reuse_pixels` an RGBX image's spare channel receives the alpha and its array is returned (no copy):
    for callers done with the image, whose colours stay as they were.
    """
    alpha = cutout_alpha(image, mask)
    if only_mask:
        return alpha
    if bg_color is not None:
        return _composite_on_color(image.rgb, alpha, bg_color)
    return rgba_pixels(image, alpha, reuse_pixels=reuse_pixels)


def rgba_pixels(image: DecodedImage, alpha: np.ndarray, *, reuse_pixels: bool = False) -> np.ndarray:
    """The image's colours with `alpha` ((H, W) uint8) as (H, W, 4) RGBA. With `reuse_pixels` an RGBX image's
    spare channel receives the alpha and its array is returned (no copy): for callers done with the image, whose
    colours stay as they were."""
    if image.pixels.shape[2] == 4:
        rgba = image.pixels if reuse_pixels and image.pixels.flags.writeable else image.pixels.copy()
        rgba[..., 3] = alpha
        return rgba
    return with_alpha(image.pixels, alpha)


def with_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB and (H, W) alpha, uint8, as a new read-only (H, W, 4) RGBA array. Pillow interleaves the
    channels in a third of the time np.dstack takes (a strided copy a byte at a time: 14 against 47 ms for 6 MP
    on one core of the development machine)."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    image.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    return np.asarray(image)


def cutout_alpha(image: DecodedImage, mask: np.ndarray) -> np.ndarray:
    """The cut-out's alpha: the mask, times the upload's own transparency where it had some."""
    if mask.shape != image.pixels.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.pixels.shape[:2]}")
    return mask if image.alpha is None else ((mask.astype(np.uint16) * image.alpha + 127) // 255).astype(np.uint8)


# libwebp's effort (0-6; Pillow's default 4). On 1.4-4.2 MP cut-outs at quality 90, 2 took 0.57-0.61x the time
# of 4 for 3-10% more bytes (2672x1564: 274 against 471 ms, 135 against 123 KB; one CPU core).
WEBP_METHOD = 2


# The longest side each lossy format holds (libwebp's limit, libjpeg's); PNG has none that an upload reaches.
MAX_SIDES = {"webp": 16383, "jpg": 65500}


def check_fits_format(pixels: np.ndarray | Image.Image, fmt: str) -> None:
    """InvalidOption (422) if `fmt` cannot hold an image of `pixels`' size: a clear refusal, not the encoder's
    error."""
    limit = MAX_SIDES.get(fmt)
    width, height = pixels.size if isinstance(pixels, Image.Image) else (pixels.shape[1], pixels.shape[0])
    if limit is not None and max(width, height) > limit:
        raise InvalidOption(f"a {fmt} image is at most {limit} pixels a side, and this answer is {width}x{height}; "
                            "ask for png, or for a smaller size")


def encode_image(pixels: np.ndarray, fmt: OutputFormat, *, webp_quality: int = 90,
                 png_pool: Executor | None = None, png_threads: int = 1, icc_profile: bytes | None = None) -> bytes:
    """Encode (H, W), (H, W, 3) or (H, W, 4) uint8 pixels; a PNG's row stripes run on `png_pool` when given
    (`png_threads`: its thread count, which the stripes are sized to). `icc_profile`: the colours' RGB profile,
    carried along (not with grey pixels, which it does not describe).

    Fully transparent pixels lose their colour: (0, 0, 0, 0) in a PNG, whatever libwebp makes of them in a WebP
    (Pillow's default `exact=False`). Nobody sees them, and the files are smaller and faster to make."""
    profile = icc_profile if pixels.ndim == 3 else None
    if fmt == "png":
        return png.encode_png(pixels, png_pool, clear_transparent=pixels.ndim == 3 and pixels.shape[2] == 4,
                              threads=png_threads, icc_profile=profile)
    if fmt == "webp":
        check_fits_format(pixels, fmt)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="WEBP", quality=webp_quality, method=WEBP_METHOD,
                                     **({"icc_profile": profile} if profile else {}))
        return buffer.getvalue()
    raise InvalidOption(f"format must be one of {sorted(MEDIA_TYPES)}, got {fmt!r}")


def render(image: DecodedImage, mask: np.ndarray, fmt: OutputFormat, *, only_mask: bool = False,
           bg_color: tuple[int, int, int] | None = None, webp_quality: int = 90,
           png_pool: Executor | None = None, png_threads: int = 1) -> bytes:
    """Compose and encode in one call: the CPU work that follows the model for each image (the last use of
    `image`: its spare channel, if any, may take the alpha). A cut-out's fully transparent pixels are encoded
    without their colour (see encode_image)."""
    if fmt == "png" and not only_mask and bg_color is None and image.pixels.shape[2] == 4:
        # RGBX (a JPEG): the PNG stripes write the alpha on png_pool's threads as they filter their rows, where
        # compose_result would write it first in one pass on this thread (~3 ms for 4 MP)
        return png.encode_png(image.pixels, png_pool, alpha=cutout_alpha(image, mask), clear_transparent=True,
                              threads=png_threads, icc_profile=image.icc_profile)
    pixels = compose_result(image, mask, only_mask=only_mask, bg_color=bg_color, reuse_pixels=True)
    return encode_image(pixels, fmt, webp_quality=webp_quality, png_pool=png_pool, png_threads=png_threads,
                        icc_profile=image.icc_profile)
