"""plain_client.py URL OUT.json [--levels 64,1] [--warmup 20] [--duration 30] [--photos 48] [--seed 7]

A closed-loop load client that shares no code with the project's: the standard library's http.client on persistent
connections, in threads spread over processes, each client sending one photo after another to
POST /v1/remove-background (raw JPEG body). Its photos are made here, not by the project's harness: smooth random
colour fields with a few shapes and sensor noise (sigma 5), 0.3 to 6 MP at random aspect ratios, JPEG quality 88.
An answer counts when it is 200, a PNG, and its IHDR gives the photo's size. Counted: answers finished in the window
from `warmup` to `warmup + duration` seconds after the level's start.
"""
import argparse
import http.client
import io
import json
import math
import multiprocessing as mp
import socket
import struct
import threading
import time
import urllib.parse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_photos(count: int, seed: int) -> list[tuple[bytes, int, int]]:
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        area = rng.uniform(0.3e6, 6e6)
        aspect = rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16])
        width, height = int(math.sqrt(area * aspect)), int(math.sqrt(area / aspect))
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        draw = ImageDraw.Draw(field)
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        field = field.filter(ImageFilter.GaussianBlur(2))
        pixels = np.asarray(field, np.float32) + rng.normal(0, 5, (height, width, 3)).astype(np.float32)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=88)
        photos.append((buffer.getvalue(), width, height))
    return photos


class Connection(http.client.HTTPConnection):
    """No Nagle delay on the requests' sends (a browser's or curl's default too)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client(host: str, port: int, photos: list, first: int, stop_at: float, results: list) -> None:
    connection = Connection(host, port, timeout=120)
    index = first
    while time.time() < stop_at:
        body, width, height = photos[index % len(photos)]
        index += 1
        sent = time.time()
        try:
            connection.request("POST", "/v1/remove-background", body=body, headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            connection = Connection(host, port, timeout=120)
            results.append((sent, time.time(), -1, repr(error)[:80]))
            continue
        ok = (status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
              and struct.unpack(">II", data[16:24]) == (width, height))
        results.append((sent, time.time(), status, "ok" if ok else f"bad answer ({len(data)} bytes)"))


def process(host: str, port: int, photos: list, threads: int, offset: int, stop_at: float, queue) -> None:
    results: list = []
    workers = [threading.Thread(target=client, args=(host, port, photos, offset + 7 * t, stop_at, results))
               for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(results)


def level(url: str, photos: list, clients: int, warmup: float, duration: float) -> dict:
    parsed = urllib.parse.urlsplit(url)
    start = time.time()
    stop_at = start + warmup + duration
    processes = min(clients, 8)
    queue = mp.get_context("fork").Queue()
    workers = []
    for p in range(processes):
        threads = clients // processes + (1 if p < clients % processes else 0)
        worker = mp.get_context("fork").Process(target=process, args=(parsed.hostname, parsed.port or 80, photos,
                                                                      threads, 13 * p, stop_at, queue))
        worker.start()
        workers.append(worker)
    results = [item for _ in workers for item in queue.get()]
    for worker in workers:
        worker.join()
    window = [r for r in results if start + warmup <= r[1] < stop_at]
    good = [r for r in window if r[3] == "ok"]
    latencies = sorted((r[1] - r[0]) * 1000 for r in good)
    outcomes: dict = {}
    for r in results:
        outcomes[f"{r[2]} {r[3]}"] = outcomes.get(f"{r[2]} {r[3]}", 0) + 1
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None
    return {"clients": clients, "warmup_s": warmup, "measured_s": duration, "answers_counted": len(good),
            "images_per_s": round(len(good) / duration, 3), "latency_ms": {"p50": pick(0.5), "p99": pick(0.99)},
            "outcomes_all_requests": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--levels", default="64,1")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    made = time.time()
    photos = make_photos(args.photos, args.seed)
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "photos": len(photos),
              "photo_megapixels": [round(w * h / 1e6, 2) for _, w, h in photos],
              "mean_jpeg_bytes": round(sum(len(b) for b, _, _ in photos) / len(photos)),
              "photos_made_s": round(time.time() - made, 1), "levels": []}
    for clients in (int(c) for c in args.levels.split(",")):
        record["levels"].append(level(args.url, photos, clients, args.warmup, args.duration))
        print(json.dumps(record["levels"][-1]), flush=True)
    with open(args.out, "w") as out:
        json.dump(record, out, indent=2)


if __name__ == "__main__":
    main()
