"""Autoscaling for the model deployment: Serve's own policy, capped at one replica per GPU the cluster has.

Serve's default policy asks for replicas by queue length alone, up to `max_replicas`. On a fixed cluster a replica
beyond its GPUs can never be placed: it stays pending, Serve warns every 30 s that it "has taken more than 30s to
be scheduled", and the batches it was meant to take wait for nothing. This policy never asks for more model
replicas than the cluster's GPUs can hold (at least one, which `min_replicas` already guarantees).

A cluster that adds GPU nodes on demand (KubeRay with its autoscaler) grows only when replicas are pending: there,
leave this policy out of the config, and Serve's default one asks up to `max_replicas`, each pending replica
bringing up a GPU node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


class OneReplicaPerGpu:
    """Serve's queue-length policy, with the replicas it asks for capped at the GPUs the cluster has now.

    Serve builds one instance per deployment from the config's `policy_kwargs` and calls it every control loop;
    the cluster's GPUs are read at most every `refresh_s`, so that added or lost nodes count within seconds.
    """

    def __init__(self, gpus_per_replica: float = 1.0, refresh_s: float = 10.0,
                 gpus: Callable[[], float] = cluster_gpus):
        if gpus_per_replica <= 0:
            raise ValueError("gpus_per_replica must be above 0")
        self.gpus_per_replica = gpus_per_replica
        self.refresh_s = refresh_s
        self._gpus = gpus
        self._placeable = 1
        self._read_at = float("-inf")

    def placeable_replicas(self) -> int:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._placeable = max(1, int(self._gpus() // self.gpus_per_replica))
            self._read_at = now
        return self._placeable

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict]:
        desired, state = replica_queue_length_autoscaling_policy(ctx)
        return min(desired, self.placeable_replicas()), state
