"""Time the PNG encoder candidates on RGBA cut-outs of synthetic photos (see scripts/harness/png_encoders.py).

    python scripts/bench_png.py --sizes 1500x1500,3000x2000 --out docs/benchmarks/png.json
"""

import argparse
import json

import numpy as np

from harness.photos import synthetic_photo
from harness.png_encoders import candidates, measure
from harness.run_record import run_record


def cutout(width: int, height: int) -> np.ndarray:
    """A photo with an opaque centre and a transparent border, the shape of a typical result."""
    rgb = np.asarray(synthetic_photo(width, height, np.random.default_rng(0)))
    alpha = np.zeros((height, width), np.uint8)
    alpha[height // 6 : -height // 6, width // 6 : -width // 6] = 255
    return np.dstack([rgb, alpha])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1500x1500,3000x2000")
    parser.add_argument("--threads", type=int, default=8, help="threads for the striped encoder's parallel run")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        pixels = cutout(width, height)
        for name, encoder in candidates(args.threads).items():
            row = {"size": size, "encoder": name, **measure(encoder, pixels)}
            print(json.dumps(row), flush=True)
            results.append(row)
    record = run_record(results=results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
