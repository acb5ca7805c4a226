"""Write the tiny test model (Hugging Face remote-code layout) to OUT_DIR.

    python scripts/make_tiny_model.py OUT_DIR
"""

import argparse

from serve_app.tiny_model import write_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to create (existing files of the same name are replaced)")
    out = write_tiny_model(parser.parse_args().out_dir)
    print(f"wrote tiny model to {out}")


if __name__ == "__main__":
    main()
