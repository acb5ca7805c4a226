"""device_jpeg_decode on the in-process service: with the default (auto) a lone JPEG, and at any load a JPEG large
enough for a reduced copy, goes to the model replica as the file, which decodes the model's copy on its device
beside the ingress's own decode; a smaller one under concurrency, and one the replica cannot decode, goes as pixels;
with `never` pixels always go."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from ray import serve

from serve_app import imaging
from serve_app.protocol import DeviceDecodeFailed, EncodedJpeg, MaskResult
from serve_app.timing import parse_server_timing
from tests.helpers import alpha_of, distinct_boxes, post_all
from tests.images import (
    SIZE,
    assert_mask_matches,
    encode,
    expected_alpha,
    jpeg_scan_cut_short_with_an_end_marker,
    red_square,
)
from tests.integration.deployment import APP_NAME, EDGE_MARGIN, deploy

ROUTE = "/v1/remove-background"
# The batch wait keeps a pass gathering for a while: concurrent requests are all in hand at once.
BATCHING = {"max_batch_size": 16, "batch_wait_timeout_s": 0.25}
LIMIT = 10**8
SMALL = encode(red_square(), "JPEG", quality=90)
# Five times the tiny config's 256x256 input: without the file path, the model would get a reduced copy.
LARGE_SIZE, LARGE_BOX = (1280, 800), (160, 120, 560, 440)
LARGE = encode(red_square(LARGE_SIZE, LARGE_BOX), "JPEG", quality=95)


def post_jpeg(base_url: str, body: bytes) -> httpx.Response:
    response = httpx.post(f"{base_url}{ROUTE}", content=body, headers={"Content-Type": "image/jpeg"}, timeout=60,
                          trust_env=False)
    assert response.status_code == 200, response.text
    return response


def post_lone(base_url: str, body: bytes) -> httpx.Response:
    """The answer to a lone request once the model's last answer showed an idle device: the first answer to a
    lone request does (one ingress replica), whatever went before."""
    post_jpeg(base_url, body)
    return post_jpeg(base_url, body)


def stages(response: httpx.Response) -> dict[str, float]:
    return parse_server_timing(response.headers["Server-Timing"])


@pytest.fixture(scope="module")
def answers(base_url: str, tiny_model_dir: Path) -> dict[str, dict[str, httpx.Response]]:
    """Lone requests for a small and a large JPEG, under the default setting and under `never`."""
    collected = {}
    for mode in ("auto", "never"):
        deploy(tiny_model_dir, BATCHING, {"device_jpeg_decode": mode})
        collected[mode] = {"small": post_lone(base_url, SMALL), "large": post_lone(base_url, LARGE)}
    return collected


@pytest.fixture
def service(base_url: str, tiny_model_dir: Path) -> str:
    deploy(tiny_model_dir, BATCHING)  # the ingress's default settings
    return base_url


def test_a_lone_jpeg_goes_to_the_model_replica_as_the_file_by_default(service: str) -> None:
    response = post_lone(service, SMALL)
    timing = stages(response)
    assert {"model_cpu_decode", "model_device_decode", "model_queue", "model_batch"} <= timing.keys(), timing
    assert timing["model_device_decode"] > 0, timing
    assert "decode" not in timing  # the ingress's decode ran beside the model call, not before it
    assert_mask_matches(alpha_of(response), expected_alpha(), EDGE_MARGIN)
    # The colours returned are the ingress's own decode of the upload, whatever the model decoded (black where
    # the cut-out is fully transparent).
    cutout = np.asarray(Image.open(io.BytesIO(response.content)))
    colours = imaging.decode_image(SMALL, max_pixels=LIMIT).rgb
    np.testing.assert_array_equal(cutout[..., :3], np.where(cutout[..., 3:] == 0, 0, colours))


def test_the_file_path_comes_before_the_reduced_copy_and_never_keeps_the_pixel_paths(answers: dict) -> None:
    for name in ("small", "large"):
        assert "model_device_decode" in stages(answers["auto"][name]), name
        assert "model_device_decode" not in stages(answers["never"][name]), name
    assert "decode" in stages(answers["never"]["small"])  # decoded whole before the model call
    assert "decode_beside_model" in stages(answers["never"]["large"])  # a reduced copy went to the model


@pytest.mark.parametrize(("name", "size", "box"), [("small", SIZE, None), ("large", LARGE_SIZE, LARGE_BOX)])
def test_a_lone_jpeg_gets_the_mask_it_gets_with_never(answers: dict, name: str, size: tuple[int, int],
                                                       box: tuple[int, int, int, int] | None) -> None:
    from_file, from_pixels = (alpha_of(answers[mode][name]).astype(int) for mode in ("auto", "never"))
    assert from_file.shape == from_pixels.shape == (size[1], size[0])
    inside = expected_alpha(size, box) if box else expected_alpha()
    assert_mask_matches(from_file.astype(np.uint8), inside, EDGE_MARGIN * (4 if box else 1))
    # The same decoder on a CPU; the large photo's mask comes from its whole pixels here, from a reduced copy
    # with `never`: the two differ at the object's edges only.
    assert np.abs(from_file - from_pixels).mean() < (1.0 if box else 0.01)


def test_a_jpeg_the_replica_cannot_decode_is_sent_again_as_pixels(service: str) -> None:
    body = encode(red_square(), "JPEG", quality=75)[:-1]  # half an end-of-image marker: Pillow reads it,
    imaging.decode_image(body, max_pixels=LIMIT)          # torchvision refuses it (tests/unit/test_device_jpeg.py)
    response = post_lone(service, body)
    timing = stages(response)
    assert "model_cpu_decode" in timing and timing["model_device_decode"] == 0, timing
    assert_mask_matches(alpha_of(response), expected_alpha(), EDGE_MARGIN)


def test_a_jpeg_libjpeg_warns_about_gets_the_mask_of_the_ingress_pixels_not_the_replica_decode(service: str) -> None:
    body = jpeg_scan_cut_short_with_an_end_marker()  # decodable (a 200), but only libjpeg says it is damaged
    response = post_lone(service, body)
    timing = stages(response)
    assert "model_cpu_decode" in timing and timing["model_device_decode"] == 0, timing
    assert alpha_of(response).shape == (SIZE[1], SIZE[0])
    assert "model_device_decode" in stages(post_lone(service, SMALL))  # the next clean file goes as the file


def test_a_jpeg_broken_after_its_header_is_a_422_and_the_next_one_is_answered(service: str) -> None:
    body = SMALL[:SMALL.index(b"\xff\xda") + 100]  # the scan cut short: the header is whole
    assert imaging.device_decodable_jpeg(body, max_pixels=LIMIT) is not None  # it goes as the file
    post_jpeg(service, SMALL)  # the device is idle at the last answer
    response = httpx.post(f"{service}{ROUTE}", content=body, headers={"Content-Type": "image/jpeg"}, timeout=60,
                          trust_env=False)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_image", response.text
    assert "model_device_decode" in stages(post_jpeg(service, SMALL))


def test_under_concurrency_jpegs_go_as_pixels_and_each_caller_gets_its_own_mask(service: str) -> None:
    boxes = distinct_boxes(16)
    responses = post_all(f"{service}{ROUTE}", [encode(red_square(box=box), "JPEG", quality=95) for box in boxes],
                         content_type="image/jpeg")
    paths = []
    for box, response in zip(boxes, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_mask_matches(alpha_of(response), expected_alpha(box=box), EDGE_MARGIN)
        paths.append("file" if "model_device_decode" in stages(response) else "pixels")
    # One ingress replica: while it has an image in hand, the next ones go as decoded pixels; the batch wait
    # keeps the first one's pass gathering until all have arrived.
    assert paths.count("pixels") >= len(boxes) - 1, paths


def idat_chunks(png_bytes: bytes) -> int:
    """IDAT chunks in a PNG: the ingress writes one per row stripe, plus one for the checksum."""
    count, offset = 0, 8
    while offset < len(png_bytes):
        length = int.from_bytes(png_bytes[offset : offset + 4], "big")
        count += png_bytes[offset + 4 : offset + 8] == b"IDAT"
        offset += 12 + length
    return count


def test_a_lone_png_is_compressed_on_the_pool_and_concurrent_ones_each_on_one_thread(service: str) -> None:
    """A 1280x800 cut-out is 4 MiB of pixels: on one thread, 4 stripes of ~1 MiB; on the PNG pool (the default 8
    threads) 8 equal ones."""
    lone = post_lone(service, LARGE)
    assert idat_chunks(lone.content) == 8 + 1
    boxes = [(40 + 60 * index, 100, 400 + 60 * index, 500) for index in range(12)]
    bodies = [encode(red_square(LARGE_SIZE, box), "JPEG", quality=95) for box in boxes]
    responses = post_all(f"{service}{ROUTE}", bodies, content_type="image/jpeg")
    stripes = [idat_chunks(response.content) - 1 for response in responses]
    # Those encoded while others were in hand used one thread; the last few may have found the replica alone.
    assert stripes.count(4) >= len(bodies) - 3 and set(stripes) <= {4, 8}, stripes
    for box, response in zip(boxes, responses, strict=True):
        assert_mask_matches(alpha_of(response), expected_alpha(LARGE_SIZE, box), EDGE_MARGIN * 4)


def encoded(body: bytes) -> EncodedJpeg:
    file = imaging.device_decodable_jpeg(body, max_pixels=LIMIT)
    assert file is not None
    return file


def test_the_replica_answers_a_lone_file_with_its_decode_time_and_no_backlog(service: str) -> None:
    remover = serve.get_deployment_handle("BackgroundRemover", APP_NAME)
    result: MaskResult = remover.remove_background.remote(encoded(SMALL)).result()
    assert result.mask.shape == (SIZE[1], SIZE[0])
    assert result.device_decode_ms > 0 and result.batch_size == 1 and result.device_backlog == 0
    assert_mask_matches(result.mask, expected_alpha(), EDGE_MARGIN)


def test_a_file_the_replica_cannot_decode_fails_alone_and_its_batch_mates_are_answered(service: str) -> None:
    """The file is decoded before it joins a pass: its failure never reaches the pass the others share."""
    remover = serve.get_deployment_handle("BackgroundRemover", APP_NAME)
    broken = EncodedJpeg(SMALL[:-1], 1, (SIZE[1], SIZE[0]))
    boxes = distinct_boxes(4)
    pictures = [imaging.decode_image(encode(red_square(box=box)), max_pixels=LIMIT).model_input for box in boxes]
    calls = [remover.remove_background.remote(image) for image in [encoded(SMALL), broken, *pictures]]
    with pytest.raises(DeviceDecodeFailed, match="cannot decode"):
        calls[1].result()
    results: list[MaskResult] = [call.result() for call in calls[:1] + calls[2:]]
    for result, box in zip(results, [None, *boxes], strict=True):
        assert_mask_matches(result.mask, expected_alpha(box=box) if box else expected_alpha(), EDGE_MARGIN)
    assert max(result.batch_size for result in results) > 1  # they shared a pass
    # Answers that left while batch-mates were still held saw them: not an idle device.
    assert max(result.device_backlog for result in results) >= 1


def test_the_replica_refuses_to_refine_a_file(service: str) -> None:
    """Clean edges need the colours the cut-out keeps: the ingress's decode, sent as pixels."""
    remover = serve.get_deployment_handle("BackgroundRemover", APP_NAME)
    with pytest.raises(ValueError, match="refine needs"):
        remover.remove_background.remote(encoded(SMALL), True).result()


def test_under_concurrency_large_jpegs_go_as_files_and_small_ones_as_pixels(service: str) -> None:
    boxes = [(40 + 60 * index, 100, 400 + 60 * index, 500) for index in range(6)]
    large = [encode(red_square(LARGE_SIZE, box), "JPEG", quality=95) for box in boxes]
    small = [encode(red_square(box=box), "JPEG", quality=95) for box in distinct_boxes(6)]
    responses = post_all(f"{service}{ROUTE}", [body for pair in zip(large, small, strict=True) for body in pair],
                         content_type="image/jpeg")
    large_answers, small_answers = responses[0::2], responses[1::2]
    for box, response in zip(boxes, large_answers, strict=True):
        assert response.status_code == 200, response.text
        assert stages(response)["model_device_decode"] > 0, stages(response)
        assert_mask_matches(alpha_of(response), expected_alpha(LARGE_SIZE, box), EDGE_MARGIN * 4)
    # The small ones: pixels, but for one that found the replica alone and idle.
    paths = ["file" if "model_device_decode" in stages(response) else "pixels" for response in small_answers]
    assert paths.count("pixels") >= len(small) - 1, paths


def test_a_large_photos_png_asked_of_a_replica_without_a_gpu_comes_from_the_ingress(base_url: str,
                                                                                     tiny_model_dir: Path) -> None:
    """device_png_min_pixels (off by default) asks the replica for the PNG of a JPEG that large; a replica on the
    CPU writes none, and the answer is the ingress's PNG of its own decode, as for any photo."""
    deploy(tiny_model_dir, BATCHING, {"device_png_min_pixels": LARGE_SIZE[0] * LARGE_SIZE[1]})
    remover = serve.get_deployment_handle("BackgroundRemover", APP_NAME)
    before = remover.describe.remote().result()["device_png"]
    result: MaskResult = remover.remove_background.remote(encoded(LARGE), False, None, True).result()
    assert result.png_stream is None and result.device_decode_ms > 0
    after = remover.describe.remote().result()["device_png"]  # asked, with room on the device, and not written
    assert after.get("not_written", 0) == before.get("not_written", 0) + 1 and not after.get("written")
    response = post_lone(base_url, LARGE)
    assert "model_png" not in stages(response) and "model_device_decode" in stages(response)
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = imaging.decode_image(LARGE, max_pixels=LIMIT).rgb
    opaque = pixels[..., 3] == 255
    assert opaque.any() and np.array_equal(pixels[opaque][:, :3], expected[opaque])  # the ingress's colours
    assert_mask_matches(pixels[..., 3], expected_alpha(LARGE_SIZE, LARGE_BOX), EDGE_MARGIN * 4)
    # rembg's plain answer is asked of the replica too; with its mask smoothed (ppm), the ingress shapes the mask
    for fields, asked in (({}, 1), ({"ppm": "true"}, 0)):
        before = remover.describe.remote().result()["device_png"].get("not_written", 0)
        answer = httpx.post(f"{base_url}/api/remove", data=fields, files={"file": ("large.jpg", LARGE, "image/jpeg")},
                            timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text[:300]
        after = remover.describe.remote().result()["device_png"].get("not_written", 0)
        assert after == before + asked, fields
