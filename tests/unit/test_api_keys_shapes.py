"""The API-key check answers in the shape of the API that was called: the native `{"error": ...}`, rembg's
`{"detail": ...}` and remove.bg's `{"errors": [...]}` with its 403; remove.bg's clients send the key as X-Api-Key."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from serve_app.compat.rembg import RembgError
from serve_app.compat.removebg import RemoveBgError
from serve_app.compat.routes import in_route_shape
from serve_app.deployments.ingress import AllowedOrigins, RequireApiKey
from serve_app.errors import ApiError, InvalidOption

NATIVE, REMBG, REMOVEBG = "/v1/remove-background", "/api/remove", "/v1.0/removebg"
KEY = "secret"


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.state.api_keys = (KEY,)
    app.add_middleware(RequireApiKey)

    @app.post(NATIVE)
    @app.post(REMBG)
    @app.post(REMOVEBG)
    async def answer() -> dict:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return TestClient(app)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"X-Api-Key": KEY}], ids=["none", "wrong", "no-scheme", "x-api-key"])
def test_the_native_api_refuses_with_its_own_error(client: TestClient, headers: dict) -> None:
    response = client.post(NATIVE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "unauthorized" and "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": KEY}],
                         ids=["none", "wrong", "x-api-key"])
def test_rembg_refuses_with_fastapis_detail(client: TestClient, headers: dict) -> None:
    response = client.post(REMBG, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"detail"} and "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}],
                         ids=["none", "wrong-x-api-key", "wrong-bearer"])
def test_remove_bg_refuses_with_its_403(client: TestClient, headers: dict) -> None:
    response = client.post(REMOVEBG, headers=headers)
    assert response.status_code == 403
    (error,) = response.json()["errors"]
    assert error["code"] == "auth_failed" and error["title"]
    assert "X-Api-Key" in error["detail"]


@pytest.mark.parametrize("path", [NATIVE, REMBG, REMOVEBG])
def test_a_bearer_key_opens_every_api(client: TestClient, path: str) -> None:
    response = client.post(path, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_remove_bgs_x_api_key_opens_remove_bg(client: TestClient) -> None:
    response = client.post(REMOVEBG, headers={"X-Api-Key": KEY})
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200


def test_without_configured_keys_everything_is_open() -> None:
    app = FastAPI()
    app.add_middleware(RequireApiKey)

    @app.post(REMOVEBG)
    async def answer() -> dict:
        return {"ok": True}

    assert TestClient(app).post(REMOVEBG).status_code == 200


# --- the same shaping for any error ---------------------------------------------------------------------


def test_errors_on_rembg_routes_become_a_detail_string() -> None:
    shaped = in_route_shape(REMBG, InvalidOption("format must be png", headers={"X-Why": "test"}))
    assert isinstance(shaped, RembgError)
    assert (shaped.status, shaped.to_body(), shaped.headers) == (422, {"detail": "format must be png"},
                                                                 {"X-Why": "test"})


def test_rembgs_own_errors_keep_their_detail() -> None:
    original = RembgError(422, [{"type": "missing", "loc": ["body", "file"], "msg": "Field required"}])
    assert in_route_shape(REMBG, original) is original


def test_errors_on_remove_bg_routes_take_its_codes() -> None:
    shaped = in_route_shape(REMOVEBG, ApiError("busy", status=503, code="overloaded", headers={"Retry-After": "1"}))
    assert isinstance(shaped, RemoveBgError)
    assert (shaped.status, shaped.headers["Retry-After"]) == (429, "1")


def test_errors_on_native_routes_are_left_as_they_are() -> None:
    original = InvalidOption("size must be one of preview, medium, hd, full")
    assert in_route_shape(NATIVE, original) is original
    assert original.to_body() == {"error": {"code": "invalid_option", "message": original.message}}


@pytest.mark.parametrize(("method", "path", "status", "shape"), [
    ("GET", "/v1.0/nothing", 404, "errors"), ("GET", REMOVEBG, 405, "errors"), ("GET", "/api/nothing", 404, "detail"),
    ("PUT", REMBG, 405, "detail"), ("GET", "/v1/nothing", 404, "error"),
    # a route that fails unexpectedly (here: called with no Serve replica around it) answers 500 in its shape too
    ("POST", REMOVEBG, 500, "errors"), ("POST", "/api/remove?url=x", 500, "detail")])
def test_routing_errors_and_failures_answer_in_the_shape_of_the_api_called(method: str, path: str, status: int,
                                                                           shape: str) -> None:
    from serve_app.deployments.ingress import api

    response = TestClient(api, raise_server_exceptions=False).request(method, path)
    assert response.status_code == status and set(response.json()) == {shape}


def cors_client(origins: tuple[str, ...]) -> TestClient:
    app = FastAPI()
    app.state.api_keys, app.state.cors_origins = (KEY,), origins
    app.add_middleware(RequireApiKey)
    app.add_middleware(AllowedOrigins)

    @app.post(REMBG)
    async def answer() -> dict:
        return {"ok": True}

    return TestClient(app)


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization"}


def test_pages_from_allowed_origins_may_call_the_api_and_read_its_headers() -> None:
    # the browser's preflight carries no key, and must not meet the key check; the call itself still needs one
    client = cors_client(("https://app.example",))
    preflight = client.options(REMBG, headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    call = client.post(REMBG, headers={"Origin": "https://app.example", "Authorization": f"Bearer {KEY}"})
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Foreground-Top" in call.headers["access-control-expose-headers"]
    assert client.post(REMBG, headers={"Origin": "https://app.example"}).status_code == 401
    other = client.options(REMBG, headers={**PREFLIGHT, "Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_origin_is_allowed_by_default() -> None:
    client = cors_client(())
    assert "access-control-allow-origin" not in client.options(REMBG, headers=PREFLIGHT).headers
    call = client.post(REMBG, headers={"Origin": "https://app.example", "Authorization": f"Bearer {KEY}"})
    assert call.status_code == 200 and "access-control-allow-origin" not in call.headers
