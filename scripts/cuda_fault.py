"""Break the model replica's CUDA context and measure how the service heals (GPU only).

Starts the service with scripts/poisoned_model.py (a network that triggers a device-side assert on an all-black
image), sends good images, then the poison, then good images one after another until the replaced replica
answers. Reports the answer to the poison, every answer after it, and the time until a good answer comes back.

    python scripts/cuda_fault.py --out cuda_fault.json
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from harness.answers import OK, image_size, judge_png
from harness.fault import model_replica_pid
from harness.overload import CONTENT_TYPE, ROUTE
from harness.photos import mixed_size_jpegs
from harness.run_record import run_record
from harness.service_process import ServeProcess
from serve_app.serve_config import derive_config


def black_jpeg(width: int = 1200, height: int = 900) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="JPEG")
    return buffer.getvalue()


def send(http: httpx.Client, base_url: str, body: bytes, started: float) -> dict:
    sent = time.monotonic() - started
    try:
        response = http.post(base_url + ROUTE, content=body, headers={"Content-Type": CONTENT_TYPE})
    except httpx.HTTPError as error:
        return {"at_s": round(sent, 2), "status": None, "error": type(error).__name__}
    answer = {"at_s": round(sent, 2), "status": response.status_code,
              "retry_after": response.headers.get("retry-after")}
    if response.status_code == 200:
        answer["judged"] = judge_png(response.content, image_size(body))[0]
    else:
        answer["body"] = response.text[:300]
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/prod.yaml"))
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop waiting for recovery after this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = derive_config(args.config, model={"model_id": "import:poisoned_model:build", "execution": "eager"},
                           remover={"num_replicas": 1, "autoscaling_config": None}, ingress_replicas=2)
    good = mixed_size_jpegs(4)
    record: dict = run_record()
    workdir = Path(tempfile.mkdtemp(prefix="cuda_fault_"))
    server = ServeProcess(config, workdir, workdir / "serve.log")
    try:
        record["ready_after_s"] = round(server.wait_ready(300), 1)
        base_url = server.base_url
        with httpx.Client(timeout=90, trust_env=False) as http:
            started = time.monotonic()
            record["before"] = [send(http, base_url, body, started) for body in good]
            record["pid_before"] = model_replica_pid(base_url)
            record["poison"] = send(http, base_url, black_jpeg(), started)
            poisoned_at = time.monotonic() - started
            after, consecutive_ok = [], 0
            while time.monotonic() - started - poisoned_at < args.max_seconds and consecutive_ok < 5:
                answer = send(http, base_url, good[len(after) % len(good)], started)
                after.append(answer)
                consecutive_ok = consecutive_ok + 1 if answer.get("judged") == OK else 0
                time.sleep(0.25)
            record["after"] = after
            first_ok = next((a["at_s"] for a in after if a.get("judged") == OK), None)
            record["summary"] = {
                "poison_status": record["poison"]["status"],
                "requests_after_poison": len(after),
                "failed_after_poison": sum(a.get("judged") != OK for a in after),
                "statuses_after_poison": sorted({str(a["status"]) for a in after}),
                "first_good_answer_after_s": None if first_ok is None else round(first_ok - poisoned_at, 2),
                "pid_before": record["pid_before"],
                "pid_after": model_replica_pid(base_url) if first_ok is not None else None,
            }
            print(json.dumps(record["summary"]), flush=True)
    finally:
        server.stop()
        record["serve_log_tail"] = server.log_tail(40)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
