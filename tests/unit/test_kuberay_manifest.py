"""deploy/rayservice.yaml runs the shipped application config on KubeRay, with pods sized as that config asks, and
deploy/Dockerfile installs what the tests install."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from serve_app import __version__
from serve_app.serve_config import deployment, read_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "rayservice.yaml"
PROD = ROOT / "configs" / "prod.yaml"


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU quantity ("16", "500m", 2) in CPUs."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.fixture(scope="module")
def service() -> dict:
    documents = [document for document in yaml.safe_load_all(MANIFEST.read_text()) if document]
    (rayservice,) = [document for document in documents if document["kind"] == "RayService"]
    return rayservice


@pytest.fixture(scope="module")
def cluster(service: dict) -> dict:
    return service["spec"]["rayClusterConfig"]


@pytest.fixture(scope="module")
def gpu_group(cluster: dict) -> dict:
    (group,) = cluster["workerGroupSpecs"]
    return group


def container(spec: dict) -> dict:
    (only,) = spec["template"]["spec"]["containers"]
    return only


def container_env(spec: dict) -> dict[str, str | None]:
    """The container's environment variables by name (None for those taken from elsewhere, e.g. a secret)."""
    return {item["name"]: item.get("value") for item in container(spec)["env"]}


def test_serve_config_is_the_shipped_config(service: dict) -> None:
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == read_config(PROD), (
        "deploy/rayservice.yaml's serveConfigV2 differs from configs/prod.yaml: copy the file into it")


def test_the_head_runs_no_replicas_and_has_no_gpu(cluster: dict) -> None:
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    resources = container(head)["resources"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})
    assert {port["containerPort"] for port in container(head)["ports"]} >= {6379, 8265, 8000}


def test_each_gpu_pod_holds_one_model_replica_and_the_cpus_its_ingress_needs(gpu_group: dict) -> None:
    config = read_config(PROD)
    remover = deployment(config, "BackgroundRemover")
    ingress = deployment(config, "Ingress")
    resources = container(gpu_group)["resources"]
    assert resources["requests"] == resources["limits"], "requests and limits differ: the pod could be squeezed"
    gpus = int(resources["limits"]["nvidia.com/gpu"])
    assert gpus == 1 and remover["ray_actor_options"]["num_gpus"] == 1  # one model replica per pod
    cpus = quantity(resources["limits"]["cpu"])
    policy = ingress["autoscaling_config"]["policy"]["policy_kwargs"]
    assert policy["model_replica_cpus"] == remover["ray_actor_options"]["num_cpus"]
    assert policy["cpus_per_replica"] == ingress["ray_actor_options"]["num_cpus"]
    spare = cpus - gpus * policy["model_replica_cpus"] - policy["reserved_cpus"]
    ingress_replicas = spare // policy["cpus_per_replica"]
    assert ingress_replicas >= 1, f"a {cpus:g}-CPU pod leaves no CPU for an ingress replica"


def test_the_gpu_group_scales_within_the_model_deployments_bounds(gpu_group: dict) -> None:
    scaling = deployment(read_config(PROD), "BackgroundRemover")["autoscaling_config"]
    assert 1 <= gpu_group["minReplicas"] <= gpu_group["replicas"] <= gpu_group["maxReplicas"]
    assert scaling["min_replicas"] <= gpu_group["minReplicas"]
    assert gpu_group["maxReplicas"] <= scaling["max_replicas"]


def test_gpu_pods_are_ready_on_readyz_at_the_serve_port(gpu_group: dict) -> None:
    probe = container(gpu_group)["readinessProbe"]["httpGet"]
    assert probe == {"path": "/readyz", "port": read_config(PROD)["http_options"]["port"]}


def test_a_gpu_pod_that_goes_is_drained_with_time_for_every_replica_to_finish(gpu_group: dict) -> None:
    """On SIGTERM Ray drains the pod's node for RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S. Serve stops a replica that
    could not move at that deadline less its graceful_shutdown_timeout_s, so the drain must outlast the longest of
    them; Kubernetes kills the pod at terminationGracePeriodSeconds, so that must outlast the drain."""
    env = container_env(gpu_group)
    drain_s = float(env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"])
    config = read_config(PROD)
    graceful_s = max(deployment(config, name)["graceful_shutdown_timeout_s"]
                     for name in ("BackgroundRemover", "Ingress"))
    assert graceful_s < drain_s < gpu_group["template"]["spec"]["terminationGracePeriodSeconds"]


def test_gpu_pods_share_the_compile_cache_and_the_batch_results(service: dict, gpu_group: dict) -> None:
    env = container_env(gpu_group)
    mounts = [mount["mountPath"] for mount in container(gpu_group)["volumeMounts"]]
    for name in ("SERVE_APP_COMPILE_CACHE", "SERVE_APP_RESULT_DIR", "HF_HOME"):
        assert any(env[name].startswith(mount + "/") for mount in mounts), f"{name} is not on a shared volume"
    claims = [document for document in yaml.safe_load_all(MANIFEST.read_text())
              if document and document["kind"] == "PersistentVolumeClaim"]
    assert [claim["spec"]["accessModes"] for claim in claims] == [["ReadWriteMany"]]


def test_every_pod_runs_this_versions_image(cluster: dict, gpu_group: dict) -> None:
    images = {container(cluster["headGroupSpec"])["image"], container(gpu_group)["image"]}
    assert images == {f"serve-app:{__version__}"}
    assert f"serve-app:{__version__}" in (ROOT / "deploy" / "Dockerfile").read_text()


def test_the_image_installs_with_the_tests_lock() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "--constraint $(LOCK)" in makefile and "LOCK := constraints.txt" in makefile
    install = re.search(r"^RUN pip install .*$", dockerfile, re.MULTILINE)
    assert install is not None and '--constraint constraints.txt ".[s3]"' in install.group(0)
    assert "COPY pyproject.toml constraints.txt" in dockerfile


def test_a_full_gpu_group_gets_every_ingress_replica_its_cpus_hold(gpu_group: dict) -> None:
    # The Ingress policy sizes to the cluster's CPUs; max_replicas below that would starve the last pods' GPUs.
    ingress = deployment(read_config(PROD), "Ingress")
    policy = ingress["autoscaling_config"]["policy"]["policy_kwargs"]
    cpus = quantity(container(gpu_group)["resources"]["limits"]["cpu"])
    pods = gpu_group["maxReplicas"]
    capacity = (pods * (cpus - policy["model_replica_cpus"]) - policy["reserved_cpus"]) // policy["cpus_per_replica"]
    assert ingress["autoscaling_config"]["max_replicas"] >= capacity


def test_only_gpu_pods_that_are_ready_take_traffic_and_keys_come_from_a_secret(service: dict, gpu_group: dict) -> None:
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    env = {item["name"]: item for item in container(gpu_group)["env"]}
    secret = env["SERVE_APP_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True  # no Secret: no keys, as with `serve run`
