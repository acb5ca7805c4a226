"""Benchmark of the bulk tool as a user runs it: a folder of real photos in, cutouts out, one JSON record.

Writes N real-photo JPEGs (0.6-6 MP) to WORK/in (reused when already there), runs `python -m serve_app.bulk
MODE WORK/in WORK/out-MODE ...` as a subprocess on an emptied output folder, and records the wall time, the
tool's _summary.json, when the first output appeared, the overall and the steady-state (10th to 90th
percentile of completion times) images/s, and the busy CPUs of the host second by second. With --compare-url
it then sends some of the photos to a running service and compares the alpha channels of the two outputs; with
--compare-dir it compares them with another run's outputs (the bulk client's are the service's answers).

    python scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk \
        --compare-url http://127.0.0.1:8000 --out bench_bulk_client.json
    python scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /path/to/hub-layout-dir \
        --work-dir /tmp/bulk --compare-dir /tmp/bulk/out-client --out bench_bulk_offline.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.bulk_compare import compare_with_folder, compare_with_service, pick_evenly
from harness.bulk_timing import output_completion_times, steady_state
from harness.cpu_monitor import CpuBusySampler
from harness.gpu_monitor import GpuBusySampler
from harness.photos import sample_photo_folder_paths, write_sample_photo_folder
from harness.run_record import run_record
from serve_app.bulk.layout import SUMMARY_NAME

OUTPUT_SUFFIX = ".png"  # the bulk tool's default format, which the benchmark keeps
MAX_MEAN_ALPHA_DIFF = 2  # of 255: masks "within 2/255" of the reference's, as a mean over each photo compared


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["offline", "client"], required=True)
    parser.add_argument("--photos", type=int, default=3000, help="input photos to write (or reuse)")
    parser.add_argument("--photo-dir", type=Path,
                        help="folder of scikit-image's sample photos the inputs are made from (default: installed)")
    parser.add_argument("--work-dir", type=Path,
                        help="inputs go to WORK/in, outputs to WORK/out-MODE (emptied first); default: a new temp dir")
    offline = parser.add_argument_group("offline mode")
    offline.add_argument("--config", type=Path, default=Path("configs/prod.yaml"))
    offline.add_argument("--model-id", help="override the config's model (Hub id, directory or import: path)")
    offline.add_argument("--address", help="Ray to use ('local' starts a fresh one); default: the tool's")
    client = parser.add_argument_group("client mode")
    client.add_argument("--url", help="the running service the bulk client sends to")
    client.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--bulk-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the bulk tool, as is, repeatable (e.g. --bulk-arg=--batch-size=16)")
    parser.add_argument("--compare-url", help="after the run, compare outputs with this running service's answers")
    parser.add_argument("--compare-dir", type=Path, help="after the run, compare outputs with this folder's (the "
                                                         "outputs of another run on the same inputs)")
    parser.add_argument("--compare-count", type=int, default=16, help="photos to compare")
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    args = parser.parse_args()
    if args.mode == "client" and not args.url:
        parser.error("--mode client needs --url")
    return args


def bulk_command(args: argparse.Namespace, input_dir: Path, output_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "serve_app.bulk", args.mode, str(input_dir), str(output_dir)]
    if args.mode == "offline":
        command += ["--config", str(args.config)]
        command += ["--model-id", args.model_id] if args.model_id else []
        command += ["--address", args.address] if args.address else []
    else:
        command += ["--url", args.url, "--concurrency", str(args.concurrency)]
    return command + args.bulk_arg


def prepare_inputs(args: argparse.Namespace, input_dir: Path) -> dict:
    started = time.monotonic()
    written = write_sample_photo_folder(input_dir, args.photos, photo_dir=args.photo_dir,
                                        workers=os.cpu_count() or 1)
    seconds = time.monotonic() - started
    print(f"{'wrote' if written else 'reused'} {args.photos} photos in {input_dir} ({seconds:.1f} s)", flush=True)
    size_mb = sum(path.stat().st_size for path in input_dir.rglob("*.jpg")) / 1e6
    return {"folder": str(input_dir), "photos": args.photos, "reused": not written, "size_mb": round(size_mb, 1)}


def run_bulk(command: list[str], output_dir: Path, log_path: Path) -> dict:
    """Run the tool on an emptied output folder, timed from just before its process starts."""
    shutil.rmtree(output_dir, ignore_errors=True)  # else the tool skips every output an earlier run wrote
    print(f"running: {shlex.join(command)}\n  (log: {log_path})", flush=True)
    with open(log_path, "wb") as log, CpuBusySampler() as cpu, GpuBusySampler() as gpu:
        started_at, started = time.time(), time.monotonic()
        exit_code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        wall_s = time.monotonic() - started
    summary_path = output_dir / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    timing = steady_state(output_completion_times(output_dir, OUTPUT_SUFFIX, started_at))
    overall = timing["completed"] / wall_s if wall_s > 0 else None
    return {"command": shlex.join(command), "log": str(log_path), "exit_code": exit_code, "wall_s": round(wall_s, 2),
            "images_per_s_overall": round(overall, 3) if overall is not None else None, "timing": timing,
            "tool_summary": summary, "cpu": cpu.summary(), "gpu": gpu.summary()}


def human_summary(mode: str, run: dict, comparison: dict | None) -> str:
    timing, cpu = run["timing"], run["cpu"]
    steady = timing["steady_images_per_s"]
    line = (f"{mode}: {timing['completed']} images in {run['wall_s']} s, exit {run['exit_code']}; "
            f"{run['images_per_s_overall']} img/s overall, {steady} img/s steady (p10-p90); "
            f"first output after {timing['first_output_s']} s; CPU busy {cpu['cpu_busy_mean']} of {cpu['cpus']}")
    if comparison is not None:
        worst = comparison["worst"]
        line += (f"; vs the service ({worst['compared']} compared, {worst['errors']} errors): worst max |alpha diff| "
                 f"{worst['max_abs_diff']}, worst mean {worst['mean_abs_diff']}, "
                 f"worst fraction > {comparison['tolerance']}: {worst['fraction_over_tolerance']}")
    return line


def main() -> int:
    args = parse_args()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_bulk_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    input_dir, output_dir = work_dir / "in", work_dir / f"out-{args.mode}"
    record: dict = run_record(mode=args.mode, inputs=prepare_inputs(args, input_dir))
    record["run"] = run_bulk(bulk_command(args, input_dir, output_dir), output_dir,
                             work_dir / f"bulk-{args.mode}.log")
    comparison = None
    if args.compare_url:
        relatives = pick_evenly(sample_photo_folder_paths(args.photos), args.compare_count)
        comparison = compare_with_service(args.compare_url, input_dir, output_dir, relatives,
                                          output_suffix=OUTPUT_SUFFIX)
        record["compare"] = comparison
    elif args.compare_dir:
        relatives = pick_evenly(sample_photo_folder_paths(args.photos), args.compare_count)
        comparison = compare_with_folder(args.compare_dir, output_dir, relatives, output_suffix=OUTPUT_SUFFIX)
        record["compare"] = comparison
    record["checks"] = checks(args.photos, record["run"], comparison)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(human_summary(args.mode, record["run"], comparison), flush=True)
    failed = [name for name, held in record["checks"].items() if not held]
    if failed:
        print(f"not a valid run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def checks(photos: int, run: dict, comparison: dict | None) -> dict[str, bool]:
    """What makes the run's figures stand: every photo written (a run killed or failing part-way still has a steady
    rate), the tool's own exit status, and masks within MAX_MEAN_ALPHA_DIFF of the reference's on every photo
    compared (none unreadable)."""
    held = {"every_photo_written": run["timing"]["completed"] == photos, "tool_exit_0": run["exit_code"] == 0}
    if comparison is not None:
        worst = comparison["worst"]
        held["masks_compared_without_errors"] = worst["errors"] == 0 and worst["compared"] > 0
        mean = worst["mean_abs_diff"]
        held["masks_within_bound"] = mean is not None and mean <= MAX_MEAN_ALPHA_DIFF
    return held


if __name__ == "__main__":
    sys.exit(main())
