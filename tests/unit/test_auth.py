"""API keys: header parsing, constant-time matching, loading from a file and the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from serve_app.auth import key_matches
from serve_app.deployments.ingress import RequireApiKey
from serve_app.settings import API_KEYS_ENV, IngressSettings, load_api_keys

KEYS = ("alpha-key", "beta-key")


@pytest.mark.parametrize(
    ("header", "ok"),
    [("Bearer alpha-key", True), ("bearer beta-key", True), ("Bearer gamma-key", False), ("alpha-key", False),
     ("Basic alpha-key", False), ("Bearer ", False), (None, False), ("Bearer alpha-key-and-more", False)],
)
def test_key_matches(header: str | None, ok: bool) -> None:
    assert key_matches(header, KEYS) is ok


def test_keys_come_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n")
    monkeypatch.setenv(API_KEYS_ENV, "env-key, ,env-key-2")
    keys = load_api_keys(IngressSettings(api_keys_file=keys_file))
    assert set(keys) == {"file-key-1", "file-key-2", "env-key", "env-key-2"}


def test_no_keys_means_no_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert load_api_keys(IngressSettings()) == ()
    assert load_api_keys(IngressSettings(), {API_KEYS_ENV: ""}) == ()


@pytest.mark.parametrize(("content", "environ", "message"), [
    ("# keys go here\n\n", {}, "holds no key"),  # an emptied file must not open every route
    ("", {}, "holds no key"),
    (None, {API_KEYS_ENV: " , "}, "names no key"),
    ("alpha-key\nbeta-key # ops team\n", {}, ":2: a key is one word"),  # a key that could never match
])
def test_keys_that_are_configured_but_unusable_stop_the_start(tmp_path: Path, content: str | None, environ: dict,
                                                              message: str) -> None:
    keys_file = None
    if content is not None:
        keys_file = tmp_path / "keys"
        keys_file.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_api_keys(IngressSettings(api_keys_file=keys_file), environ)


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_bytes("alpha-key\r\nbeta-key\r\n".encode("utf-8-sig"))  # as Windows' Notepad saves it
    assert load_api_keys(IngressSettings(api_keys_file=keys_file), {}) == ("alpha-key", "beta-key")


def _guarded_app() -> FastAPI:
    """A stand-in app behind the ingress's API-key middleware, with the keys the ingress would load."""
    app = FastAPI()
    app.state.api_keys = KEYS
    app.add_middleware(RequireApiKey)

    @app.post("/v1/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def test_the_middleware_refuses_without_a_key_and_passes_bodies_through_with_one() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB each way, as an image upload and its answer travel

    async def exchange() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=_guarded_app())  # in-process: no socket is opened
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.post("/v1/echo", content=body),
                    await client.post("/v1/echo", content=body, headers={"Authorization": "Bearer wrong"}),
                    await client.post("/v1/echo", content=body, headers={"Authorization": "Bearer beta-key"}),
                    await client.get("/healthz")]

    missing, wrong, allowed, health = asyncio.run(exchange())
    for refused in (missing, wrong):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized"
    assert allowed.status_code == 200 and allowed.content == body
    assert health.status_code == 200


def test_under_a_route_prefix_the_open_paths_stay_open_and_the_rest_still_needs_a_key() -> None:
    # Serve's proxy hands an application behind `route_prefix: /lite` the whole path and root_path "/lite"
    async def exchange() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=_guarded_app(), root_path="/lite")  # in-process: no socket is opened
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get("/lite/healthz"),
                    await client.post("/lite/v1/echo", content=b"x"),
                    await client.post("/lite/v1/echo", content=b"x", headers={"Authorization": "Bearer beta-key"})]

    health, missing, allowed = asyncio.run(exchange())
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert allowed.status_code == 200 and allowed.content == b"x"


@pytest.mark.parametrize(("path", "root", "inside"), [
    ("/readyz", "", "/readyz"), ("/lite/readyz", "/lite", "/readyz"), ("/lite", "/lite", "/"),
    ("/literal/readyz", "/lite", "/literal/readyz"), ("/other/readyz", "/lite", "/other/readyz"),
])
def test_route_path_strips_only_the_whole_prefix(path: str, root: str, inside: str) -> None:
    from serve_app.deployments.ingress import route_path

    assert route_path({"type": "http", "path": path, "root_path": root}) == inside
