"""Several models in one application, over real HTTP against `serve run`: two tiny models, one of them inverted
(it keeps the white background and drops the object), so that every answer shows which model made it."""

from __future__ import annotations

import concurrent.futures
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.service_process import free_port
from serve_app.serve_config import derive_config
from serve_app.tiny_model import write_tiny_model
from tests.helpers import TINY_CONFIG, serve_running
from tests.images import BOX, encode, red_square

ROUTE = "/v1/remove-background"


@pytest.fixture(scope="module")
def models_service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve run` of the tiny config with `tiny` (resident, the default) and two models loaded on their first
    request, `inverted` and `late`; a request waits for a load at most 1 ms, so that the first one is refused."""
    workdir = tmp_path_factory.mktemp("models")
    inverted = write_tiny_model(workdir / "inverted", inverted=True)
    config = derive_config(TINY_CONFIG, port=free_port())
    args = config["applications"][0]["args"]
    tiny = {**args.pop("model"), "model_id": str(tiny_model_dir), "name": "tiny"}
    # `late` is the inverted model under another name, asked for by one test only: its first request is refused.
    args.update(models=[tiny, {**tiny, "model_id": str(inverted), "name": "inverted", "resident": False,
                               "batching": {"max_batch_size": 4}},
                        {**tiny, "model_id": str(inverted), "name": "late", "resident": False}],
                default_model="tiny", load_wait_s=0.001)
    with serve_running(config, workdir) as process:
        yield process.base_url


def post(base_url: str, query: str = "") -> httpx.Response:
    return httpx.post(f"{base_url}{ROUTE}{query}", content=encode(red_square()),
                      headers={"Content-Type": "image/png"}, timeout=60, trust_env=False)


def object_and_background_alpha(response: httpx.Response) -> tuple[float, float]:
    assert response.status_code == 200, response.text
    alpha = np.asarray(Image.open(io.BytesIO(response.content)))[..., 3].astype(float)
    left, top, right, bottom = BOX
    inside = alpha[top + 5:bottom - 5, left + 5:right - 5].mean()
    return inside, alpha[:5, :5].mean()


def info(base_url: str) -> dict:
    return httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False).json()


def test_info_lists_every_model_and_the_default(models_service: str) -> None:
    described = info(models_service)
    assert described["default_model"] == "tiny"
    assert set(described["models"]) == {"tiny", "inverted", "late"}
    assert described["models"]["tiny"]["loaded"] and described["models"]["tiny"]["resident"]
    assert described["model"]["name"] == "tiny"  # the default model in full, as a one-model config has it
    # which model replica answered: with one per GPU, a benchmark tells their histograms apart by it
    replica = described["model"]["replica"]
    assert replica["id"] and replica["node_id"] and replica["gpu_ids"] == []  # no GPU here


def test_unknown_model_is_a_422_that_lists_the_served_ones(models_service: str) -> None:
    response = post(models_service, "?model=birefnet_hr")
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "birefnet_hr" in message and "tiny" in message and "inverted" in message


def test_default_model_without_a_name(models_service: str) -> None:
    inside, background = object_and_background_alpha(post(models_service))
    assert inside > 250 and background < 5


def test_a_cold_model_loads_on_first_use_and_its_requests_route_to_it(models_service: str) -> None:
    first = post(models_service, "?model=late")
    # The load outlasts the 1 ms a request waits for it: 503 with Retry-After, while it goes on loading.
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "model_unavailable" and "loading" in first.json()["error"]["message"]
    assert int(first.headers["retry-after"]) >= 1
    # The default model keeps answering meanwhile.
    inside, _ = object_and_background_alpha(post(models_service, "?model=tiny"))
    assert inside > 250
    deadline = time.monotonic() + 120
    while (response := post(models_service, "?model=late")).status_code == 503:
        assert time.monotonic() < deadline, "the cold model never loaded"
        time.sleep(0.5)
    inside, background = object_and_background_alpha(response)
    assert inside < 5 and background > 250  # the inverted model's answer
    described = info(models_service)["models"]
    assert described["late"]["loaded"] and not described["late"]["resident"]
    assert sum(described["late"]["batch_size_histogram"].values()) >= 1
    assert described["tiny"]["batching"]["max_batch_size"] == 16  # the deployment's user_config


def test_concurrent_requests_for_both_models_each_get_their_own(models_service: str) -> None:
    post(models_service, "?model=inverted")  # loaded by the test above, or now
    with httpx.Client(trust_env=False, timeout=60) as client:
        def one(index: int) -> tuple[str, httpx.Response]:
            name = "inverted" if index % 2 else "tiny"
            for _ in range(240):  # the inverted model may still be loading when this test runs alone
                response = client.post(f"{models_service}{ROUTE}?model={name}", content=encode(red_square()),
                                       headers={"Content-Type": "image/png"})
                if response.status_code != 503:
                    return name, response
                time.sleep(0.5)
            return name, response

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(24)))
    for name, response in answers:
        inside, background = object_and_background_alpha(response)
        assert (inside > 250) == (name == "tiny") and (background > 250) == (name == "inverted"), name
    assert info(models_service)["models"]["inverted"]["batching"]["max_batch_size"] == 4  # its own batch settings


def test_bulk_client_takes_a_model(models_service: str, tmp_path: Path) -> None:
    from serve_app.bulk.__main__ import main

    source = tmp_path / "in"
    source.mkdir()
    (source / "red.png").write_bytes(encode(red_square()))
    assert main(["client", str(source), str(tmp_path / "out"), "--url", models_service, "--model", "inverted"]) == 0
    alpha = np.asarray(Image.open(tmp_path / "out" / "red.png"))[..., 3]
    left, top, right, bottom = BOX
    assert alpha[top + 5:bottom - 5, left + 5:right - 5].mean() < 5
