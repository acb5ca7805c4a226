"""Write COUNT photo-like mixed-size JPEGs (640x480 to 3000x2000) in nested folders, for bulk benchmarks.

    python scripts/make_photo_folder.py OUT_DIR --count 2000 --workers 16
"""

import argparse
import os
import time

from harness.photos import write_photo_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.monotonic()
    write_photo_folder(args.out_dir, args.count, workers=args.workers)
    print(f"wrote {args.count} photos to {args.out_dir} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
