"""Time foreground colour estimation per image size on one device (scripts/harness/foreground_cost.py).

    python scripts/bench_foreground.py --device cuda --out foreground.json
    python scripts/bench_foreground.py --device cuda --max-levels 8 --out foreground_8_levels.json
    python scripts/bench_foreground.py --device cpu --sizes 1000x1000
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from harness.foreground_cost import parse_sizes, time_foreground
from serve_app.model.core import device_name, resolve_device
from serve_app.versions import component_versions

SIZES_1_3_6_12_MP = "1000x1000,2000x1500,3000x2000,4000x3000"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--sizes", default=SIZES_1_3_6_12_MP, help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-levels", type=int, help="only the finest N levels (default: all)")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for row in time_foreground(device, parse_sizes(args.sizes), repeats=args.repeats,
                               max_levels=args.max_levels):
        print(json.dumps(row), flush=True)
        rows.append(row)
    record = {"date": time.strftime("%Y-%m-%d"), "command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "device": device_name(device), "cpu_threads": torch.get_num_threads(),
              "versions": component_versions(), "results": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
