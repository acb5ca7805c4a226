"""Parameters of the rembg and remove.bg routes and the native options: defaults, and the errors a client gets for
each mistake, in each API's own shape."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from serve_app import compose
from serve_app.compat import rembg, removebg
from serve_app.compat.rembg import RembgError
from serve_app.compat.removebg import RemoveBgError
from serve_app.compose import Length, Placement, Rendered
from serve_app.errors import ApiError, InvalidOption, Overloaded, UpstreamError
from serve_app.options import OutputOptions, parse_options

URL = {"image_url": "https://example.com/photo.jpg"}
SERVED = ("birefnet-general",)


def parse_removebg(fields: dict[str, Any], files: dict[str, bytes] | None = None,
                   accept: str = "*/*") -> removebg.RemoveBgRequest:
    return removebg.parse(fields, files or {}, accept=accept)


def removebg_error(fields: dict[str, Any], files: dict[str, bytes] | None = None) -> RemoveBgError:
    with pytest.raises(RemoveBgError) as caught:
        parse_removebg(fields, files)
    error = caught.value
    (entry,) = error.to_body()["errors"]
    assert entry == {"title": error.title, "code": error.code, "detail": error.message} and entry["title"]
    return error


# --- remove.bg: defaults and accepted values -----------------------------------------------------------


def test_removebg_defaults_are_a_preview_png() -> None:
    request = parse_removebg(URL)
    layout = request.layout
    assert (layout.format, layout.channels, layout.max_pixels) == ("png", "rgba", 250_000)
    assert (layout.crop, layout.roi, layout.placement, layout.bg_color) == (False, None, Placement(), None)
    assert (request.image_url, request.image_file, request.json_answer) == (URL["image_url"], None, False)
    assert (request.type, request.result_type) == ("auto", "other")


@pytest.mark.parametrize(
    ("fields", "files", "fmt"),
    [({"bg_color": "81d4fa"}, {}, "jpg"), ({"bg_color": "81d4fa77"}, {}, "png"),
     ({"bg_image_url": "https://example.com/bg.jpg"}, {}, "jpg"), ({}, {"bg_image_file": b"picture"}, "jpg"),
     ({"bg_color": "81d4fa", "channels": "alpha"}, {}, "png"), ({"bg_color": "81d4fa", "format": "webp"}, {}, "webp")],
    ids=["opaque-colour", "translucent-colour", "picture-url", "picture-file", "mask-only", "explicit"],
)
def test_removebg_auto_format_is_jpeg_only_without_transparency(fields: dict, files: dict, fmt: str) -> None:
    assert parse_removebg({**URL, **fields}, files).layout.format == fmt


@pytest.mark.parametrize(
    ("size", "fmt", "max_pixels"),
    [("preview", "png", 250_000), ("small", "png", 250_000), ("regular", "jpg", 250_000),
     ("medium", "png", 1_500_000), ("hd", "png", 4_000_000), ("full", "png", 10_000_000),
     ("auto", "png", 10_000_000), ("4k", "jpg", 25_000_000), ("full", "zip", 25_000_000),
     ("50MP", "jpg", 50_000_000), ("50MP", "png", 10_000_000)],  # remove.bg keeps a PNG to 10 MP
)
def test_removebg_sizes_limit_the_pixels(size: str, fmt: str, max_pixels: int) -> None:
    assert parse_removebg({**URL, "size": size, "format": fmt}).layout.max_pixels == max_pixels


def test_removebg_reads_an_upload_and_base64() -> None:
    assert parse_removebg({}, {"image_file": b"bytes"}).image_file == b"bytes"
    encoded = base64.b64encode(b"\x89PNG more bytes").decode()
    assert parse_removebg({"image_file_b64": encoded}).image_file == b"\x89PNG more bytes"


@pytest.mark.parametrize(
    ("text", "rgba"),
    [("81d4fa", (0x81, 0xD4, 0xFA, 255)), ("fff", (255, 255, 255, 255)), ("81d4fa77", (0x81, 0xD4, 0xFA, 0x77)),
     ("#81D4FA", (0x81, 0xD4, 0xFA, 255)), ("green", (0, 128, 0, 255)), ("Red", (255, 0, 0, 255)),
     ("rgb(0,128,255)", (0, 128, 255, 255))],
)
def test_removebg_colours(text: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_removebg({**URL, "bg_color": text}).layout.bg_color == rgba


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [({"add_shadow": "false"}, True), ({"add_shadow": False}, True), ({"shadow_type": "none"}, True),
     ({"semitransparency": "true"}, True), ({"semitransparency": True}, True), ({"add_shadow": ""}, True),
     ({"add_shadow": "true"}, False), ({"add_shadow": True}, False), ({"shadow_type": "drop"}, False),
     ({"semitransparency": "false"}, False), ({"shadow_opacity": "50"}, False)],
)
def test_removebg_options_it_does_not_implement_are_taken_only_when_they_ask_for_nothing(fields: dict,
                                                                                        accepted: bool) -> None:
    if accepted:
        parse_removebg({**URL, **fields})
    else:
        error = removebg_error({**URL, **fields})
        assert (error.status, error.code) == (400, "invalid_parameters")
        assert next(iter(fields)) in error.message and "not supported" in error.message


def test_removebg_layout_options() -> None:
    layout = parse_removebg({**URL, "crop": "true", "crop_margin": "10%", "roi": "0 0 50% 100px", "scale": "50%",
                             "position": "25% 75%", "channels": "alpha", "type": "car", "type_level": "2"}).layout
    assert layout.crop and layout.crop_margin == Length(10, True)
    assert layout.roi == (Length(0, False), Length(0, False), Length(50, True), Length(100, False))
    assert layout.placement == Placement(scale=0.5, position=(0.25, 0.75))
    assert layout.channels == "alpha"


@pytest.mark.parametrize(
    ("scale", "position", "placement"),
    [("original", "original", Placement()), ("10%", "", Placement(scale=0.1)),
     ("", "center", Placement(position=(0.5, 0.5))), ("100%", "0%", Placement(scale=1.0, position=(0.0, 0.0))),
     (None, "100% 0%", Placement(position=(1.0, 0.0)))],
)
def test_removebg_scale_and_position(scale: str | None, position: str, placement: Placement) -> None:
    fields = {**URL, "position": position} | ({} if scale is None else {"scale": scale})
    assert parse_removebg(fields).layout.placement == placement


@pytest.mark.parametrize(("accept", "json_answer"), [
    ("application/json", True), ("Application/JSON; q=1", True), ("image/*", False), ("", False),
    ("application/json, text/plain, */*", False),  # axios's default, as remove.bg's sample sends it: the image
    ("application/json, */*;q=0.8", True), ("image/png;q=0.5, application/json", True),
    ("application/json;q=0.5, image/png", False), ("application/json;q=bad", False)])
def test_removebg_answers_json_when_accepted(accept: str, json_answer: bool) -> None:
    assert parse_removebg(URL, accept=accept).json_answer is json_answer


def test_removebg_type_is_echoed() -> None:
    assert parse_removebg({**URL, "type": "product"}).result_type == "product"


# --- remove.bg: errors ---------------------------------------------------------------------------------


def test_removebg_without_an_image_says_how_to_send_one() -> None:
    error = removebg_error({"size": "full"})
    assert (error.status, error.code) == (400, "missing_source")
    assert all(name in error.message for name in ("image_file", "image_file_b64", "image_url"))


@pytest.mark.parametrize(
    ("fields", "files", "words"),
    [(URL | {"image_file_b64": "aGVsbG8="}, {}, ["exactly one", "image_file_b64", "image_url"]),
     (URL, {"image_file": b"x"}, ["exactly one", "image_file", "image_url"]),
     ({"image_file_b64": "not base64!"}, {}, ["image_file_b64", "base64"]),
     ({"image_file_b64": "aGVsbG8"}, {}, ["base64"]),
     (URL | {"frobnicate": "1"}, {}, ["frobnicate", "unknown"]),
     (URL, {"extra_file": b"x"}, ["extra_file", "unknown"]),
     (URL | {"size": "huge"}, {}, ["size", "huge"]),
     (URL | {"format": "gif"}, {}, ["format", "gif"]),
     (URL | {"channels": "rgb"}, {}, ["channels", "rgb"]),
     (URL | {"type": "cat"}, {}, ["type", "cat"]),
     (URL | {"type_level": "3"}, {}, ["type_level", "3"]),
     (URL | {"crop": "maybe"}, {}, ["crop", "true or false"]),
     (URL | {"bg_color": "not-a-colour"}, {}, ["bg_color"]),
     (URL | {"bg_color": "12345"}, {}, ["bg_color"]),
     (URL | {"bg_color": "ggg"}, {}, ["bg_color"]),
     # Pillow reads these without clamping; a colour channel over 255 would fail only after the model ran
     (URL | {"bg_color": "rgb(300,0,0)"}, {}, ["bg_color", "rgb(300,0,0)"]),
     (URL | {"bg_color": "hsv(400,200%,200%)"}, {}, ["bg_color"]),
     (URL | {"bg_color": "rgb(99999999999999999999999,1,1)"}, {}, ["bg_color"]),
     (URL | {"bg_image_url": "https://example.com/bg.jpg"}, {"bg_image_file": b"x"}, ["bg_image_url", "bg_image_file"]),
     (URL | {"bg_color": "red"}, {"bg_image_file": b"x"}, ["bg_color", "bg_image_file"]),  # the picture hid it
     (URL | {"bg_color": "fff", "bg_image_url": "https://example.com/bg.jpg"}, {}, ["bg_color", "bg_image_url"]),
     (URL | {"roi": "0 0 10"}, {}, ["roi", "four values"]),
     (URL | {"roi": "0 0 10em 10px"}, {}, ["roi"]),
     (URL | {"roi": "a b c d"}, {}, ["roi"]),
     (URL | {"roi": "0 0 " + "9" * 400 + " 10"}, {}, ["roi", "at most"]),  # a float that overflows to inf
     (URL | {"roi": "0 0 " + "9" * 320 + "% 10"}, {}, ["roi", "at most"]),
     ({"image_url": 123}, {}, ["image_url", "string"]),  # JSON bodies carry any type
     ({"image_file_b64": "aGk=", "bg_image_url": ["https://example.com/bg.jpg"]}, {}, ["bg_image_url", "string"]),
     ({"image_file": "photo.png"}, {}, ["image_file", "file upload", "image_url"]),  # curl -F without the @
     (URL | {"bg_image_file": "bg.png"}, {}, ["bg_image_file", "file upload", "bg_image_url"]),
     (URL | {"crop_margin": "501px"}, {}, ["crop_margin", "500px"]),
     (URL | {"crop_margin": "51%"}, {}, ["crop_margin", "50%"]),
     (URL | {"crop_margin": "lots"}, {}, ["crop_margin"]),
     (URL | {"scale": "5%"}, {}, ["scale", "10%", "100%"]),
     (URL | {"scale": "101%"}, {}, ["scale"]),
     (URL | {"scale": "50"}, {}, ["scale"]),
     (URL | {"position": "left"}, {}, ["position"]),
     (URL | {"position": "101%"}, {}, ["position"]),
     (URL | {"position": "10% 20% 30%"}, {}, ["position"])],
)
def test_removebg_parameter_errors_are_400_naming_the_problem(fields: dict, files: dict, words: list[str]) -> None:
    error = removebg_error(fields, files)
    assert (error.status, error.code) == (400, "invalid_parameters")
    assert all(word in error.message for word in words), error.message


@pytest.mark.parametrize(("margin", "pixels"), [("500px", 500), ("50%", None), ("0", 0)])
def test_removebg_margins_up_to_the_limit_are_taken(margin: str, pixels: int | None) -> None:
    layout = parse_removebg({**URL, "crop": "true", "crop_margin": margin}).layout
    if pixels is not None:
        assert layout.crop_margin.pixels(1000) == pixels
    else:
        assert layout.crop_margin == Length(50, True)


def test_removebg_margins_per_side() -> None:
    two = parse_removebg({**URL, "crop": "true", "crop_margin": "10px 5%"}).layout.crop_margin
    assert two == (Length(10, False), Length(5, True), Length(10, False), Length(5, True))  # top right bottom left
    four = parse_removebg({**URL, "crop": "true", "crop_margin": "1px 2px 3px 4px"}).layout.crop_margin
    assert [side.pixels(100) for side in four] == [1, 2, 3, 4]
    error = removebg_error({**URL, "crop_margin": "1px 2px 3px"}, {})
    assert error.status == 400 and "one, two or four" in error.message


def test_removebg_base64_may_be_wrapped_in_lines() -> None:
    data = bytes(range(256)) * 3
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, as the base64 command writes them
    assert "\n" in wrapped
    assert parse_removebg({"image_file_b64": wrapped}).image_file == data


# --- remove.bg: the service's own errors and the JSON answer -------------------------------------------


def test_a_missing_key_is_remove_bgs_403() -> None:
    error = removebg.from_api_error(ApiError("no key", status=401, code="unauthorized"))
    assert (error.status, error.code, error.message) == (403, "auth_failed", "no key")


def test_busy_is_remove_bgs_429_with_retry_after() -> None:
    error = removebg.from_api_error(Overloaded("busy", headers={"Retry-After": "2"}))
    assert (error.status, error.code, error.headers) == (429, "rate_limit_exceeded", {"Retry-After": "2"})


def test_client_errors_become_400_keeping_the_code() -> None:
    error = removebg.from_api_error(InvalidOption("roi must lie within the image"))
    assert (error.status, error.code, error.message) == (400, "invalid_option", "roi must lie within the image")
    assert error.to_body()["errors"][0]["detail"] == "roi must lie within the image"


def test_server_errors_keep_their_status() -> None:
    error = removebg.from_api_error(UpstreamError("the image URL answered 500"))
    assert (error.status, error.code) == (502, "upstream_error")


def test_remove_bg_errors_pass_through_unchanged() -> None:
    original = removebg.invalid("size must be one of ...")
    assert removebg.from_api_error(original) is original


def test_json_answer_holds_the_image_and_the_box() -> None:
    answer = removebg.json_answer(Rendered(b"\x89PNG data", "image/png", 320, 200, (30, 40, 100, 80)))
    assert answer == {"data": {"result_b64": base64.b64encode(b"\x89PNG data").decode(), "foreground_top": 30,
                               "foreground_left": 40, "foreground_width": 100, "foreground_height": 80}}
    empty = removebg.json_answer(Rendered(b"", "image/png", 320, 200, None))["data"]
    assert [empty[f"foreground_{name}"] for name in ("top", "left", "width", "height")] == [0, 0, 0, 0]


# --- rembg ---------------------------------------------------------------------------------------------


def parse_rembg(params: dict[str, str], query: dict[str, str] | None = None, where: str = "body",
                served: tuple[str, ...] = SERVED) -> rembg.RembgRequest:
    return rembg.parse(params, query or {}, where=where, served=served)


def rembg_problem(params: dict[str, str], query: dict[str, str] | None = None, where: str = "body",
                  served: tuple[str, ...] = SERVED) -> dict:
    with pytest.raises(RembgError) as caught:
        parse_rembg(params, query, where, served)
    assert caught.value.status == 422
    body = caught.value.to_body()
    assert set(body) == {"detail"}
    (problem,) = body["detail"]
    return problem


def test_rembg_defaults() -> None:
    request = parse_rembg({})
    assert request.model is None and not request.refine and not request.only_mask
    assert not request.post_process_mask
    assert (request.foreground_threshold, request.background_threshold, request.erode_size) == (240, 10, 10)
    assert (request.layout.format, request.layout.channels, request.layout.bg_color) == ("png", "rgba", None)


@pytest.mark.parametrize("where", ["query", "body"])
def test_rembg_model_names(where: str) -> None:
    assert parse_rembg({"model": "birefnet-general"}, where=where).model == "birefnet-general"
    not_served = rembg_problem({"model": "u2net"}, where=where)
    assert (not_served["type"], not_served["loc"], not_served["input"]) == ("value_error", [where, "model"], "u2net")
    assert "birefnet-general" in not_served["msg"]
    unknown = rembg_problem({"model": "nope"}, where=where)
    assert (unknown["type"], unknown["loc"]) == ("string_pattern_mismatch", [where, "model"])
    assert unknown["ctx"]["pattern"] == rembg.PATTERN


def test_rembg_with_nothing_served_under_its_names_says_so() -> None:
    problem = rembg_problem({"model": "birefnet-general"}, served=())
    assert "served: none" in problem["msg"]


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("ON", True), ("y", True), ("false", False),
                                             ("0", False), ("no", False), (" off ", False)])
def test_rembg_flags(text: str, value: bool) -> None:
    request = parse_rembg({"a": text, "ppm": text})
    assert (request.refine, request.post_process_mask) == (value, value)
    assert parse_rembg({"om": text}).only_mask is value


@pytest.mark.parametrize("name", ["a", "om", "ppm"])
def test_rembg_flag_errors_name_the_flag(name: str) -> None:
    problem = rembg_problem({name: "maybe"}, where="query")
    assert (problem["type"], problem["loc"], problem["input"]) == ("bool_parsing", ["query", name], "maybe")


def test_rembg_only_the_mask_comes_without_matting() -> None:
    # rembg returns the (post-processed) mask for om before any alpha matting: no colours to estimate either
    soft = np.zeros((60, 60), np.uint8)
    soft[:, :30] = 250  # sure foreground once snapped (above af 240), away from the edge by more than ae 10
    soft[:, 30:34] = 128
    matted = parse_rembg({"a": "true"})
    assert matted.refine and (matted.shape_mask(soft)[20:40, 12:18] == 255).all()
    mask_only = parse_rembg({"a": "true", "om": "true"})
    assert not mask_only.refine and np.array_equal(mask_only.shape_mask(soft), soft)
    # ppm first, then the matting's snap, as rembg runs them
    both = parse_rembg({"a": "true", "ppm": "true"})
    assert np.array_equal(both.shape_mask(soft), matted.shape_mask(parse_rembg({"ppm": "true"}).shape_mask(soft)))


def test_rembg_thresholds_and_erosion() -> None:
    request = parse_rembg({"af": "255", "ab": "0", "ae": "3000"})
    assert (request.foreground_threshold, request.background_threshold, request.erode_size) == (255, 0, 3000)


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [("af", "256", "less_than_equal"), ("ab", "300", "less_than_equal"), ("af", "-1", "greater_than_equal"),
     ("ae", "-3", "greater_than_equal"), ("ae", "2.5", "int_parsing"), ("ab", "ten", "int_parsing")],
)
def test_rembg_integer_errors_are_fastapis(name: str, text: str, kind: str) -> None:
    problem = rembg_problem({name: text})
    assert (problem["type"], problem["loc"], problem["input"]) == (kind, ["body", name], text)
    assert problem["msg"].startswith("Input should be")


def test_rembg_background_colour() -> None:
    assert parse_rembg({}, {"bgc": "0,0,255,128"}).layout.bg_color == (0, 0, 255, 128)
    assert parse_rembg({}, {"bgc": "0,0,255"}).layout.bg_color == (0, 0, 255, 255)  # as Pillow reads three
    assert parse_rembg({}, {"bgc": ""}).layout.bg_color is None
    only_mask = parse_rembg({"om": "true"}, {"bgc": "0,0,255,255"}).layout
    assert (only_mask.channels, only_mask.bg_color) == ("alpha", None)


@pytest.mark.parametrize("text", ["1,2", "0,0,256,0", "a,b,c,d", "-1,0,0,0", "1,2,3,4,5", "#00ff00"])
def test_rembg_background_colour_errors(text: str) -> None:
    problem = rembg_problem({}, {"bgc": text})
    assert (problem["loc"], problem["input"]) == (["query", "bgc"], text)


@pytest.mark.parametrize(("text", "kind"), [("", None), ("{}", None), (" {} ", None), ("{not json", "json_invalid"),
                                            ("[1, 2]", "json_invalid"), ('{"sam_prompt": []}', "value_error")])
def test_rembg_extras(text: str, kind: str | None) -> None:
    if kind is None:
        parse_rembg({}, {"extras": text})
    else:
        problem = rembg_problem({}, {"extras": text})
        assert (problem["type"], problem["loc"]) == (kind, ["query", "extras"])


def test_rembg_string_errors_keep_the_detail_a_string() -> None:
    assert rembg.form_error("the form is broken").to_body() == {"detail": "the form is broken"}
    (missing,) = rembg.missing_field("body", "file").to_body()["detail"]
    assert (missing["type"], missing["loc"]) == ("missing", ["body", "file"])


@pytest.mark.parametrize(("model_id", "names"), [("ZhengPeng7/BiRefNet", ("birefnet-general",)),
                                                 ("ZhengPeng7/BiRefNet_lite/", ("birefnet-general-lite",)),
                                                 ("briaai/RMBG-2.0", ("bria-rmbg",)), ("someone/else", ())])
def test_rembg_names_for_hub_models(model_id: str, names: tuple[str, ...]) -> None:
    assert rembg.names_for_model(model_id) == names


# --- native options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "max_pixels"), [("preview", 250_000), ("Medium", 1_500_000), ("hd", 4_000_000),
                                                  ("full", None), (None, None), ("", None)])
def test_native_size_presets(size: str | None, max_pixels: int | None) -> None:
    options = parse_options(size=size)
    assert options.layout().max_pixels == max_pixels
    assert options.composed is (max_pixels is not None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": "small"}, "size must be one of"), ({"size": "4k"}, "size must be one of"),
     ({"max_size": "0"}, "max_size must be"), ({"max_size": -5}, "max_size must be"),
     ({"max_size": "big"}, "max_size must be"), ({"crop_margin": "501px"}, "crop_margin is at most"),
     ({"crop_margin": "51%"}, "crop_margin is at most"), ({"crop_margin": "wide"}, "crop_margin must look like"),
     ({"crop": "maybe"}, "crop must be true or false"), ({"refine": "2"}, "refine must be true or false")],
)
def test_native_option_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_options(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "composed"),
    [({}, False), ({"format": "webp", "bg_color": "#ffffff", "only_mask": "false"}, False),
     ({"crop_margin": "10px"}, False), ({"format": "jpg"}, True), ({"crop": "true"}, True), ({"size": "hd"}, True),
     ({"max_size": "1"}, True), ({"refine": "on"}, True)],
)
def test_native_options_that_need_composing(kwargs: dict, composed: bool) -> None:
    assert parse_options(**kwargs).composed is composed


def test_native_options_build_the_layout() -> None:
    options = parse_options(format="JPG", bg_color="#102030", crop="true", crop_margin="5%", size="medium",
                            max_size="640", refine="true")
    assert options == OutputOptions(format="jpg", bg_color=(16, 32, 48), crop=True, crop_margin=Length(5, True),
                                    size="medium", max_size=640, refine=True)
    assert options.media_type == "image/jpeg"
    layout = options.layout(jpeg_quality=80, webp_quality=70)
    assert layout == compose.Layout(format="jpg", bg_color=(16, 32, 48, 255), crop=True, crop_margin=Length(5, True),
                                    max_pixels=1_500_000, max_side=640, jpeg_quality=80, webp_quality=70)


def test_native_mask_only_layout() -> None:
    layout = parse_options(only_mask="true", crop_margin="12").layout()
    assert (layout.channels, layout.bg_color, layout.crop_margin) == ("alpha", None, Length(12, False))
