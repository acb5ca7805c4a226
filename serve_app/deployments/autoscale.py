"""Autoscaling policies sized by the cluster's GPUs and CPUs, on top of Serve's own queue-length policy.

Model deployment (`OneReplicaPerGpu`): one replica per GPU the cluster has (at least one), whatever the load.
Serve's default policy asks for replicas by queue length alone, up to `max_replicas`: on a fixed cluster a replica
beyond its GPUs can never be placed (it stays pending, and Serve warns every 30 s that it "has taken more than 30s to
be scheduled"), and a GPU the cluster has sits idle until a queue builds and `upscale_delay_s` passes. A node that
joins brings its GPU into service within `refresh_s`; a node that dies takes its replica with it, and no replacement
is asked for that could not be placed. A cluster that adds GPU nodes on demand (KubeRay with its autoscaler) grows
only when replicas are pending: there, leave both policies out of the config, and Serve's default one asks up to
`max_replicas`, each pending replica bringing up a GPU node (the ingress's own would keep every GPU node busy, and
none would ever be idle enough to remove).

Ingress (`IngressForGpus`): what the GPUs need from the ingress is CPU (decode, composite, PNG encode), not a queue
length. Scaled by queue length alone, the ingress settles below what a busy GPU needs and takes minutes to get
there, and under overload it can ask for replicas no CPU is left for. This policy keeps as many ingress replicas as the
CPUs beside the model replicas can hold whenever the cluster has a GPU to feed, so a load step finds them already
running, and never asks for more than those CPUs hold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import ray
from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext

logger = logging.getLogger(__name__)


CPU_NODES = "cpu_nodes"  # in a reading: how many live nodes have CPUs (each runs Ray's own processes)


def cluster_resources() -> dict[str, float]:
    """The live nodes' resources summed, with CPU_NODES: how many of them have CPUs to give."""
    totals: dict[str, float] = {}
    nodes = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        nodes += resources.get("CPU", 0) > 0
        for name, amount in resources.items():
            totals[name] = totals.get(name, 0.0) + amount
    return {**totals, CPU_NODES: float(nodes)}


def whole(amount: float, per: float) -> int:
    """How many `per` fit in `amount`, as Ray counts fractional resources (to 1e-4): 1 // 0.1 is 9 in floats."""
    return max(0, math.floor(round(amount / per, 4)))


class _ClusterReading:
    """The cluster's resources, read at most every `refresh_s`, so that added or lost nodes count within seconds.
    A reading that fails (the GCS restarting) keeps the last one, and is tried again at the next call: the policy's
    exception would stop Serve's control loop for every application until the reading works again."""

    def __init__(self, refresh_s: float, read: Callable[[], dict[str, float]]):
        self.refresh_s = refresh_s
        self._read = read
        self._resources: dict[str, float] | None = None
        self._read_at = float("-inf")

    def now(self) -> dict[str, float] | None:
        """One reading (all of a policy's figures come from the same one); None until one has succeeded."""
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            try:
                self._resources = dict(self._read())
                self._read_at = now
            except Exception:  # noqa: BLE001 - any failure to read keeps the last reading
                logger.warning("could not read the cluster's resources; keeping the last reading", exc_info=True)
        return self._resources


class OneReplicaPerGpu:
    """As many replicas as the cluster's GPUs hold now (at least one), and, with `cpus_per_replica`, no more than
    its CPUs hold; `min_replicas` and `max_replicas` still bound the result.

    Serve builds one instance per deployment from the config's `policy_kwargs` and calls it every control loop.
    """

    def __init__(self, gpus_per_replica: float = 1.0, cpus_per_replica: float = 0.0, refresh_s: float = 10.0,
                 resources: Callable[[], dict[str, float]] = cluster_resources):
        if gpus_per_replica <= 0:
            raise ValueError("gpus_per_replica must be above 0")
        if cpus_per_replica < 0:
            raise ValueError("cpus_per_replica must be 0 (not counted) or more")
        self.gpus_per_replica = gpus_per_replica
        self.cpus_per_replica = cpus_per_replica
        self.cluster = _ClusterReading(refresh_s, resources)

    def placeable_replicas(self, reading: dict[str, float]) -> int:
        replicas = whole(reading.get("GPU", 0.0), self.gpus_per_replica)
        if self.cpus_per_replica:
            replicas = min(replicas, whole(reading.get("CPU", 0.0), self.cpus_per_replica))
        return max(1, replicas)

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict]:
        reading = self.cluster.now()
        if reading is None:  # nothing read yet: the replicas stay as they are
            return ctx.target_num_replicas, dict(ctx.policy_state or {})
        return self.placeable_replicas(reading), dict(ctx.policy_state or {})


class IngressForGpus:
    """Serve's queue-length policy, kept between a floor for the GPUs and what the cluster's CPUs can hold.

    Capacity is (cluster CPUs - model replicas x `model_replica_cpus` - nodes with CPUs x `reserved_cpus`) /
    `cpus_per_replica`, the model replicas being the GPUs / `gpus_per_model_replica`: every CPU the model replicas
    and Ray's own processes on each node (raylet, proxy, HAProxy) leave free. While the cluster has a GPU to feed,
    that capacity is also the floor; without one, the queue length decides up to it. `min_replicas` and
    `max_replicas` still bound the result.
    """

    def __init__(self, model_replica_cpus: float = 2.0, cpus_per_replica: float = 1.0, reserved_cpus: float = 2.0,
                 gpus_per_model_replica: float = 1.0, refresh_s: float = 10.0,
                 resources: Callable[[], dict[str, float]] = cluster_resources):
        if cpus_per_replica <= 0 or gpus_per_model_replica <= 0:
            raise ValueError("cpus_per_replica and gpus_per_model_replica must be above 0")
        self.model_replica_cpus = model_replica_cpus
        self.cpus_per_replica = cpus_per_replica
        self.reserved_cpus = reserved_cpus
        self.gpus_per_model_replica = gpus_per_model_replica
        self.cluster = _ClusterReading(refresh_s, resources)

    def capacity(self, reading: dict[str, float]) -> int:
        model_replicas = whole(reading.get("GPU", 0.0), self.gpus_per_model_replica)
        nodes = max(1.0, reading.get(CPU_NODES, 1.0))
        spare = reading.get("CPU", 0.0) - model_replicas * self.model_replica_cpus - nodes * self.reserved_cpus
        return max(1, whole(spare, self.cpus_per_replica))

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict]:
        desired, state = replica_queue_length_autoscaling_policy(ctx)
        reading = self.cluster.now()
        if reading is None:  # nothing read yet: the replicas stay as they are
            return ctx.target_num_replicas, state
        capacity = self.capacity(reading)
        floor = capacity if reading.get("GPU", 0.0) else 0
        return min(max(desired, floor), capacity), state
