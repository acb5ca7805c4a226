"""Take one node out of a Ray cluster without dropping a request: `python -m serve_app.drain_node [--address ADDR]
[--node-id HEX] [--deadline-s S]`, run on that node (a Kubernetes pod's preStop hook, deploy/rayservice.yaml's GPU
workers) before it is stopped.

A pod that is simply deleted takes its replicas with it: the requests its ingress replicas hold are cut, and model
calls on its model replica are retried once elsewhere. Drained first, it goes quietly:

1. Ray's GCS is told the node will go (reason: preemption, with a deadline). Serve then places no replica there and
   moves each of its replicas: a new one starts on another node where there is room, and the old one stops once the
   new one runs, or once the deadline less its `graceful_shutdown_timeout_s` comes, finishing the requests it holds
   (a model replica with no free GPU elsewhere keeps serving until then). The node's proxy keeps answering.
2. This command waits until no replica is left on the node, printing what is, or until the deadline.

Exit status 0 when the node holds no replica; 1 when the drain was refused (the head node cannot be drained) or the
deadline passed first. The pod's `terminationGracePeriodSeconds` must exceed the deadline.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

import ray
from ray.core.generated import autoscaler_pb2
from ray.util.state import list_actors

# Above the largest graceful_shutdown_timeout_s of configs/prod.yaml (100 s, the ingress): Serve stops a replica that
# could not move at the deadline less that timeout, so a shorter deadline leaves it less than its time to finish.
DEFAULT_DEADLINE_S = 120.0
POLL_S = 1.0
REPLICA_PREFIX = "ServeReplica:"


def log(message: str) -> None:
    print(f"drain_node: {message}", flush=True)


def replicas_on(node_id: str) -> Counter[str]:
    """Serve replicas alive on `node_id`, by deployment (the class name `ServeReplica:<app>:<deployment>`)."""
    actors = list_actors(filters=[("node_id", "=", node_id), ("state", "=", "ALIVE")], detail=True, limit=10000)
    return Counter(actor.class_name.split(":", 2)[-1] for actor in actors
                   if actor.class_name.startswith(REPLICA_PREFIX))


def request_drain(node_id: str, deadline_s: float) -> tuple[bool, str]:
    """Ask the GCS to drain `node_id` within `deadline_s`; (accepted, why not)."""
    # What `ray drain-node` sends (a command Ray keeps hidden, so called here through the same client).
    gcs = ray._private.worker.global_worker.gcs_client  # type: ignore[attr-defined]
    deadline_ms = int((time.time() + deadline_s) * 1000)
    reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")  # type: ignore[attr-defined]
    return gcs.drain_node(node_id, reason, "taken out of the cluster (serve_app.drain_node)", deadline_ms)


def wait_empty(node_id: str, deadline: float, sleep=time.sleep, now=time.monotonic) -> bool:
    """True once `node_id` holds no Serve replica; False if `deadline` (of `now`) passes first."""
    last = None
    while True:
        left = replicas_on(node_id)
        if not left:
            return True
        if left != last:
            log(f"replicas still on the node: {dict(sorted(left.items()))}")
            last = left
        if now() >= deadline:
            return False
        sleep(POLL_S)


def drain(address: str, node_id: str | None, deadline_s: float) -> int:
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as error:
        log(f"no Ray cluster to drain a node of at {address!r}: {error}")
        return 1
    try:
        node_id = node_id or ray.get_runtime_context().get_node_id()
        started = time.monotonic()
        accepted, why = request_drain(node_id, deadline_s)
        if not accepted:
            log(f"the cluster refused to drain node {node_id}: {why}")
            return 1
        log(f"draining node {node_id} (deadline {deadline_s:g} s)")
        try:
            empty = wait_empty(node_id, started + deadline_s)
        except Exception as error:  # noqa: BLE001 - the state API goes through the dashboard, which may be down
            log(f"cannot list the replicas on node {node_id} ({type(error).__name__}: {error}); Serve still moves "
                "them, by the deadline at the latest")
            return 1
        if not empty:
            log(f"the deadline passed with replicas still on node {node_id}")
            return 1
        log(f"node {node_id} holds no replica after {time.monotonic() - started:.1f} s")
        return 0
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.drain_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: the one this node is in)")
    parser.add_argument("--node-id", help="hex ID of the node to drain (default: this one)")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S,
                        help=f"seconds until the node goes (default {DEFAULT_DEADLINE_S:g})")
    args = parser.parse_args(argv)
    if args.deadline_s <= 0:
        parser.error("--deadline-s must be above 0")
    return drain(args.address, args.node_id, args.deadline_s)


if __name__ == "__main__":
    sys.exit(main())
