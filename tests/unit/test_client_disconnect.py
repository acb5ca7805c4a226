"""A client that closes the connection before its request has arrived whole gets no server error: a 499 in Serve's
metrics and access log, logged at info, not an "unexpected error" with a traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.requests import ClientDisconnect, Request

from serve_app.deployments.ingress import api

PATH = "/test-only/disconnect"


def test_a_client_gone_mid_upload_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    @api.post(PATH)  # removed below: the ingress's own handlers, on a body read that ends early
    async def read_body(request: Request) -> dict:
        await request.body()
        return {}

    messages = [{"type": "http.request", "body": b"\x89PNG", "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": PATH, "raw_path": PATH.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"content-length", b"1000")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(api(scope, receive, send))
    finally:
        api.router.routes = [route for route in api.router.routes if getattr(route, "path", None) != PATH]
    assert ClientDisconnect in api.exception_handlers
    assert [message["status"] for message in sent if message["type"] == "http.response.start"] == [499]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
