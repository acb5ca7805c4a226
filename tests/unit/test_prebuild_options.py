"""The prebuild's tasks stand for model replicas: they get the replicas' resources and environment, so that they
compile into the cache the replicas then read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.prebuild import bucket_task_options
from serve_app.serve_config import deployment, derive_config, remover_actor_options
from tests.helpers import TINY_CONFIG

PROD = TINY_CONFIG.with_name("prod.yaml")


def test_the_applications_environment_reaches_the_tasks_under_the_deployments_own() -> None:
    config = derive_config(PROD)
    app = config["applications"][0]
    app["runtime_env"]["env_vars"]["SERVE_APP_COMPILE_CACHE"] = "/mnt/cache"  # where the replicas look
    app["runtime_env"]["env_vars"]["SHARED"] = "from the application"
    remover = deployment(config, "BackgroundRemover")
    remover["ray_actor_options"]["runtime_env"] = {"env_vars": {"SHARED": "from the deployment"}}

    options = bucket_task_options(remover_actor_options(config), 2)
    assert options["num_gpus"] == 0.5 and options["num_cpus"] == remover["ray_actor_options"]["num_cpus"]
    env_vars = options["runtime_env"]["env_vars"]
    assert env_vars["SERVE_APP_COMPILE_CACHE"] == "/mnt/cache"
    assert env_vars["SHARED"] == "from the deployment"


def test_without_an_application_environment_the_options_are_the_deployments() -> None:
    config = derive_config(PROD)
    config["applications"][0].pop("runtime_env")
    assert remover_actor_options(config) == deployment(config, "BackgroundRemover")["ray_actor_options"]


@pytest.mark.parametrize(("argv", "words"), [
    (["--set", "execution"], "--set takes KEY=VALUE, got 'execution'"),
    (["--set", "graph_batch_sizes=[1, 8"], "--set graph_batch_sizes: the value is no YAML"),
    (["--set", "executon=compiled"], "executon"),  # a misspelt setting: the settings' own message, one line
])
def test_a_wrong_override_ends_the_prebuild_in_one_line_before_ray_starts(argv: list[str], words: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from serve_app.prebuild import main

    assert main(["--config", str(TINY_CONFIG), *argv]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and words in line, line


def test_the_prebuilds_check_leaves_out_what_only_the_serving_cluster_has(tmp_path: Path) -> None:
    # a model directory and a key file that only the cluster's nodes hold: the serving check on this machine
    # names them, the prebuild's (which builds on the cluster and reads no keys) does not
    from serve_app.preflight import check

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(derive_config(TINY_CONFIG, model={"model_id": "/models/on-the-nodes"},
                                                   ingress={"api_keys_file": "/etc/serve-app/keys"})))
    cluster = {"RAY_ADDRESS": "ray://127.0.0.1:10001"}  # named, never reached
    assert check(config, cluster, serving=False)[0] == 0
    assert check(config, {}, serving=False) == (1, "there is no model directory /models/on-the-nodes (seen from "
                                                   f"{Path.cwd()})")  # built here: the model must be here
    status, line = check(config, {})
    assert status == 1 and "api_keys_file /etc/serve-app/keys is no file on this machine" in line
