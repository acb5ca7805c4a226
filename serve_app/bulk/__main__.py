"""python -m serve_app.bulk {client,offline} INPUT OUTPUT [options]

client:  send every image under INPUT to a running service (--url), with bounded concurrency and retries.
offline: run the same job with no service, as a Ray Data pipeline (a local Ray, or a cluster with --address).
Both mirror INPUT's folders under OUTPUT, skip outputs that already exist, list failures in
OUTPUT/_failures.jsonl and write OUTPUT/_summary.json, also when stopped by Ctrl-C (exit status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from serve_app.bulk.client import API_KEY_ENV, ClientSettings, run_client
from serve_app.bulk.layout import Layout, LayoutError, RunStopped, output_unusable, stopped_by_output
from serve_app.errors import ApiError
from serve_app.options import parse_options
from serve_app.serve_config import app_args, read_config
from serve_app.settings import EXECUTIONS, ModelSettings, parse_app_args

INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it


def at_least(lowest: int):
    """An argparse type: an integer no smaller than `lowest`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value
    return parse


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0 (a limit that 0 would turn off)."""
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve_app.bulk", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    client = modes.add_parser("client", help="use a running service")
    offline = modes.add_parser("offline", help="no service: a Ray Data pipeline")
    for sub in (client, offline):
        sub.add_argument("input", help="folder (or fsspec URL) of images, searched recursively")
        sub.add_argument("output", help="folder (or fsspec URL) for the results")
        sub.add_argument("--format", default="png", choices=["png", "webp"])
        sub.add_argument("--only-mask", action="store_true", help="write the grayscale alpha mask only")
        sub.add_argument("--bg-color", help="composite onto #rrggbb instead of transparency")
        sub.add_argument("--model", help="the served model's name (client: the service's default if left out; "
                                         "offline: one of the config's models, its default if left out)")
    client.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    client.add_argument("--concurrency", type=at_least(1), default=64,
                        help="requests in flight (64 keeps one GPU busy; more for more GPUs)")
    client.add_argument("--retries", type=at_least(0), default=5,
                        help="retries per image on 429, 500, 502-504 and connection errors")
    client.add_argument("--timeout", type=positive_seconds, default=300.0, help="seconds per request")
    client.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                        help=f"the service's API key, if it asks for one (default: ${API_KEY_ENV}, which keeps it out "
                             "of the process list)")
    client.add_argument("--wait-ready", type=seconds, default=120.0, metavar="SECONDS",
                        help="how long to wait for the service's /readyz, before the first image and after an "
                             "outage, before stopping with the images not done left pending")
    offline.add_argument("--config", type=Path,
                         help="take the model (--model's, or the default) and limits from this Serve config "
                              "(e.g. configs/prod.yaml)")
    offline.add_argument("--model-id", help="override the model (Hub id, directory or import: path)")
    offline.add_argument("--device", choices=["auto", "cuda", "cpu"])
    offline.add_argument("--execution", choices=EXECUTIONS,
                         help="override the config's (cuda_graphs: no compiling on a GPU kind not seen before)")
    offline.add_argument("--batch-size", type=at_least(1), default=8, help="images per forward pass")
    offline.add_argument("--cpu-actors", type=at_least(1), default=1, help="model actors when the cluster has no GPU")
    offline.add_argument("--address", help="Ray cluster to join ('auto', 'ray://host:10001', 'local'); "
                                           "default: an existing cluster if there is one, else a local Ray")
    return parser.parse_args(argv)


def offline_settings(args: argparse.Namespace):
    raw: dict = {}
    if args.config:
        raw = app_args(read_config(args.config))
    app = parse_app_args(raw)
    try:
        chosen = app.named(args.model) if args.model else app.default
    except ValueError as error:
        raise SystemExit(f"error: --model: {error}") from None
    overrides = {k: v for k, v in (("model_id", args.model_id), ("device", args.device),
                                   ("execution", args.execution)) if v}
    return ModelSettings.model_validate({**chosen.model_dump(), **overrides}), app.ingress


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = parse_options(format=args.format, only_mask=args.only_mask, bg_color=args.bg_color,
                                model=args.model if args.mode == "client" else None)
    except ApiError as error:
        raise SystemExit(f"error: {error.message}") from None
    layout = Layout(args.input, args.output, options.format)
    try:  # both modes plan the work (and raise LayoutError) before any image is sent or Ray starts
        if args.mode == "client":
            settings = ClientSettings(url=args.url, concurrency=args.concurrency, max_retries=args.retries,
                                      timeout_s=args.timeout, api_key=args.api_key, ready_wait_s=args.wait_ready)
            planned = layout.plan()  # before the event loop: a Ctrl-C stops a long listing at once
            summary = asyncio.run(run_client(layout, options, settings, planned))
        else:
            from serve_app.bulk.offline import run_offline  # imports Ray Data only when used

            model, limits = offline_settings(args)
            summary = run_offline(layout, options, model, address=args.address, batch_size=args.batch_size,
                                  cpu_actors=args.cpu_actors, limits=limits)
    except (LayoutError, RunStopped) as error:
        raise SystemExit(f"error: {error}") from None
    except OSError as error:  # OUTPUT full or read-only before the first image (its lock, its job record)
        if not output_unusable(error):
            raise
        raise SystemExit(f"error: {stopped_by_output(f'{type(error).__name__}: {error}')}") from None
    except KeyboardInterrupt:
        print("interrupted: the outputs written so far are kept; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    print(json.dumps(summary, indent=2))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
