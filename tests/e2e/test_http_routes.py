"""Every route over real HTTP against `serve run` on the tiny model."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_app.timing import parse_server_timing
from tests.images import BOX, SIZE, assert_mask_matches, encode, expected_alpha, red_square

ROUTE = "/v1/remove-background"
EDGE_MARGIN = 6


def post(service: str, body: bytes, content_type: str = "image/png", query: str = "") -> httpx.Response:
    return httpx.post(f"{service}{ROUTE}{query}", content=body, headers={"Content-Type": content_type},
                      timeout=60, trust_env=False)


def get(address: str, **params: str) -> httpx.Response:
    return httpx.get(address, params=params, timeout=60, trust_env=False)


def open_image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def assert_rgba_cutout(response: httpx.Response, size: tuple[int, int] = SIZE,
                       box: tuple[int, int, int, int] = BOX) -> None:
    assert response.headers["content-type"] == "image/png"
    image = open_image(response)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", size)
    assert_mask_matches(np.asarray(image)[..., 3], expected_alpha(size, box), EDGE_MARGIN)


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error


def test_red_square_as_raw_body(service: str) -> None:
    assert_rgba_cutout(post(service, encode(red_square())))


def test_server_timing_splits_the_model_call_and_the_encode(service: str) -> None:
    response = post(service, encode(red_square()))
    assert_rgba_cutout(response)
    stages = parse_server_timing(response.headers["server-timing"])
    assert {"read", "decode", "model", "model_queue", "model_batch", "model_transport", "encode"} <= stages.keys()
    # Ray's share of the call and the replica's queue and device pass are parts of the model stage (0.1 ms:
    # the header's rounding).
    assert stages["model_transport"] > 0 and stages["model_batch"] > 0, stages
    assert stages["model_transport"] + stages["model_queue"] + stages["model_batch"] <= stages["model"] + 0.3, stages
    # One node here: the trips there and back, timed by the shared clock, add up to the transport (clock reads
    # taken a few microseconds apart, and the rounding).
    assert stages["model_to_replica"] > 0 and stages["model_from_replica"] > 0, stages
    assert abs(stages["model_to_replica"] + stages["model_from_replica"] - stages["model_transport"]) <= 0.5, stages
    # The encoder's own time on its codec thread is a part of the encode stage.
    assert 0 <= stages["encode_on_thread"] <= stages["encode"], stages


def test_red_square_as_multipart_file(service: str) -> None:
    response = httpx.post(f"{service}{ROUTE}", files={"file": ("red.jpg", encode(red_square(), "JPEG", quality=95),
                                                               "image/jpeg")}, timeout=60, trust_env=False)
    assert_rgba_cutout(response)
    # options sent as form fields would be ignored: a cut-out where the client asked for the mask
    refused = httpx.post(f"{service}{ROUTE}", data={"only_mask": "true"}, timeout=60, trust_env=False,
                         files={"file": ("red.jpg", encode(red_square(), "JPEG"), "image/jpeg")})
    assert_json_error(refused, 422, "invalid_option")
    assert "only_mask" in refused.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_modes(service: str, mode: str) -> None:
    # A darker object keeps grey versions of it far from white.
    assert_rgba_cutout(post(service, encode(red_square(color=(120, 10, 10)).convert(mode))))


def test_cmyk_jpeg(service: str) -> None:
    assert_rgba_cutout(post(service, encode(red_square().convert("CMYK"), "JPEG", quality=95), "image/jpeg"))


def test_16_bit_png(service: str) -> None:
    grey = np.full((SIZE[1], SIZE[0]), 65535, dtype=np.uint16)
    left, top, right, bottom = BOX
    grey[top:bottom, left:right] = 8000
    assert_rgba_cutout(post(service, encode(Image.fromarray(grey))))


@pytest.mark.parametrize(("size", "box"), [((97, 301), (10, 200, 60, 280)), ((1200, 900), (700, 100, 1100, 500))])
def test_other_sizes_keep_width_and_height(service: str, size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    response = post(service, encode(red_square(size, box), "JPEG", quality=95), "image/jpeg")
    margin = int(np.ceil(3 * max(size) / 256)) + 2  # the tiny config's 256x256 input, resized back
    image = open_image(response)
    assert image.size == size
    assert_mask_matches(np.asarray(image)[..., 3], expected_alpha(size, box), margin)


def test_exif_rotated_jpeg_is_cut_out_as_displayed(service: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    response = post(service, encode(red_square(), "JPEG", quality=95, exif=exif.tobytes()), "image/jpeg")
    left, top, right, bottom = BOX
    width, height = SIZE
    rotated_box = (height - bottom, left, height - top, right)  # where the object appears after rotation
    assert_rgba_cutout(response, size=(height, width), box=rotated_box)


def test_only_mask_returns_grey_png(service: str) -> None:
    image = open_image(post(service, encode(red_square()), query="?only_mask=true"))
    assert (image.format, image.mode, image.size) == ("PNG", "L", SIZE)
    assert_mask_matches(np.asarray(image), expected_alpha(), EDGE_MARGIN)


def test_bg_color_composites_onto_the_colour(service: str) -> None:
    image = open_image(post(service, encode(red_square()), query="?bg_color=%2300ff00"))
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert tuple(pixels[5, 300]) == (0, 255, 0) or np.abs(pixels[5, 300].astype(int) - (0, 255, 0)).max() <= 3
    assert pixels[70, 90, 0] > 200 and pixels[70, 90, 1] < 40


def test_webp_output(service: str) -> None:
    response = post(service, encode(red_square()), query="?format=webp")
    assert response.headers["content-type"] == "image/webp"
    image = open_image(response)
    assert (image.format, image.mode, image.size) == ("WEBP", "RGBA", SIZE)


def test_url_fetch(service: str, image_server: str) -> None:
    assert_rgba_cutout(get(f"{service}{ROUTE}", url=f"{image_server}/red.jpg"))


def test_url_fetch_follows_a_redirect(service: str, image_server: str) -> None:
    assert_rgba_cutout(get(f"{service}{ROUTE}", url=f"{image_server}/redirect/red.png"))


def test_batch_of_urls_streams_one_line_per_item(service: str, image_server: str) -> None:
    urls = [f"{image_server}/red.png" if i % 2 else f"{image_server}/red.jpg" for i in range(18)]
    urls[4:4] = [f"{image_server}/missing.png"]
    urls[11:11] = [f"{image_server}/not_an_image.png"]
    with httpx.stream("POST", f"{service}{ROUTE}/batch", json=urls, timeout=120, trust_env=False) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == 20 and sorted(line["index"] for line in lines) == list(range(20))
    by_index = {line["index"]: line for line in lines}
    assert by_index[4]["status"] == "error" and by_index[4]["error"]["code"] == "upstream_error"
    assert by_index[11]["status"] == "error" and by_index[11]["error"]["code"] == "unsupported_media_type"
    good = [line for line in lines if line["index"] not in (4, 11)]
    assert all(line["status"] == "ok" for line in good), good
    # Each line carries what a direct answer's X-Width, X-Height and X-Foreground-* headers say.
    direct = {url: get(f"{service}{ROUTE}", url=url).headers for url in set(urls) - {urls[4], urls[11]}}
    for line in good:
        result = get(f"{service}{line['result']}")
        assert_rgba_cutout(result)
        headers = direct[urls[line["index"]]]
        assert (line["width"], line["height"]) == open_image(result).size == (int(headers["x-width"]),
                                                                             int(headers["x-height"]))
        assert line["foreground"] == {key: int(headers[f"x-foreground-{key}"])
                                      for key in ("top", "left", "width", "height")}


def test_batch_accepts_an_object_with_urls_and_options(service: str, image_server: str) -> None:
    response = httpx.post(f"{service}{ROUTE}/batch?format=webp", json={"urls": [f"{image_server}/red.png"]},
                          timeout=60, trust_env=False)
    (line,) = [json.loads(text) for text in response.text.splitlines()]
    assert line["status"] == "ok" and line["media_type"] == "image/webp"
    assert open_image(get(f"{service}{line['result']}")).format == "WEBP"


@pytest.mark.parametrize(
    ("body", "content_type", "query", "status", "code"),
    [
        (b"", "image/png", "", 422, "invalid_image"),
        (encode(red_square(), "JPEG")[:400], "image/jpeg", "", 422, "invalid_image"),
        (b"plain text pretending to be a picture", "image/png", "", 415, "unsupported_media_type"),
        (encode(red_square()), "text/plain", "", 415, "unsupported_media_type"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x00\x00\x00\x00\x05\x08\x02\x00\x00\x00\x00\x00\x00\x00",
         "image/png", "", 422, "invalid_image"),
        (encode(red_square()), "image/png", "?colour=red", 422, "invalid_option"),
        (encode(red_square()), "image/png", "?format=gif", 422, "invalid_option"),
        (encode(red_square()), "image/png", "?bg_color=blue", 422, "invalid_option"),
        (encode(red_square()), "image/png", "?only_mask=true&bg_color=%23000000", 422, "invalid_option"),
    ],
    ids=["empty", "truncated-jpeg", "text-file", "wrong-content-type", "zero-size", "unknown-option", "bad-format",
         "bad-bg-color", "mask-and-colour"],
)
def test_bad_uploads_get_json_4xx(service: str, body: bytes, content_type: str, query: str, status: int,
                                  code: str) -> None:
    assert_json_error(post(service, body, content_type, query), status, code)


def test_bad_urls_get_json_errors(service: str, image_server: str) -> None:
    assert_json_error(get(f"{service}{ROUTE}", url="ftp://127.0.0.1/red.png"), 400, "url_refused")
    assert_json_error(get(f"{service}{ROUTE}", url=f"{image_server}/missing.png"), 502, "upstream_error")
    assert_json_error(get(f"{service}{ROUTE}"), 422, "invalid_option")


def test_bad_batch_bodies_get_json_errors(service: str) -> None:
    url = f"{service}{ROUTE}/batch"
    assert_json_error(httpx.post(url, content=b"not json", trust_env=False), 400, "bad_request")
    assert_json_error(httpx.post(url, json=[], trust_env=False), 422, "invalid_option")
    assert_json_error(httpx.post(url, json=[1, 2], trust_env=False), 422, "invalid_option")
    assert_json_error(httpx.post(url, json={"urls": ["http://127.0.0.1/a.png"], "format": "webp"}, trust_env=False),
                      422, "invalid_option")  # an option the query string takes, where the body would hide it
    # A list longer than max_batch_urls long URLs could be is refused before it is parsed.
    assert_json_error(httpx.post(url, json=[0] * 500_000, trust_env=False, timeout=60), 413, "payload_too_large")


def test_unknown_results_and_routes_are_json_404(service: str) -> None:
    assert_json_error(get(f"{service}/v1/results/{'0' * 32}.png"), 404, "not_found")
    assert_json_error(get(f"{service}/v1/results/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")
    assert_json_error(get(f"{service}/v2/nothing"), 404, "not_found")


def test_health_readiness_and_info(service: str, tiny_model_dir) -> None:
    assert get(f"{service}/healthz").json() == {"status": "ok"}
    assert get(f"{service}/readyz").json() == {"status": "ready"}
    info = get(f"{service}/v1/info").json()
    assert info["model"]["model_id"] == str(tiny_model_dir)
    assert info["model"]["input_size"] == [256, 256] and info["model"]["precision"] == "fp32"
    assert info["model"]["batching"]["max_batch_size"] == 16
    assert info["model"]["versions"]["torch"] and info["model"]["versions"]["ray"]
    startup = info["model"]["startup"]  # where the model replica's start went
    assert 0 < time.time() - startup["init_started_at"] < 3600
    assert startup["module_imported_at"] <= startup["init_started_at"] < startup["configured_at"] <= time.time()
    assert startup["model_load_s"] > 0 and startup["warm_up_s"] >= 0 and startup["memory_probe_s"] >= 0
    assert 0 <= startup["imports_s"] <= startup["model_load_s"]
    phases = info["model"]["load_phases"]  # the model's own steps, within its load
    assert set(phases) == {"module_s", "to_device_s", "buckets_s"}
    assert sum(phases.values()) <= startup["model_load_s"] + 0.3
