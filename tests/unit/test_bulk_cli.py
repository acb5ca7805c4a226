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


@pytest.mark.parametrize(("argv", "message"), [
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--concurrency", "0"], "must be at least 1, got 0"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--retries", "-1"], "must be at least 0, got -1"),
    (["offline", "in", "out", "--batch-size", "eight"], "not a whole number: 'eight'"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--wait-ready", "-1"], "must be 0 or more seconds"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--wait-ready", "nan"], "must be 0 or more seconds"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--timeout", "0"], "must be more than 0 seconds"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--timeout", "-5"], "must be 0 or more seconds"),
    (["client", "in", "out", "--url", "http://127.0.0.1:1", "--timeout", "inf"], "must be 0 or more seconds"),
])
def test_counts_that_cannot_work_are_refused_by_the_parser(argv: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # --concurrency 0 would run no worker and report nothing done as a success
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_missing_input_folder_ends_the_command_before_anything_runs(tmp_path: Path) -> None:
    from serve_app.bulk.__main__ import main

    with pytest.raises(SystemExit, match="error: INPUT .*nope is not a folder"):
        main(["client", str(tmp_path / "nope"), str(tmp_path / "out"), "--url", "http://127.0.0.1:1"])
    assert not (tmp_path / "out").exists()


def test_the_api_key_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ["client", "in", "out", "--url", "http://127.0.0.1:1"]
    monkeypatch.delenv("SERVE_APP_API_KEY", raising=False)
    assert parse_args(client).api_key is None
    monkeypatch.setenv("SERVE_APP_API_KEY", "from-env")
    assert parse_args(client).api_key == "from-env"
    assert parse_args([*client, "--api-key", "given"]).api_key == "given"


def test_an_unreachable_service_ends_the_command_with_its_error(tmp_path: Path) -> None:
    from harness.service_process import free_port
    from serve_app.bulk.__main__ import main
    from tests.images import encode, red_square

    port = free_port()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    with pytest.raises(SystemExit, match=rf"error: the service at http://127.0.0.1:{port} is not ready after 0.2 s "
                                         r"\(Client.*Connect.*\); is it running, and is --url its base URL\?"):
        main(["client", str(tmp_path / "in"), str(tmp_path / "out"), "--url", f"http://127.0.0.1:{port}",
              "--wait-ready", "0.2"])
    assert not (tmp_path / "out" / "_failures.jsonl").exists()


def test_a_finished_job_ends_with_its_summary_without_asking_the_service(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from harness.service_process import free_port
    from serve_app.bulk.__main__ import main
    from serve_app.bulk.layout import write_atomically
    from tests.images import encode, red_square

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jpg").write_bytes(encode(red_square(), "JPEG"))
    write_atomically(str(tmp_path / "out" / "one.png"), b"an earlier run's cut-out")
    # nothing listens on the port: a run that asked the service would end in its error, exit 1
    assert main(["client", str(tmp_path / "in"), str(tmp_path / "out"), "--url", f"http://127.0.0.1:{free_port()}",
                 "--wait-ready", "0.2"]) == 0
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["skipped_already_done"] == 1 and summary["processed_this_run"] == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 0
