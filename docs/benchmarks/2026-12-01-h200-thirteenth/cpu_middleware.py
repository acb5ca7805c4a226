"""Thirteenth session, 2-core machine: per-request cost of an HTTP middleware that does nothing, in-process ASGI
(0.4 MB upload in 64 KiB chunks, 3.6 MB response): none, Starlette BaseHTTPMiddleware (@app.middleware("http")),
plain ASGI middleware. Printed: median ms until the response headers / until the app returned. Run while CI ran."""
import asyncio, time, statistics
from fastapi import FastAPI, Request
from fastapi.responses import Response

BODY = b"x" * 3_600_000
UP = b"y" * 400_000

def make(kind):
    app = FastAPI()
    if kind == "base":
        @app.middleware("http")
        async def mw(request: Request, call_next):
            return await call_next(request)
    elif kind == "asgi":
        class MW:
            def __init__(self, app): self.app = app
            async def __call__(self, scope, receive, send): await self.app(scope, receive, send)
        app.add_middleware(MW)
    @app.post("/r")
    async def r(request: Request):
        data = await request.body()
        return Response(BODY, media_type="image/png")
    return app

async def call(app):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/r", "raw_path": b"/r", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"image/jpeg"), (b"content-length", str(len(UP)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    chunks = [UP[i:i + 65536] for i in range(0, len(UP), 65536)]
    async def receive():
        if chunks:
            c = chunks.pop(0); return {"type": "http.request", "body": c, "more_body": bool(chunks)}
        await asyncio.sleep(3600)
    got = {}
    async def send(message):
        if message["type"] == "http.response.start": got["headers_at"] = time.perf_counter()
    t = time.perf_counter(); await app(scope, receive, send); end = time.perf_counter()
    return (got["headers_at"] - t) * 1000, (end - t) * 1000

async def main():
    for kind in ("none", "base", "asgi", "none", "base", "asgi"):
        app = make(kind)
        for _ in range(20): await call(app)
        res = [await call(app) for _ in range(300)]
        print(kind, "headers p50 %.3f ms, total p50 %.3f ms" % (statistics.median(r[0] for r in res), statistics.median(r[1] for r in res)))
asyncio.run(main())
