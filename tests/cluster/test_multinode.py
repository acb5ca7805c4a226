"""The application on a Ray cluster of three nodes on this machine, deployed from a config of configs/prod.yaml's
shape: a head that runs Ray's control plane only, and two worker nodes that each advertise one GPU as a Ray resource
and room for one model replica and one ingress replica. The machine has no GPU: the model replicas run the tiny
model on the CPU.

Every node runs Serve's proxy (`proxy_location: EveryNode`), the workers on ports of their own
(RAY_SERVE_WORKER_PROXY_HTTP_PORT in their environment): nodes that share one address cannot all bind the config's
port, which is also why HAProxy, bound to that port on every node, is off here. A proxy sends a request to its own
node's ingress replica when it has one, so what is sent to a worker's port is cut out on that worker.

Every node has the loopback address 127.0.0.2. The cluster keeps its address file in a folder of its own
(RAY_TMPDIR): a Ray started elsewhere on this machine (the other tiers, `serve run`) never joins it. The tests
share the cluster and run in order: the last ones kill a worker node under load, add another, and run the offline
bulk mode across the nodes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import ray
import yaml
from ray import serve
from ray.cluster_utils import Cluster
from ray.core.generated import autoscaler_pb2
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema
from ray.util.state import list_actors

from harness.service_process import free_port
from serve_app.serve_config import derive_config
from serve_app.tiny_model import write_tiny_model
from tests.helpers import alpha_of, distinct_boxes, environment, serve_directory
from tests.images import assert_mask_matches, encode, expected_alpha, red_square

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "configs" / "prod.yaml"
APP = "background-removal"
ROUTE = "/v1/remove-background"
EDGE_MARGIN = 5  # 320x200 pictures through the tiny model's 256x256 input
SETTLE_S = 180.0  # a deployment on a busy 2-core machine, or the cluster settling after a node died
REQUEST_TIMEOUT_S = 90.0  # a request still open after this counts as hung
WORKER_CPUS = 2  # one model replica (1 CPU) and one ingress replica (1 CPU)
# Every node's address: loopback, and not 127.0.0.1, which Ray's drivers rewrite to the machine's own address.
NODE_IP = "127.0.0.2"


@dataclass
class Worker:
    node: object  # ray._private.node.Node
    port: int  # its proxy's HTTP port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node_id(self) -> str:
        return self.node.node_id  # type: ignore[attr-defined]


@dataclass
class RunningCluster:
    cluster: Cluster
    head_url: str
    workers: list[Worker]
    env: dict[str, str]  # what a process joining this cluster needs in its environment


def add_worker(cluster: Cluster) -> Worker:
    """A worker node with one GPU (a Ray resource only), its proxy on a port of its own."""
    port = free_port()
    with environment({"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(port)}):  # the node's processes inherit it
        node = cluster.add_node(num_cpus=WORKER_CPUS, num_gpus=1, node_ip_address=NODE_IP)
    return Worker(node, port)


def cluster_config(tiny_model_dir: Path, results: Path, port: int) -> dict:
    """configs/prod.yaml with the tiny model on the CPU, replicas sized to the worker nodes, loopback addresses."""
    config = derive_config(PROD, port=port,
                           model={"model_id": str(tiny_model_dir), "input_size": [256, 256], "execution": "eager"},
                           ingress={"result_dir": str(results), "url_allow_networks": ["127.0.0.0/8"]})
    config.pop("controller_options")  # Serve's proxy, see the module's docstring
    config["http_options"]["host"] = "127.0.0.1"
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    remover, ingress = deployments["BackgroundRemover"], deployments["Ingress"]
    remover["ray_actor_options"] = {"num_gpus": 1, "num_cpus": 1}
    ingress["ray_actor_options"] = {"num_cpus": 1}
    ingress["autoscaling_config"]["min_replicas"] = 1
    ingress["autoscaling_config"]["policy"]["policy_kwargs"] = {"model_replica_cpus": 1, "cpus_per_replica": 1,
                                                                "reserved_cpus": 0}
    return config


@pytest.fixture(scope="module")
def running(tiny_model_dir: Path) -> Iterator[RunningCluster]:
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {"RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        with environment(env):
            yield from _running(tiny_model_dir, ray_tmp, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _running(tiny_model_dir: Path, ray_tmp: str, env: dict[str, str]) -> Iterator[RunningCluster]:
    head_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "node_ip_address": NODE_IP, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": free_port()})
    try:
        workers = [add_worker(cluster), add_worker(cluster)]
        ray.init(address=cluster.address, _node_ip_address=NODE_IP, namespace="serve")
        config = cluster_config(tiny_model_dir, Path(ray_tmp) / "results", head_port)
        client = serve_start(http_options=config["http_options"], proxy_location=config["proxy_location"])
        client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
        running = RunningCluster(cluster, f"http://127.0.0.1:{head_port}", workers, {**os.environ, **env})
        wait_until(lambda: replica_states() == {"BackgroundRemover": {"RUNNING": 2}, "Ingress": {"RUNNING": 2}},
                   "both deployments running two replicas")
        for url in [running.head_url] + [worker.url for worker in workers]:
            wait_until(lambda url=url: ready(url), f"{url}/readyz answering 200")
        yield running
    finally:
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
        cluster.shutdown()


def wait_until(condition, what: str, timeout_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}; Serve: {serve.status()}")
        time.sleep(0.5)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def replica_states() -> dict[str, dict[str, int]]:
    application = serve.status().applications.get(APP)
    if application is None:
        return {}
    return {name: dict(deployment.replica_states) for name, deployment in application.deployments.items()}


def replica_nodes(deployment: str) -> list[str]:
    """The node of every live replica of `deployment`."""
    actors = list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return sorted(actor.node_id for actor in actors if actor.class_name == f"ServeReplica:{APP}:{deployment}")


def cut_out(url: str, box: tuple[int, int, int, int], timeout_s: float = REQUEST_TIMEOUT_S) -> httpx.Response:
    return httpx.post(f"{url}{ROUTE}", content=encode(red_square(box=box)), headers={"Content-Type": "image/png"},
                      timeout=timeout_s, trust_env=False)


def assert_cut_out(response: httpx.Response, box: tuple[int, int, int, int]) -> None:
    assert response.status_code == 200, response.text
    assert_mask_matches(alpha_of(response), expected_alpha(box=box), EDGE_MARGIN)


def test_one_model_replica_per_gpu_each_on_its_own_node(running: RunningCluster) -> None:
    assert replica_nodes("BackgroundRemover") == sorted(worker.node_id for worker in running.workers)


def test_ingress_replicas_run_on_both_worker_nodes(running: RunningCluster) -> None:
    assert replica_nodes("Ingress") == sorted(worker.node_id for worker in running.workers)


def test_requests_are_answered_through_every_node(running: RunningCluster) -> None:
    boxes = distinct_boxes(6)
    urls = [running.head_url] + [worker.url for worker in running.workers]
    for index, box in enumerate(boxes):
        assert_cut_out(cut_out(urls[index % len(urls)], box), box)


def test_a_batch_streams_results_that_every_ingress_replica_serves(running: RunningCluster, tmp_path: Path) -> None:
    (tmp_path / "red.png").write_bytes(encode(red_square()))
    first, second = running.workers
    with serve_directory(tmp_path) as images:
        with httpx.stream("POST", f"{first.url}{ROUTE}/batch", json=[f"{images}/red.png"] * 3, timeout=120,
                          trust_env=False) as response:
            assert response.status_code == 200
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["status"] for line in lines] == ["ok"] * 3, lines
    for line in lines:
        # Written by the first worker's ingress; read through each worker's own.
        answers = [httpx.get(f"{worker.url}{line['result']}", timeout=30, trust_env=False) for worker in (first,
                                                                                                            second)]
        assert [answer.status_code for answer in answers] == [200, 200]
        assert answers[0].content == answers[1].content
        assert_mask_matches(alpha_of(answers[0]), expected_alpha(), EDGE_MARGIN)


MAX_REQUESTS_PER_SENDER = 400  # a bound on each sender's loop besides its stop event


@dataclass
class Outcome:
    via: str  # which node's proxy the request went to
    sent_after: bool  # sent after the event the test marks: the kill, or the drain
    box: tuple[int, int, int, int]
    status: int | None = None
    retry_after: str | None = None
    error: str | None = None  # the connection's failure, when there was no answer
    response: httpx.Response | None = None


def send_until(stop: threading.Event, event: threading.Event, via: str, url: str, boxes: list,
               outcomes: list[Outcome]) -> None:
    """Requests one after another until `stop`, cycling through the boxes: a fast sender still has requests to
    send after `event` (the kill, the drain), which each outcome notes. At most MAX_REQUESTS_PER_SENDER."""
    for box in itertools.islice(itertools.cycle(boxes), MAX_REQUESTS_PER_SENDER):
        if stop.is_set():
            return
        outcome = Outcome(via, event.is_set(), box)
        try:
            response = cut_out(url, box)
            outcome.status, outcome.response = response.status_code, response
            outcome.retry_after = response.headers.get("Retry-After")
        except httpx.TimeoutException as error:
            outcome.error = f"hung: {type(error).__name__}"
        except httpx.HTTPError as error:
            outcome.error = type(error).__name__
        outcomes.append(outcome)


def join_senders(senders: list[threading.Thread]) -> None:
    """Wait for senders whose stop event is set; each has at most one request in flight."""
    for sender in senders:
        sender.join(timeout=REQUEST_TIMEOUT_S + 30)
    assert not any(sender.is_alive() for sender in senders), "a request never returned"


def test_a_worker_node_killed_under_load_loses_no_request_and_the_survivor_serves(running: RunningCluster) -> None:
    survivor, doomed = running.workers
    boxes = distinct_boxes(16)
    outcomes: list[Outcome] = []
    stop, killed = threading.Event(), threading.Event()
    senders = [threading.Thread(target=send_until, args=(stop, killed, via, worker.url, boxes[offset::2], outcomes))
               for via, worker in (("survivor", survivor), ("killed", doomed)) for offset in (0, 1)]
    for sender in senders:
        sender.start()
    wait_until(lambda: len(outcomes) >= 4, "four answers before the kill", timeout_s=120)
    running.cluster.remove_node(doomed.node, allow_graceful=False)
    killed.set()
    running.workers = [survivor]  # whatever the assertions below find
    time.sleep(10)  # load on the survivor while the cluster notices the loss
    stop.set()
    join_senders(senders)

    assert not [o for o in outcomes if o.error and o.error.startswith("hung")], "requests hung"
    answered = [o for o in outcomes if o.status is not None]
    assert all(o.status in (200, 503) for o in answered), [(o.via, o.status) for o in answered]
    assert all(o.retry_after for o in answered if o.status == 503)
    for outcome in answered:
        if outcome.status == 200:
            assert_cut_out(outcome.response, outcome.box)
    # Through the surviving node every request got an answer; through the killed one, only the connection was lost.
    assert not [o for o in outcomes if o.via == "survivor" and o.error], "the survivor's proxy lost a request"
    assert any(o.via == "survivor" and o.sent_after and o.status == 200 for o in outcomes), outcomes

    # The survivor keeps serving. Ray's state API lists the lost node's actors as alive until it has noticed the loss.
    wait_until(lambda: replica_nodes("BackgroundRemover") == [survivor.node_id], "the lost node's replica gone")
    # Serve starts a replacement for the lost model replica; the policy, reading one GPU fewer, drops it again
    # rather than leave it waiting for a node that is gone (prod.yaml: no delay on the model deployment's answer).
    wait_until(lambda: "STARTING" not in replica_states()["BackgroundRemover"], "no model replica left waiting",
               timeout_s=60)
    for box in boxes[:3]:
        assert_cut_out(cut_out(survivor.url, box), box)


def test_a_gpu_node_that_joins_gets_a_model_replica_and_serves(running: RunningCluster) -> None:
    joined = add_worker(running.cluster)
    running.workers.append(joined)
    wait_until(lambda: replica_states() == {"BackgroundRemover": {"RUNNING": 2}, "Ingress": {"RUNNING": 2}},
               "a replica of each deployment on the new node, none waiting")
    assert replica_nodes("BackgroundRemover") == sorted(worker.node_id for worker in running.workers)
    wait_until(lambda: ready(joined.url), "the new node's proxy serving")
    box = distinct_boxes(1)[0]
    assert_cut_out(cut_out(joined.url, box), box)


def test_a_node_drained_before_it_goes_loses_no_request(running: RunningCluster) -> None:
    """A third GPU node joins, then is taken out as a KubeRay pod that is deleted is: Ray drains its node (what
    `ray start --block` does on SIGTERM), then it stops. Every request is answered: those sent through the other
    nodes, whose model calls also reach the leaving node's model replica, and those sent through the leaving node
    itself until it holds no replica (killed at once instead, it cuts the requests its proxy and ingress hold: the
    test above)."""
    leaving = add_worker(running.cluster)
    wait_until(lambda: replica_states() == {"BackgroundRemover": {"RUNNING": 3}, "Ingress": {"RUNNING": 3}},
               "a replica of each deployment on the third node")
    assert leaving.node_id in replica_nodes("BackgroundRemover")
    boxes = distinct_boxes(18)
    outcomes: list[Outcome] = []
    stop, stop_leaving, drained = threading.Event(), threading.Event(), threading.Event()
    targets = [(f"staying {index}", worker.url, stop) for index, worker in enumerate(running.workers)]
    senders = [threading.Thread(target=send_until, args=(until, drained, via, url, boxes[index::3], outcomes))
               for index, (via, url, until) in enumerate(targets + [("leaving", leaving.url, stop_leaving)])]
    for sender in senders:
        sender.start()
    wait_until(lambda: {o.via for o in outcomes} >= {"leaving", "staying 0", "staying 1"},
               "an answer through each node before the drain", timeout_s=120)
    # The request Ray's SIGTERM handler sends (ray._private.node), with a deadline of 60 s: under the model
    # replica's graceful_shutdown_timeout_s, so its replica, with no free GPU to move to, stops at once and finishes
    # what it holds.
    accepted, why = ray._raylet.GcsClient(address=running.cluster.address).drain_node(
        leaving.node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "deleted",
        int(time.time() * 1000) + 60_000)
    assert accepted, why
    wait_until(lambda: leaving.node_id not in replica_nodes("BackgroundRemover") + replica_nodes("Ingress"),
               "no replica left on the drained node", timeout_s=60)
    stop_leaving.set()  # as the cluster's load balancer stops sending to a pod that is stopping
    drained.set()
    time.sleep(5)  # load on the two nodes that stay
    stop.set()
    join_senders(senders)
    assert [(o.via, o.status, o.error) for o in outcomes if o.status != 200] == []
    for outcome in outcomes:
        assert_cut_out(outcome.response, outcome.box)
    assert any(o.sent_after for o in outcomes), "no request was sent after the drain"

    running.cluster.remove_node(leaving.node, allow_graceful=True)  # the pod stops once drained
    # Serve asked for a replica in place of each one that left; with the node gone, the policies drop them again.
    wait_until(lambda: not any("STARTING" in states for states in replica_states().values()),
               "no replica left waiting for the node that went", timeout_s=120)
    box = distinct_boxes(1)[0]
    for worker in running.workers:
        assert_cut_out(cut_out(worker.url, box), box)


def slow_tiny_model(out: Path, seconds: float) -> Path:
    """The tiny model with every forward pass taking `seconds` more, as a real model's batch takes its GPU's time.
    Batches then wait for the model actors as in a real run; with the tiny model's milliseconds each batch is done
    before the next arrives, and Ray Data hands every one to the actor on the node that decoded it."""
    write_tiny_model(out)
    modeling = out / "modeling_tiny_segmenter.py"
    forward = "    def forward(self, pixel_values: torch.Tensor):\n"
    code = modeling.read_text()
    assert forward in code
    modeling.write_text(code.replace(forward, f"{forward}        __import__('time').sleep({seconds})\n"))
    return out


def test_offline_bulk_runs_a_model_actor_on_each_gpu_node(running: RunningCluster, tmp_path: Path) -> None:
    serve.delete(APP)  # the service's model replicas hold the GPUs
    wait_until(lambda: not replica_nodes("BackgroundRemover"), "the model replicas gone")
    # and their GPUs given back: the tool starts with the actors it can place, and one would take every batch
    wait_until(lambda: ray.available_resources().get("GPU", 0) >= len(running.workers), "every GPU free")
    # and the killed node's GPU gone from the cluster's totals (Ray's health checks take a while to declare it
    # dead): the tool sizes its pool from those totals, and a pool larger than the free GPUs does not wait for its
    # actors, so the first to load would take every batch
    wait_until(lambda: ray.cluster_resources().get("GPU", 0) == len(running.workers), "only live GPUs counted",
               timeout_s=120)
    photos = tmp_path / "in"
    photos.mkdir()
    for index, box in enumerate(distinct_boxes(24)):
        (photos / f"photo_{index:02d}.png").write_bytes(encode(red_square(box=box)))
    config = tmp_path / "bulk.yaml"
    model = slow_tiny_model(tmp_path / "model", seconds=2.0)
    config.write_text(yaml.safe_dump(cluster_config(model, tmp_path / "results", free_port())))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "serve_app.bulk", "offline", str(photos), str(out), "--config",
                           str(config), "--address", running.cluster.address, "--batch-size", "2"],
                          env=running.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["processed_this_run"] == 24 and summary["failed"] == 0
    nodes = summary["images_by_model_node"]
    assert sorted(nodes) == sorted(worker.node_id for worker in running.workers), nodes
    assert all(count > 0 for count in nodes.values()) and sum(nodes.values()) == 24
