"""The model deployment's autoscaling never asks for more replicas than the cluster has GPUs for."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from serve_app.deployments.autoscale import OneReplicaPerGpu


def context(running: int, ongoing: float, target_ongoing: float = 16) -> AutoscalingContext:
    config = AutoscalingConfig(min_replicas=1, max_replicas=64, target_ongoing_requests=target_ongoing)
    return AutoscalingContext(
        deployment_id=DeploymentID(name="BackgroundRemover", app_name="background-removal"),
        deployment_name="BackgroundRemover", app_name="background-removal", current_num_replicas=running,
        target_num_replicas=running, running_replicas=[], total_num_requests=ongoing, total_queued_requests=0.0,
        aggregated_metrics={}, raw_metrics={}, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=64,
        policy_state={}, last_scale_up_time=None, last_scale_down_time=None, current_time=None, config=config)


@pytest.mark.parametrize(("gpus", "gpus_per_replica", "expected"), [(1, 1, 1), (2, 1, 2), (8, 1, 5), (4, 0.5, 5),
                                                                   (0, 1, 1), (3, 2, 1)])
def test_a_load_for_five_replicas_asks_for_no_more_than_the_gpus_hold(gpus: float, gpus_per_replica: float,
                                                                      expected: int) -> None:
    policy = OneReplicaPerGpu(gpus_per_replica=gpus_per_replica, gpus=lambda: gpus)
    desired, _ = policy(context(running=1, ongoing=80))  # 80 ongoing at 16 per replica: Serve's policy wants 5
    assert desired == expected


def test_a_light_load_scales_down_as_serve_would() -> None:
    policy = OneReplicaPerGpu(gpus=lambda: 8)
    desired, _ = policy(context(running=4, ongoing=16))
    assert desired == 1


def test_gpus_added_to_the_cluster_count_after_the_refresh_interval() -> None:
    gpus = [1.0]
    policy = OneReplicaPerGpu(refresh_s=0.0, gpus=lambda: gpus[0])
    assert policy(context(running=1, ongoing=80))[0] == 1
    gpus[0] = 3.0
    assert policy(context(running=1, ongoing=80))[0] == 3


def test_the_policy_is_accepted_by_serve_config_validation() -> None:
    config = AutoscalingConfig(min_replicas=1, max_replicas=8, policy={
        "policy_function": "serve_app.deployments.autoscale:OneReplicaPerGpu", "policy_kwargs": {"refresh_s": 5}})
    assert config.policy.get_policy() is OneReplicaPerGpu
