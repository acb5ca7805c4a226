"""The bulk command's offline settings: a Serve config's model settings, with the command line's overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.bulk.__main__ import offline_settings, parse_args

PROD = Path(__file__).resolve().parents[2] / "configs" / "prod.yaml"


def test_offline_takes_the_configs_model_and_limits() -> None:
    model, limits = offline_settings(parse_args(["offline", "in", "out", "--config", str(PROD)]))
    assert (model.model_id, model.execution) == ("ZhengPeng7/BiRefNet", "compiled_graphs")
    assert model.graph_batch_sizes == (1, 8)
    assert limits.max_image_pixels == 50_000_000


def test_command_line_overrides_the_config() -> None:
    args = parse_args(["offline", "in", "out", "--config", str(PROD), "--execution", "cuda_graphs",
                       "--model-id", "import:some.module:build", "--device", "cpu"])
    model, _ = offline_settings(args)
    assert (model.execution, model.model_id, model.device) == ("cuda_graphs", "import:some.module:build", "cpu")
    assert model.graph_batch_sizes == (1, 8)  # everything not overridden still comes from the config


def test_an_unknown_execution_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["offline", "in", "out", "--execution", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err
