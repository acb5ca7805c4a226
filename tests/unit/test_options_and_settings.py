"""Request options and configuration validation: what a user sees when they get one wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.app import build_app
from serve_app.deployments.batching import FORMED_PASSES_MAX
from serve_app.errors import InvalidOption
from serve_app.options import OutputOptions, parse_options, reject_unknown
from serve_app.settings import AppArgs, BatchSettings, parse_app_args, parse_batch_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_default_options_are_rgba_png() -> None:
    assert parse_options() == OutputOptions(format="png", only_mask=False, bg_color=None)


def test_options_parse_strings() -> None:
    options = parse_options(format="WEBP", only_mask="false", bg_color="#102030")
    assert options == OutputOptions(format="webp", only_mask=False, bg_color=(16, 32, 48))
    assert options.media_type == "image/webp"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "gif"}, "format must be one of"),
        ({"only_mask": "maybe"}, "only_mask must be true or false"),
        ({"only_mask": "true", "bg_color": "#000000"}, "cannot be combined"),
    ],
)
def test_invalid_options_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_options(**kwargs)


def test_unknown_option_names_are_rejected_by_name() -> None:
    with pytest.raises(InvalidOption, match="onlymask"):
        reject_unknown(["format", "onlymask"], ["format", "only_mask", "bg_color"])
    reject_unknown(["format"], ["format", "only_mask"])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"model": {"input_siz": 512}}, "args.model.input_siz"),
        ({"model": {"precision": "fp8"}}, "args.model.precision"),
        ({"model": {"input_size": [2, 2]}}, "args.model.input_size"),
        ({"ingress": {"max_upload_bytes": 0}}, "args.ingress.max_upload_bytes"),
        ({"ingress": {"url_allow_networks": ["not-a-network"]}}, "args.ingress.url_allow_networks"),
        ({"ingress": {"device_jpeg_decode": "always"}}, "args.ingress.device_jpeg_decode"),
        ({"modle": {}}, "args.modle"),
        ({"model": {"precision": "bf16", "device": "cpu"}}, "args.model"),  # no bf16 deformable convolution there
    ],
)
def test_config_mistakes_fail_at_build_time_naming_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build_app(raw)


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"max_batch_size": 0}, "user_config.max_batch_size"), ({"max_batch_size": 1025}, "user_config.max_batch_size"),
     ({"batch_wait_s": 1}, "user_config.batch_wait_s")],
)
def test_batch_settings_mistakes_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        parse_batch_settings(raw)


def test_a_batch_cap_far_above_what_fits_is_accepted() -> None:
    # The cap 4x what fits on an H200 (~105 images at 1024x1024): the live limit comes from the probe and splits.
    assert parse_batch_settings({"max_batch_size": 512}).max_batch_size == 512


def test_a_lone_jpeg_is_decoded_on_the_device_by_default_and_never_turns_it_off() -> None:
    assert parse_app_args({}).ingress.device_jpeg_decode == "auto"
    prod = yaml.safe_load((CONFIGS / "prod.yaml").read_text())["applications"][0]["args"]
    assert parse_app_args(prod).ingress.device_jpeg_decode == "auto"
    assert parse_app_args({"ingress": {"device_jpeg_decode": "never"}}).ingress.device_jpeg_decode == "never"


def test_home_in_paths_is_the_users_home_folder() -> None:
    app = parse_app_args({"model": {"model_id": "~/models/birefnet", "compile_cache_dir": "~/cache"},
                          "ingress": {"api_keys_file": "~/keys"}})
    home = str(Path.home())
    assert app.default.model_id == f"{home}/models/birefnet"
    assert str(app.default.compile_cache_dir) == f"{home}/cache" and str(app.ingress.api_keys_file) == f"{home}/keys"


def test_square_input_size_shorthand() -> None:
    assert parse_app_args({"model": {"input_size": 512}}).model.input_size == (512, 512)


@pytest.mark.parametrize("name", ["prod.yaml", "local.yaml", "tiny.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = yaml.safe_load((CONFIGS / name).read_text())
    app = config["applications"][0]
    assert app["import_path"] == "serve_app.app:build_app"
    assert isinstance(parse_app_args(app.get("args")), AppArgs)
    for deployment in app["deployments"]:
        assert deployment["name"] in {"BackgroundRemover", "Ingress"}
        if deployment["name"] == "BackgroundRemover":
            batching = parse_batch_settings(deployment.get("user_config"))
            assert isinstance(batching, BatchSettings)
            # Ray's own condition for batches to fill (it warns otherwise), see batching.py
            assert deployment["max_ongoing_requests"] >= batching.max_batch_size * FORMED_PASSES_MAX


def test_compiled_graphs_refuses_inductors_own_cuda_graphs() -> None:
    # Both would capture the same passes: a config asking for both is told which to drop, before any compile.
    with pytest.raises(ValueError, match="remove triton.cudagraphs from compile_options"):
        parse_app_args({"model": {"execution": "compiled_graphs", "compile_options": {"triton.cudagraphs": True}}})
    model = parse_app_args({"model": {"execution": "compiled_graphs", "compile_options": {"max_autotune": True}}}).model
    assert model.execution == "compiled_graphs"


def test_several_models_the_default_and_their_names() -> None:
    args = parse_app_args({"models": [{"model_id": "ZhengPeng7/BiRefNet"},
                                      {"model_id": "ZhengPeng7/BiRefNet_lite", "resident": False}],
                           "default_model": "birefnet"})
    assert args.model_names == ("birefnet", "birefnet_lite") and args.default.model_id == "ZhengPeng7/BiRefNet"
    replica = args.replica_args()
    assert [entry["model_id"] for entry in replica["models"]] == ["ZhengPeng7/BiRefNet", "ZhengPeng7/BiRefNet_lite"]
    assert parse_app_args({}).default.model_id == "ZhengPeng7/BiRefNet"  # neither model nor models: the default
    # The default goes first to the replica, whatever the order in the file.
    flipped = parse_app_args({"models": [{"model_id": "/m/b"}, {"model_id": "/m/a"}], "default_model": "a"})
    assert [entry["model_id"] for entry in flipped.replica_args()["models"]] == ["/m/a", "/m/b"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"models": [{"model_id": "/m/a"}, {"model_id": "/n/a"}]}, "distinct names"),
    ({"models": [{"model_id": "/m/a"}], "default_model": "b"}, "default_model 'b'"),
    ({"models": [{"model_id": "/m/a", "resident": False}]}, "must be resident"),
    ({"models": [{"model_id": "/m/a"}, {"model_id": "/m/b", "resident": False}], "max_loaded_models": 1},
     "leaves no room"),
    ({"models": [{"model_id": "/m/a", "name": "has space"}]}, "args.models.0.name"),
    ({"models": [{"model_id": "/m/a"}, {"model_id": "/m/b", "attention_precision": "fp32"}]}, "attention_precision"),
    ({"models": [{"model_id": "/m/a"}, {"model_id": "/m/b", "capturable_deform_conv": "grid_sample"}]},
     "capturable_deform_conv"),
    ({"models": [{"model_id": "/m/a"}, {"model_id": "/m/b", "resident": False}], "load_wait_s": 60}, "load_wait_s"),
])
def test_model_lists_that_cannot_work_fail_at_start_up(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_app_args(raw)


def test_model_names_must_be_names_rembg_clients_can_send() -> None:
    # rembg's API refuses any other `model` before the service sees it: a custom alias would never select anything.
    assert parse_app_args({"ingress": {"model_names": ["birefnet-portrait"]}}).ingress.model_names == (
        "birefnet-portrait",)
    with pytest.raises(ValueError, match="'my-model' not among rembg's model names.*birefnet-general"):
        parse_app_args({"ingress": {"model_names": ["birefnet-general", "my-model"]}})


@pytest.mark.parametrize(("origins", "ok"), [(("*",), True), (("https://app.example", "http://127.0.0.1:8080"), True),
                                             (("https://app.example/page",), False), (("app.example",), False)])
def test_cors_origins_are_star_or_a_scheme_and_host(origins: tuple[str, ...], ok: bool) -> None:
    from serve_app.settings import IngressSettings

    if ok:
        assert IngressSettings(cors_allow_origins=origins).cors_allow_origins == origins
    else:
        with pytest.raises(ValueError, match="an origin is"):
            IngressSettings(cors_allow_origins=origins)
