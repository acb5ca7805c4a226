"""One client, Serve ingress returning a 3.6 MB body: what do the middleware and the user-code thread cost?"""
import asyncio, os, sys, time
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

MIDDLEWARE = sys.argv[1] == "mw"
api = FastAPI()
BODY = os.urandom(3_600_000)
if MIDDLEWARE:
    @api.middleware("http")
    async def passthrough(request: Request, call_next):
        return await call_next(request)

@serve.deployment
@serve.ingress(api)
class App:
    @api.post("/x")
    async def x(self, request: Request) -> Response:
        data = await request.body()
        return Response(BODY, media_type="image/png")

async def drive_httpx(n=150):
    import httpx
    payload = os.urandom(400_000)
    lat = []
    async with httpx.AsyncClient(trust_env=False) as s:
        for i in range(n):
            t = time.perf_counter()
            r = await s.post("http://127.0.0.1:8000/x", content=payload, headers={"Content-Type": "image/jpeg"})
            len(r.content)
            lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat[20:])
    print(sys.argv[1:], "httpx p50 %.2f mean %.2f" % (np.percentile(lat, 50), lat.mean()), flush=True)

async def drive(n=150):
    import aiohttp
    payload = os.urandom(400_000)
    lat = []
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            t = time.perf_counter()
            async with s.post("http://127.0.0.1:8000/x", data=payload, headers={"Content-Type": "image/jpeg"}) as r:
                await r.read()
            lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat[20:])
    print(sys.argv[1:], "p50 %.2f mean %.2f" % (np.percentile(lat, 50), lat.mean()), flush=True)

serve.run(App.bind(), route_prefix="/")
asyncio.run(drive()); asyncio.run(drive_httpx()); asyncio.run(drive())
serve.shutdown()
