"""The model deployment's autoscaling never asks for more replicas than the cluster has GPUs for."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from serve_app.deployments.autoscale import IngressForGpus, OneReplicaPerGpu


def context(running: int, ongoing: float, target_ongoing: float = 16) -> AutoscalingContext:
    config = AutoscalingConfig(min_replicas=1, max_replicas=64, target_ongoing_requests=target_ongoing,
                               upscale_delay_s=0, downscale_delay_s=0)
    return AutoscalingContext(
        deployment_id=DeploymentID(name="BackgroundRemover", app_name="background-removal"),
        deployment_name="BackgroundRemover", app_name="background-removal", current_num_replicas=running,
        target_num_replicas=running, running_replicas=[], total_num_requests=ongoing, total_queued_requests=0.0,
        aggregated_metrics={}, raw_metrics={}, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=64,
        policy_state={}, last_scale_up_time=None, last_scale_down_time=None, current_time=None, config=config)


@pytest.mark.parametrize(("gpus", "gpus_per_replica", "expected"), [(1, 1, 1), (2, 1, 2), (8, 1, 8), (4, 0.5, 8),
                                                                   (0, 1, 1), (3, 2, 1)])
def test_one_replica_per_gpu_the_cluster_has_whatever_the_load(gpus: float, gpus_per_replica: float,
                                                                expected: int) -> None:
    policy = OneReplicaPerGpu(gpus_per_replica=gpus_per_replica, resources=lambda: {"GPU": gpus})
    for running, ongoing in ((1, 80), (4, 0), (expected, 16)):  # a queue for five replicas; none; one replica's
        desired, _ = policy(context(running=running, ongoing=ongoing))
        assert desired == expected


def test_gpus_added_to_the_cluster_count_after_the_refresh_interval() -> None:
    gpus = [1.0]
    policy = OneReplicaPerGpu(refresh_s=0.0, resources=lambda: {"GPU": gpus[0]})
    assert policy(context(running=1, ongoing=0))[0] == 1
    gpus[0] = 3.0
    assert policy(context(running=1, ongoing=0))[0] == 3
    gpus[0] = 2.0  # a node died
    assert policy(context(running=3, ongoing=0))[0] == 2


def test_the_policy_is_accepted_by_serve_config_validation() -> None:
    config = AutoscalingConfig(min_replicas=1, max_replicas=8, policy={
        "policy_function": "serve_app.deployments.autoscale:OneReplicaPerGpu", "policy_kwargs": {"refresh_s": 5}})
    assert config.policy.get_policy() is OneReplicaPerGpu


@pytest.mark.parametrize(("cpus", "gpus", "expected"), [(16, 1, 12), (32, 2, 26), (128, 8, 110), (6, 1, 2),
                                                       (4, 1, 1)])
def test_ingress_beside_gpus_keeps_the_replicas_the_spare_cpus_hold_idle_or_busy(cpus: float, gpus: float,
                                                                              expected: int) -> None:
    policy = IngressForGpus(resources=lambda: {"CPU": cpus, "GPU": gpus})
    assert policy(context(running=2, ongoing=0, target_ongoing=8))[0] == expected
    assert policy(context(running=expected, ongoing=1000, target_ongoing=8))[0] == expected


def test_ingress_without_gpus_scales_by_queue_length_up_to_the_cpus() -> None:
    policy = IngressForGpus(resources=lambda: {"CPU": 16})
    assert policy(context(running=2, ongoing=0, target_ongoing=8))[0] == 0
    assert policy(context(running=2, ongoing=40, target_ongoing=8))[0] == 5
    assert policy(context(running=2, ongoing=1000, target_ongoing=8))[0] == 14


def shipped_policy(deployment: str, policy: object) -> tuple:
    """`policy` as Serve runs it under configs/prod.yaml's autoscaling_config for `deployment`: wrapped by Serve's
    own bounds and delays, which apply to a custom policy's answer too."""
    from ray.serve.autoscaling_policy import _apply_autoscaling_config

    from serve_app.serve_config import deployment as config_deployment
    from serve_app.serve_config import read_config
    from tests.helpers import TINY_CONFIG

    prod = read_config(TINY_CONFIG.with_name("prod.yaml"))
    raw = dict(config_deployment(prod, deployment)["autoscaling_config"])
    raw.pop("policy")
    return _apply_autoscaling_config(policy), AutoscalingConfig(**raw)  # type: ignore[arg-type]


def test_as_shipped_a_lost_gpu_node_is_followed_at_once_not_after_serves_delays() -> None:
    # A replica asked for on a GPU that is gone stays pending ("taken more than 30s to be scheduled").
    resources = {"GPU": 4.0, "CPU": 64.0}
    wrapped, config = shipped_policy("BackgroundRemover", OneReplicaPerGpu(refresh_s=0.0, resources=lambda: resources))

    def decide(policy, policy_config: AutoscalingConfig, running: int) -> int:
        ctx = context(running=running, ongoing=0)
        ctx.config, ctx.target_num_replicas = policy_config, running
        return policy(ctx)[0]

    assert decide(wrapped, config, 4) == 4
    resources.update(GPU=3.0, CPU=48.0)  # a node with a GPU and 16 CPUs died
    assert decide(wrapped, config, 4) == 3
    resources.update(GPU=5.0, CPU=80.0)  # two joined
    assert decide(wrapped, config, 3) == 5


@pytest.mark.parametrize(("gpus", "gpus_per_replica", "expected"), [(1, 0.1, 10), (1, 0.2, 5), (2, 0.1, 20),
                                                                   (1, 0.3, 3)])
def test_fractions_of_a_gpu_count_as_ray_places_them(gpus: float, gpus_per_replica: float, expected: int) -> None:
    # in floats 1.0 // 0.1 is 9: a tenth replica Ray would place was never asked for
    policy = OneReplicaPerGpu(gpus_per_replica=gpus_per_replica, resources=lambda: {"GPU": gpus})
    assert policy(context(running=1, ongoing=0))[0] == expected


def test_model_replicas_are_no_more_than_the_cpus_hold() -> None:
    # eight GPUs with eight CPUs (a container limited to them): four replicas of 2 CPUs can be placed, not eight
    policy = OneReplicaPerGpu(cpus_per_replica=2, resources=lambda: {"GPU": 8, "CPU": 8})
    assert policy(context(running=1, ongoing=0))[0] == 4


@pytest.mark.parametrize(("cpus", "gpus", "nodes", "gpus_per_model_replica", "expected"), [
    (32, 2, 2, 1, 24),  # Ray's own processes on each node: 2 CPUs of each
    (128, 8, 8, 1, 96),
    (16, 1, 1, 0.25, 6),  # four model replicas of 2 CPUs on one GPU
])
def test_ingress_capacity_counts_each_nodes_own_processes_and_every_model_replica(
        cpus: float, gpus: float, nodes: float, gpus_per_model_replica: float, expected: int) -> None:
    policy = IngressForGpus(gpus_per_model_replica=gpus_per_model_replica,
                            resources=lambda: {"CPU": cpus, "GPU": gpus, "cpu_nodes": nodes})
    assert policy(context(running=2, ongoing=0, target_ongoing=8))[0] == expected


def test_a_failed_reading_keeps_the_last_one_instead_of_stopping_serves_control_loop() -> None:
    readings: list[dict | Exception] = [{"GPU": 2.0}, RuntimeError("GCS unavailable"), {"GPU": 3.0}]

    def read() -> dict:
        reading = readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading

    policy = OneReplicaPerGpu(refresh_s=0.0, resources=read)
    assert [policy(context(running=1, ongoing=0))[0] for _ in range(3)] == [2, 2, 3]


def test_before_any_reading_succeeds_the_replicas_stay_as_they_are() -> None:
    # after a controller restart, when the GCS may still be coming back: not down to one replica of each
    def unavailable() -> dict:
        raise RuntimeError("GCS unavailable")

    for policy in (OneReplicaPerGpu(refresh_s=60.0, resources=unavailable),
                   IngressForGpus(refresh_s=60.0, resources=unavailable)):
        assert policy(context(running=8, ongoing=0))[0] == 8
