"""rembg's and remove.bg's APIs, and the native API's crop, sizes, JPEG and clean edges, over real HTTP against
`serve run` on the tiny model (served under rembg's name birefnet-general)."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import httpx
import numpy as np
from PIL import Image

from serve_app.timing import parse_server_timing
from tests.images import BOX, SIZE, assert_mask_matches, encode, expected_alpha, red_square

EDGE_MARGIN = 6
# BOX in SIZE as remove.bg's X-Foreground-* headers give it: top, left, width, height.
BOX_TOP, BOX_LEFT, BOX_WIDTH, BOX_HEIGHT = BOX[1], BOX[0], BOX[2] - BOX[0], BOX[3] - BOX[1]


def image_of(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def assert_box_near(headers: httpx.Headers, top: int, left: int, width: int, height: int, slack: int = 4) -> None:
    found = [int(headers[f"x-foreground-{name}"]) for name in ("top", "left", "width", "height")]
    assert all(abs(a - b) <= slack for a, b in zip(found, (top, left, width, height), strict=True)), found


def rembg_post(service: str, body: bytes, data: dict | None = None, query: str = "") -> httpx.Response:
    return httpx.post(f"{service}/api/remove{query}", files={"file": ("input.png", body, "image/png")}, data=data,
                      timeout=60, trust_env=False)


def removebg(service: str, *, files: dict | None = None, data: dict | None = None, json_body: dict | None = None,
             headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{service}/v1.0/removebg", files=files, data=data, json=json_body, headers=headers,
                      timeout=60, trust_env=False)


def assert_removebg_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == code and error["title"], error
    assert all(word in error["detail"] for word in words), error


def assert_rembg_detail(response: httpx.Response, status: int, location: list[str]) -> dict:
    assert response.status_code == status, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == location, problem
    return problem


# --- rembg ------------------------------------------------------------------------------------------

def test_rembg_readme_upload_gives_the_cutout(service: str) -> None:
    """rembg's documented `curl -s -F file=@input.png "http://localhost:7000/api/remove" -o output.png`."""
    response = rembg_post(service, encode(red_square()))
    assert response.headers["content-type"] == "image/png"
    image = image_of(response)
    assert (image.mode, image.size) == ("RGBA", SIZE)
    assert_mask_matches(np.asarray(image)[..., 3], expected_alpha(), EDGE_MARGIN)


def test_rembg_by_url(service: str, image_server: str) -> None:
    """rembg's documented `curl -s "http://localhost:7000/api/remove?url=http://input.png" -o output.png`."""
    response = httpx.get(f"{service}/api/remove", params={"url": f"{image_server}/red.png"}, timeout=60,
                         trust_env=False)
    assert_mask_matches(np.asarray(image_of(response))[..., 3], expected_alpha(), EDGE_MARGIN)


def test_rembg_model_names(service: str) -> None:
    assert rembg_post(service, encode(red_square()), {"model": "birefnet-general"}).status_code == 200
    problem = assert_rembg_detail(rembg_post(service, encode(red_square()), {"model": "u2net"}), 422,
                                  ["body", "model"])
    assert "birefnet-general" in problem["msg"]  # says what is served
    problem = assert_rembg_detail(httpx.get(f"{service}/api/remove", params={"url": "http://x", "model": "nope"},
                                            timeout=60, trust_env=False), 422, ["query", "model"])
    assert problem["type"] == "string_pattern_mismatch"


def test_rembg_only_mask_background_colour_and_post_processing(service: str) -> None:
    mask = image_of(rembg_post(service, encode(red_square()), {"om": "true"}))
    assert (mask.mode, mask.size) == ("L", SIZE)
    assert_mask_matches(np.asarray(mask), expected_alpha(), EDGE_MARGIN)
    coloured = np.asarray(image_of(rembg_post(service, encode(red_square()), query="?bgc=0,0,255,255")))
    assert coloured.shape == (SIZE[1], SIZE[0], 4) and coloured[..., 3].min() == 255
    assert np.abs(coloured[5, 300].astype(int) - (0, 0, 255, 255)).max() <= 15  # background now blue, opaque
    smoothed = np.asarray(image_of(rembg_post(service, encode(red_square()), {"om": "true", "ppm": "true"})))
    assert set(np.unique(smoothed)) <= {0, 255}


def test_rembg_alpha_matting_answers_a_cutout(service: str) -> None:
    response = rembg_post(service, encode(red_square()), {"a": "true", "af": "200", "ab": "20", "ae": "3"})
    assert_mask_matches(np.asarray(image_of(response))[..., 3], expected_alpha(), EDGE_MARGIN)


def test_rembg_errors_keep_fastapis_shape(service: str) -> None:
    problem = assert_rembg_detail(rembg_post(service, encode(red_square()), {"af": "300"}), 422, ["body", "af"])
    assert problem["type"] == "less_than_equal"
    assert_rembg_detail(httpx.get(f"{service}/api/remove", params={"url": "http://x", "a": "maybe"}, timeout=60,
                                  trust_env=False), 422, ["query", "a"])
    assert_rembg_detail(rembg_post(service, encode(red_square()), query="?bgc=1,2"), 422, ["query", "bgc"])
    assert_rembg_detail(rembg_post(service, encode(red_square()), query='?extras={"sam_prompt":[]}'), 422,
                        ["query", "extras"])
    no_file = httpx.post(f"{service}/api/remove", data={"model": "birefnet-general"}, timeout=60, trust_env=False)
    assert no_file.status_code == 422 and no_file.json()["detail"][0]["loc"] == ["body", "file"]
    broken = rembg_post(service, b"\x89PNG\r\n\x1a\nbroken")
    assert broken.status_code == 422 and isinstance(broken.json()["detail"], str)


# --- remove.bg --------------------------------------------------------------------------------------

def test_removebg_documented_upload_example(service: str) -> None:
    """remove.bg's documented Python example: image_file and size=auto as multipart, the key in X-Api-Key."""
    response = removebg(service, files={"image_file": ("file.jpg", encode(red_square(), "JPEG", quality=95))},
                        data={"size": "auto"}, headers={"X-Api-Key": "INSERT_YOUR_API_KEY_HERE"})
    image = image_of(response)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", SIZE)
    assert (response.headers["x-width"], response.headers["x-height"]) == (str(SIZE[0]), str(SIZE[1]))
    assert_box_near(response.headers, BOX_TOP, BOX_LEFT, BOX_WIDTH, BOX_HEIGHT)


def test_removebg_by_url_and_the_preview_size(service: str, image_server: str) -> None:
    big = red_square((1000, 800), (100, 200, 500, 600))
    response = removebg(service, files={"image_file": ("big.png", encode(big))})  # size defaults to preview
    width, height = image_of(response).size
    assert width * height <= 250_000 and abs(width / height - 1.25) < 0.01
    by_url = removebg(service, data={"image_url": f"{image_server}/red.png", "size": "full"})
    assert image_of(by_url).size == SIZE


def test_removebg_base64_json_answer(service: str) -> None:
    payload = {"image_file_b64": base64.b64encode(encode(red_square())).decode(), "size": "full"}
    response = removebg(service, json_body=payload, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    image = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert image.size == SIZE
    found = [data[f"foreground_{name}"] for name in ("top", "left", "width", "height")]
    assert all(abs(a - b) <= 4 for a, b in zip(found, (BOX_TOP, BOX_LEFT, BOX_WIDTH, BOX_HEIGHT), strict=True))


def test_removebg_formats(service: str) -> None:
    upload = {"image_file": ("in.png", encode(red_square()))}
    jpeg = image_of(removebg(service, files=upload, data={"size": "full", "format": "jpg"}))
    assert jpeg.format == "JPEG" and np.asarray(jpeg)[5, 300].min() > 240  # flattened onto white
    webp = image_of(removebg(service, files=upload, data={"format": "webp"}))
    assert webp.format == "WEBP"
    auto = removebg(service, files=upload, data={"format": "auto", "bg_color": "00ff00"})
    assert auto.headers["content-type"] == "image/jpeg"  # no transparency left: JPEG
    packed = removebg(service, files=upload, data={"format": "zip", "size": "full"})
    assert packed.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(packed.content)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        alpha = Image.open(io.BytesIO(archive.read("alpha.png")))
        colour = Image.open(io.BytesIO(archive.read("color.jpg")))
    assert (alpha.mode, alpha.size, colour.format, colour.size) == ("L", SIZE, "JPEG", SIZE)
    assert_mask_matches(np.asarray(alpha), expected_alpha(), EDGE_MARGIN)
    mask = image_of(removebg(service, files=upload, data={"channels": "alpha", "size": "full"}))
    assert mask.mode == "L"


def test_removebg_crop_scale_position_roi_and_backgrounds(service: str) -> None:
    upload = {"image_file": ("in.png", encode(red_square()))}
    cropped = removebg(service, files=upload, data={"crop": "true", "crop_margin": "10px", "size": "full"})
    width, height = image_of(cropped).size
    assert abs(width - (BOX_WIDTH + 20)) <= 4 and abs(height - (BOX_HEIGHT + 20)) <= 4
    centred = removebg(service, files=upload, data={"scale": "50%", "position": "center", "size": "full"})
    top, left = int(centred.headers["x-foreground-top"]), int(centred.headers["x-foreground-left"])
    fg_width, fg_height = int(centred.headers["x-foreground-width"]), int(centred.headers["x-foreground-height"])
    assert abs(max(fg_width, fg_height) - SIZE[0] // 2) <= 6
    assert abs(left + fg_width / 2 - SIZE[0] / 2) <= 4 and abs(top + fg_height / 2 - SIZE[1] / 2) <= 4
    outside = removebg(service, files=upload, data={"roi": "200px 0px 320px 200px", "size": "full"})
    assert np.asarray(image_of(outside))[..., 3].max() < 13 and "x-foreground-top" not in outside.headers
    backdrop = Image.new("RGB", (50, 40), (10, 200, 30))
    on_picture = removebg(service, files={**upload, "bg_image_file": ("bg.png", encode(backdrop))},
                          data={"size": "full", "format": "png"})
    pixels = np.asarray(image_of(on_picture))
    assert pixels.shape[2] == 3 and np.abs(pixels[5, 300].astype(int) - (10, 200, 30)).max() <= 15
    # A background's transparent part shows white, not the colours stored under its alpha.
    hidden = np.zeros((40, 50, 4), np.uint8)
    hidden[..., 0] = 255  # red everywhere, transparent on the left half
    hidden[:, 25:, 3] = 255
    half = removebg(service, files={**upload, "bg_image_file": ("bg.png", encode(Image.fromarray(hidden)))},
                    data={"size": "full", "format": "png"})
    pixels = np.asarray(image_of(half)).astype(int)
    assert (pixels[5, 5] >= 240).all() and np.abs(pixels[5, 315] - (255, 0, 0)).max() <= 15
    broken = removebg(service, files={**upload, "bg_image_file": ("bg.png", b"\x89PNG\r\n\x1a\nbroken")})
    assert_removebg_error(broken, 400, "invalid_image", "background")


def test_removebg_errors(service: str) -> None:
    assert_removebg_error(removebg(service, data={"size": "full"}), 400, "missing_source")
    upload = {"image_file": ("in.png", encode(red_square()))}
    assert_removebg_error(removebg(service, files=upload, data={"image_url": "http://127.0.0.1/x.png"}), 400,
                          "invalid_parameters", "exactly one")
    assert_removebg_error(removebg(service, files=upload, data={"shadow_type": "drop"}), 400,
                          "invalid_parameters", "shadow_type")
    assert_removebg_error(removebg(service, files=upload, data={"frobnicate": "1"}), 400, "invalid_parameters",
                          "frobnicate")
    assert_removebg_error(removebg(service, files=upload, data={"bg_color": "not-a-colour"}), 400,
                          "invalid_parameters", "bg_color")
    assert_removebg_error(removebg(service, files={"image_file": ("x.png", b"\x89PNG\r\n\x1a\nbroken")}), 400,
                          "invalid_image")
    width, height = SIZE
    assert_removebg_error(removebg(service, files=upload, data={"roi": f"0 0 {width + 1}px 50%"}), 400,
                          "invalid_option", f"roi must lie within the {width}x{height} image")
    nested = httpx.post(f"{service}/v1.0/removebg", content=b"[" * 50_000, timeout=60, trust_env=False,
                        headers={"Content-Type": "application/json"})  # deeper than Python's JSON parser goes
    assert_removebg_error(nested, 400, "invalid_parameters", "JSON")
    # a base64 photo over 1 MiB in a form field (Starlette's default cap on a part) is taken, as in JSON
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    large = base64.b64encode(encode(Image.fromarray(noise))).decode()
    assert len(large) > 1 << 20
    assert removebg(service, data={"image_file_b64": large}).status_code == 200
    refused = removebg(service, data={"image_url": "http://10.0.0.1/x.png"})  # refused by the address check
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "url_refused"


# --- the native API's layout options ----------------------------------------------------------------

def native(service: str, query: str, body: bytes | None = None) -> httpx.Response:
    return httpx.post(f"{service}/v1/remove-background{query}", content=body or encode(red_square()),
                      headers={"Content-Type": "image/png"}, timeout=60, trust_env=False)


def test_native_geometry_headers_crop_and_sizes(service: str) -> None:
    plain = native(service, "")
    assert (plain.headers["x-width"], plain.headers["x-height"]) == (str(SIZE[0]), str(SIZE[1]))
    assert_box_near(plain.headers, BOX_TOP, BOX_LEFT, BOX_WIDTH, BOX_HEIGHT)
    cropped = image_of(native(service, "?crop=true&crop_margin=5%25"))
    margin = round(0.05 * max(BOX_WIDTH, BOX_HEIGHT))
    assert abs(cropped.size[0] - (BOX_WIDTH + 2 * margin)) <= 4
    assert max(image_of(native(service, "?max_size=100")).size) == 100
    big = encode(red_square((1000, 800), (100, 200, 500, 600)))
    width, height = image_of(native(service, "?size=preview", big)).size
    assert width * height <= 250_000
    # An upload whose left part is transparent already: the box is of what the cut-out shows, on either path.
    faded = np.asarray(red_square().convert("RGBA")).copy()
    faded[:, : BOX_LEFT + BOX_WIDTH // 2, 3] = 0
    for query in ("", "?max_size=320"):  # the plain cut-out, and the composing path at the same size
        answer = native(service, query, encode(Image.fromarray(faded)))
        assert_box_near(answer.headers, BOX_TOP, BOX_LEFT + BOX_WIDTH // 2, BOX_WIDTH // 2, BOX_HEIGHT)


def test_native_jpeg_and_clean_edges(service: str) -> None:
    jpeg = native(service, "?format=jpg&bg_color=%23000000")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert np.asarray(image_of(jpeg))[5, 300].max() < 16  # flattened onto black
    refined = native(service, "?refine=true")
    assert "model_refine" in refined.headers["server-timing"]
    assert_mask_matches(np.asarray(image_of(refined))[..., 3], expected_alpha(), EDGE_MARGIN)
    invalid = native(service, "?size=huge")
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "invalid_option"


def test_openapi_documents_the_compatible_routes(service: str) -> None:
    schema = httpx.get(f"{service}/openapi.json", timeout=60, trust_env=False).json()
    rembg_get = {p["name"] for p in schema["paths"]["/api/remove"]["get"]["parameters"]}
    assert {"url", "model", "a", "af", "ab", "ae", "om", "ppm", "bgc", "extras"} <= rembg_get
    form = schema["paths"]["/api/remove"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "model", "a", "af", "ab", "ae", "om", "ppm"} <= set(form["properties"])
    removebg_body = schema["paths"]["/v1.0/removebg"]["post"]["requestBody"]["content"]
    assert {"image_file", "size", "format", "crop_margin", "bg_image_url"} <= set(
        removebg_body["multipart/form-data"]["schema"]["properties"])
    native_params = {p["name"] for p in schema["paths"]["/v1/remove-background"]["post"]["parameters"]}
    assert {"format", "crop", "crop_margin", "size", "max_size", "refine"} <= native_params
    json.dumps(schema)  # serialisable as served


def test_a_large_jpeg_is_decoded_beside_the_model_call_and_its_mask_is_full_size(service: str) -> None:
    """Twice the model's input (256) and more: the model gets a reduced copy, or the file itself on an idle
    service (tests/integration/test_device_jpeg_decode.py), while the ingress decodes the whole photo beside the
    model call; the cut-out is the whole photo's, its mask where the object is."""
    size, box = (1280, 800), (160, 120, 560, 440)
    response = native(service, "", encode(red_square(size, box), "JPEG", quality=95))
    timing = parse_server_timing(response.headers["server-timing"])
    assert "decode_beside_model" in timing or "model_cpu_decode" in timing, timing
    image = image_of(response)
    assert image.size == size
    assert_mask_matches(np.asarray(image)[..., 3], expected_alpha(size, box), EDGE_MARGIN * 4)
