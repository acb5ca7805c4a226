"""The offline pipeline's per-row steps, without Ray: decode keeps transparency, encode writes what the API would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from serve_app.bulk.offline import decode_row, encode_write_row
from serve_app.options import OutputOptions
from tests.images import encode, red_square


def row_for(path: Path, target: Path) -> dict:
    return {"source": str(path), "relative": path.name, "target": str(target)}


def test_transparency_survives_even_in_a_one_pixel_image(tmp_path: Path) -> None:
    source = tmp_path / "dot.png"
    source.write_bytes(encode(Image.new("RGBA", (1, 1), (200, 0, 0, 100))))
    row = decode_row(row_for(source, tmp_path / "out" / "dot.png"), max_pixels=100)
    assert row["code"] == "" and row["has_alpha"] and row["alpha"][0, 0] == 100
    outcome = encode_write_row({**row, "mask": np.full((1, 1), 255, np.uint8)}, options=OutputOptions(),
                               webp_quality=90)
    assert outcome["code"] == ""
    assert Image.open(tmp_path / "out" / "dot.png").getpixel((0, 0)) == (200, 0, 0, 100)


def test_opaque_and_broken_inputs(tmp_path: Path) -> None:
    opaque, broken = tmp_path / "a.jpg", tmp_path / "b.jpg"
    opaque.write_bytes(encode(red_square(), "JPEG"))
    broken.write_bytes(b"\xff\xd8\xff not really")
    good = decode_row(row_for(opaque, tmp_path / "a.png"), max_pixels=10**6)
    bad = decode_row(row_for(broken, tmp_path / "b.png"), max_pixels=10**6)
    assert good["code"] == "" and not good["has_alpha"] and good["image"].shape[:2] == (200, 320)
    mask = np.random.default_rng(0).integers(0, 256, (200, 320), dtype=np.uint8)
    assert encode_write_row({**good, "mask": mask}, options=OutputOptions(), webp_quality=90)["code"] == ""
    written = np.asarray(Image.open(tmp_path / "a.png"))
    assert written.shape == (200, 320, 4)
    np.testing.assert_array_equal(written[..., 3], mask)
    colours = np.asarray(Image.open(opaque).convert("RGB"))
    np.testing.assert_array_equal(written[..., :3], np.where(mask[..., None] == 0, 0, colours))
    assert bad["code"] == "invalid_image" and bad["reason"]
    assert encode_write_row({**bad, "mask": np.zeros((1, 1), np.uint8)}, options=OutputOptions(),
                            webp_quality=90)["code"] == "invalid_image"
    assert not (tmp_path / "b.png").exists()


def test_large_jpegs_go_to_the_model_as_the_ingress_sends_them(tmp_path: Path) -> None:
    """The reduced copy the ingress sends (imaging.reduced_jpeg), so that offline masks match the service's."""
    from serve_app.bulk.offline import model_view
    from serve_app.imaging import ReducedImage

    source = tmp_path / "big.jpg"
    source.write_bytes(encode(Image.new("RGB", (1200, 800), (200, 10, 10)), "JPEG"))
    row = decode_row(row_for(source, tmp_path / "big.png"), max_pixels=10**8, model_input_size=(256, 256))
    assert row["reduced"] and row["image"].shape[:2] == (800, 1200) and row["model_image"].shape[0] < 800
    batch = {key: np.array([value] if not isinstance(value, np.ndarray) else [None], dtype=object)
             for key, value in row.items()}
    for key in ("image", "model_image"):
        batch[key][0] = row[key]
    view = model_view(batch, 0)
    assert isinstance(view, ReducedImage) and view.size == (800, 1200)
    small = decode_row(row_for(source, tmp_path / "big.png"), max_pixels=10**8, model_input_size=(1024, 1024))
    assert not small["reduced"]  # under twice the model's input: the photo itself
