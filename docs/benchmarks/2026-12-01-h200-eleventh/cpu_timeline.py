import asyncio, json, sys, time
import numpy as np, aiohttp
sys.path.insert(0, "/work/main")
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.timing import parse_server_timing
URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1/remove-background"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 80
import io
from PIL import Image
photos = sample_photo_jpegs(16)
if len(sys.argv) > 3:
    photos = [ (lambda im: (lambda b: (im.save(b, "JPEG"), b.getvalue())[1])(io.BytesIO()))(Image.open(io.BytesIO(p)).resize((96, 64))) for p in photos]
async def main():
    rows = []
    async with aiohttp.ClientSession() as s:
        for i in range(N):
            body = photos[i % len(photos)]
            t_send = time.time()
            async with s.post(URL, data=body, headers={"Content-Type": "image/jpeg"}) as r:
                data = await r.read()
                t_done = time.time()
                m = json.loads(r.headers["x-marks"]); st = parse_server_timing(r.headers["server-timing"])
            rows.append(dict(total=(t_done - t_send) * 1e3, to_entry=(m["entry"] - t_send) * 1e3,
                             entry_to_call=(m["call"] - m["entry"]) * 1e3, to_replica=(m["arrive"] - m["call"]) * 1e3,
                             replica=(m["batch_end"] - m["arrive"]) * 1e3, batch_end_to_leave=(m["leave"] - m["batch_end"]) * 1e3,
                             return_trip=(m["back"] - m["leave"]) * 1e3, back_to_exit=(m["exit"] - m["back"]) * 1e3,
                             exit_to_client=(t_done - m["exit"]) * 1e3, **{k: v for k, v in st.items()}))
    rows = rows[10:]
    for k in rows[0]:
        print(f"{k:>20} {np.median([r.get(k, 0) for r in rows]):8.2f}")
asyncio.run(main())
