"""The offline pipeline's per-row steps, without Ray: the model gets what the ingress would send, and encode
writes what the API would, transparency included."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
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
    assert row["code"] == "" and (row["height"], row["width"]) == (1, 1)
    # The model sees the colour over white where it is transparent, as from the ingress.
    assert tuple(row["model_image"][0, 0, :3]) != (200, 0, 0)
    outcome = encode_write_row({**row, "mask": np.full((1, 1), 255, np.uint8)}, options=OutputOptions(),
                               webp_quality=90, max_pixels=100)
    assert outcome["code"] == ""
    assert Image.open(tmp_path / "out" / "dot.png").getpixel((0, 0)) == (200, 0, 0, 100)


def test_opaque_and_broken_inputs(tmp_path: Path) -> None:
    opaque, broken = tmp_path / "a.jpg", tmp_path / "b.jpg"
    opaque.write_bytes(encode(red_square(), "JPEG"))
    broken.write_bytes(b"\xff\xd8\xff not really")
    good = decode_row(row_for(opaque, tmp_path / "a.png"), max_pixels=10**6)
    bad = decode_row(row_for(broken, tmp_path / "b.png"), max_pixels=10**6)
    assert good["code"] == "" and good["model_image"].shape[:2] == (200, 320) and not good["reduced"]
    mask = np.random.default_rng(0).integers(0, 256, (200, 320), dtype=np.uint8)
    assert encode_write_row({**good, "mask": mask}, options=OutputOptions(), webp_quality=90,
                            max_pixels=10**6)["code"] == ""
    written = np.asarray(Image.open(tmp_path / "a.png"))
    assert written.shape == (200, 320, 4)
    np.testing.assert_array_equal(written[..., 3], mask)
    colours = np.asarray(Image.open(opaque).convert("RGB"))
    np.testing.assert_array_equal(written[..., :3], np.where(mask[..., None] == 0, 0, colours))
    assert bad["code"] == "invalid_image" and bad["reason"]
    assert encode_write_row({**bad, "mask": np.zeros((1, 1), np.uint8)}, options=OutputOptions(),
                            webp_quality=90, max_pixels=10**6)["code"] == "invalid_image"
    assert not (tmp_path / "b.png").exists()


def test_large_jpegs_go_to_the_model_as_the_ingress_sends_them(tmp_path: Path) -> None:
    """The reduced copy the ingress sends (imaging.reduced_jpeg), so that offline masks match the service's."""
    from serve_app.bulk.offline import model_view
    from serve_app.protocol import ReducedImage

    source = tmp_path / "big.jpg"
    source.write_bytes(encode(Image.new("RGB", (1200, 800), (200, 10, 10)), "JPEG"))
    row = decode_row(row_for(source, tmp_path / "big.png"), max_pixels=10**8, model_input_size=(256, 256))
    assert row["reduced"] and (row["height"], row["width"]) == (800, 1200) and row["model_image"].shape[0] < 800
    batch = {key: np.array([value] if not isinstance(value, np.ndarray) else [None], dtype=object)
             for key, value in row.items()}
    batch["model_image"][0] = row["model_image"]
    view = model_view(batch, 0)
    assert isinstance(view, ReducedImage) and view.size == (800, 1200)
    small = decode_row(row_for(source, tmp_path / "big.png"), max_pixels=10**8, model_input_size=(1024, 1024))
    assert not small["reduced"]  # under twice the model's input: the photo itself


def test_a_file_changed_between_the_model_and_the_cut_out_fails_its_row_only(tmp_path: Path) -> None:
    source = tmp_path / "a.jpg"
    source.write_bytes(encode(red_square(), "JPEG"))
    row = decode_row(row_for(source, tmp_path / "a.png"), max_pixels=10**6)
    mask = np.full((200, 320), 255, np.uint8)
    source.write_bytes(encode(red_square((100, 60)), "JPEG"))  # another size now
    outcome = encode_write_row({**row, "mask": mask}, options=OutputOptions(), webp_quality=90, max_pixels=10**6)
    assert outcome["code"] == "io_error" and "changed" in outcome["reason"]
    source.write_bytes(b"no longer an image")
    outcome = encode_write_row({**row, "mask": mask}, options=OutputOptions(), webp_quality=90, max_pixels=10**6)
    assert outcome["code"] == "unsupported_media_type" and outcome["reason"]
    assert not (tmp_path / "a.png").exists()


def test_a_full_output_marks_the_row_to_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the driver stops the run on this code (the images not done stay pending), where an io_error would be one
    # failure among many, each image's GPU time spent for nothing
    from serve_app.bulk import offline

    source = tmp_path / "a.jpg"
    source.write_bytes(encode(red_square(), "JPEG"))
    row = decode_row(row_for(source, tmp_path / "out" / "a.png"), max_pixels=10**6)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(offline, "write_atomically", full)
    outcome = encode_write_row({**row, "mask": np.full((200, 320), 255, np.uint8)}, options=OutputOptions(),
                               webp_quality=90, max_pixels=10**6)
    assert outcome["code"] == offline.OUTPUT_UNUSABLE and "No space left" in outcome["reason"]
