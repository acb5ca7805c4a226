"""The naive baseline: one image at a time, CPU preprocessing, fp32, Pillow PNG level 6 (scripts/harness/naive.py).

    python scripts/bench_naive.py --model-id /path/to/hub-layout-dir --photos 20 --out naive.json
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from harness.naive import run_naive
from harness.photos import sample_photo_jpegs
from serve_app.model.core import device_name, resolve_device
from serve_app.model.loading import load_segmentation_module
from serve_app.versions import component_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--photos", type=int, default=20,
                        help="mixed-size JPEGs made from real photos, 640x480 to 3000x2000")
    parser.add_argument("--photo-dir", type=Path, help="scikit-image's sample photos (default: installed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = resolve_device(args.device)
    network = load_segmentation_module(args.model_id)
    photos = sample_photo_jpegs(args.photos, photo_dir=args.photo_dir)
    result = run_naive(network, photos, (args.input_size, args.input_size), device)
    record = {"date": time.strftime("%Y-%m-%d"), "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "device": device_name(device),
        "versions": component_versions(), **result}
    print(json.dumps(record))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
