"""Replicas replaced by a redeploy finish the requests they hold: none fails, none is retried, none is killed.

The shared service's running config is deployed again with fewer CPUs for both deployments, which makes Serve
replace the model replica and the ingress replica, while clients keep single-image requests and /batch streams
in flight; then the original config is deployed again, replacing both a second time. Beforehand, slow batching
is set live (no new replicas), so that the replicas being replaced hold calls when they are told to stop. Serve's
logs (scripts/harness/redeploy.py) show the old replicas answering after they were stopped and exiting by
themselves, not killed; the original config, batching included, runs again afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from harness.answers import FAILED, OK, Answer, image_size, judge
from harness.fault import MODEL_DEPLOYMENT, wait_healthy
from harness.memory import service_processes
from harness.overload import ROUTE, send_and_judge
from harness.redeploy import (
    ReplicaStop,
    ServeLogs,
    deploy,
    ray_instance,
    replica_log_lines,
    replica_stops,
    running_applications,
    with_fewer_cpus,
    with_user_config,
)
from serve_app.serve_config import derive_config
from tests.helpers import TINY_CONFIG, serve_directory
from tests.images import distinct_pngs

APP = "background-removal"
INGRESS = "Ingress"
# Distinct sizes, so that an answer meant for another request shows as a wrong size.
PHOTOS = distinct_pngs(24, base=(200, 120))
SINGLE_CLIENTS = 4
BATCH_CLIENTS = 2  # the streams hold batch_url_concurrency (16) model calls per ingress replica: a backlog to drain
# Set live before the redeploys: every model call then waits 2 s for batch-mates (fewer than 64 are ever in flight),
# so the replicas being replaced hold calls when they are told to stop, except in the few tens of ms after a
# batch, before the next calls arrive.
SLOW_BATCHING = {"batch_wait_timeout_s": 2.0, "max_batch_size": 64}
# The access-log entries of the requests that count as work a stopping replica finished.
WORK = {MODEL_DEPLOYMENT: "CALL remove_background OK", INGRESS: "POST /v1/remove-background"}
WARMUP_S = 1.0
# Both replicas were replaced 10-13 s after Serve accepted a config on a 2-core CPU; 90 s flags a hang.
REPLACE_BOUND_S = 90.0
MAX_LOAD_S = 200.0  # the clients stop by then, whatever happened
MAX_REQUESTS_PER_CLIENT = 2000
REQUEST_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def photo_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Loopback URLs of PHOTOS, in order, for the /batch route."""
    root = tmp_path_factory.mktemp("photos")
    for index, body in enumerate(PHOTOS):
        (root / f"photo{index:02d}.png").write_bytes(body)
    with serve_directory(root) as base_url:
        yield [f"{base_url}/photo{index:02d}.png" for index in range(len(PHOTOS))]


@dataclass
class BatchAnswer:
    started_s: float
    ended_s: float
    problems: list[str]  # empty: every URL came back "ok" and its result is a PNG of the photo's size
    results: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # (result path, expected size)


@dataclass
class Replacement:
    accepted_s: float  # when Serve accepted the new config, since the load began
    replaced_s: float | None  # when the old replicas were gone and /v1/info came from the new model replica
    old_pids: dict[str, set[int]]
    new_pids: dict[str, set[int]]
    old_info_start: float | None  # when the model replica that answered /v1/info began its start-up
    new_info_start: float | None


def replica_pids(port: int) -> dict[str, set[int]]:
    pids: dict[str, set[int]] = {MODEL_DEPLOYMENT: set(), INGRESS: set()}
    for pid, role in service_processes(port).items():
        if role in pids:
            pids[role].add(pid)
    return pids


async def info_start(http: httpx.AsyncClient, base_url: str) -> float | None:
    """When the model replica that answers /v1/info began its start-up: a new replica's differs."""
    try:
        response = await http.get(f"{base_url}/v1/info", timeout=30)
        return float(response.json()["model"]["startup"]["init_started_at"]) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


async def post_batch(http: httpx.AsyncClient, base_url: str, urls: list[str], start: float) -> BatchAnswer:
    started = time.perf_counter() - start
    problems: list[str] = []
    results: list[tuple[str, tuple[int, int]]] = []
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            response = await http.post(f"{base_url}{ROUTE}/batch", json=urls)
    except (httpx.HTTPError, TimeoutError) as error:  # a stream cut off midway raises here too
        return BatchAnswer(started, time.perf_counter() - start, [f"no complete answer: {type(error).__name__}"])
    try:
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    except ValueError:
        return BatchAnswer(started, time.perf_counter() - start, [f"HTTP {response.status_code}, not NDJSON"])
    if response.status_code != 200:
        problems.append(f"HTTP {response.status_code}")
    if sorted(line.get("index") for line in lines) != list(range(len(urls))):
        problems.append(f"{len(lines)} lines for {len(urls)} URLs")
    for line in lines:
        if line.get("status") != "ok":
            problems.append(f"item {line.get('index')}: {line.get('error')}")
        else:
            results.append((line["result"], image_size(PHOTOS[line["index"]])))
    return BatchAnswer(started, time.perf_counter() - start, problems, results)


async def check_results(http: httpx.AsyncClient, base_url: str, batch: BatchAnswer) -> None:
    """Fetch every result a /batch stream listed and judge it against its photo."""
    for path, size in batch.results:
        try:
            outcome, detail = judge(await http.get(base_url + path), size)
        except httpx.HTTPError as error:
            outcome, detail = FAILED, f"no answer: {type(error).__name__}"
        if outcome != OK:
            batch.problems.append(f"{path}: {detail}")


async def load_through_redeploys(base_url: str, photo_urls: list[str], configs: list[str],
                                 deploy_config: Callable[[str], None]
                                 ) -> tuple[list[Answer], list[BatchAnswer], list[Replacement]]:
    """Closed-loop clients on both routes while each named config is deployed in turn and new replicas replace
    the old ones; every answer judged."""
    port = urlsplit(base_url).port
    answers: list[Answer] = []
    batches: list[BatchAnswer] = []
    replacements: list[Replacement] = []
    stop = asyncio.Event()
    start = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - start

    def running(sent: int) -> bool:
        return not stop.is_set() and sent < MAX_REQUESTS_PER_CLIENT and elapsed() < MAX_LOAD_S

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False,
                                 limits=httpx.Limits(max_connections=SINGLE_CLIENTS + BATCH_CLIENTS + 2)) as http:

        async def single_client(number: int) -> None:
            for sent in range(MAX_REQUESTS_PER_CLIENT):
                if not running(sent):
                    return
                body = PHOTOS[(number + sent * SINGLE_CLIENTS) % len(PHOTOS)]
                answers.append(await send_and_judge(http, base_url + ROUTE, body, image_size(body), start,
                                                    REQUEST_TIMEOUT_S))

        async def batch_client() -> None:
            for sent in range(MAX_REQUESTS_PER_CLIENT):
                if not running(sent):
                    return
                batches.append(await post_batch(http, base_url, photo_urls, start))

        async def replace(config: str) -> Replacement:
            old_pids = await asyncio.to_thread(replica_pids, port)
            old_info_start = await info_start(http, base_url)
            await asyncio.to_thread(deploy_config, config)
            replacement = Replacement(elapsed(), None, old_pids, {}, old_info_start, None)
            while elapsed() - replacement.accepted_s < REPLACE_BOUND_S:
                pids = await asyncio.to_thread(replica_pids, port)
                if all(pids[role] and not pids[role] & old_pids[role] for role in pids):
                    started = await info_start(http, base_url)
                    if started is not None and started != old_info_start:
                        replacement.replaced_s, replacement.new_pids, replacement.new_info_start = \
                            elapsed(), pids, started
                        break
                await asyncio.sleep(0.25)
            return replacement

        clients = [asyncio.create_task(single_client(n)) for n in range(SINGLE_CLIENTS)]
        clients += [asyncio.create_task(batch_client()) for _ in range(BATCH_CLIENTS)]
        try:
            await asyncio.sleep(WARMUP_S)
            for config in configs:
                replacement = await replace(config)
                replacements.append(replacement)
                if replacement.replaced_s is None:
                    break
        finally:
            stop.set()
            await asyncio.gather(*clients)
        await asyncio.gather(*(check_results(http, base_url, batch) for batch in batches))
    return answers, batches, replacements


def redeploy_configs(original: list[dict], port: int) -> dict[str, dict]:
    """Whole Serve configs for the running applications: as they are, with slow batching, and with new replicas."""
    top_level = {key: value for key, value in derive_config(TINY_CONFIG, port=port).items() if key != "applications"}
    slow = with_user_config(original, MODEL_DEPLOYMENT, **SLOW_BATCHING)
    changed = with_fewer_cpus(slow, (MODEL_DEPLOYMENT, INGRESS))
    return {name: {**top_level, "applications": applications}
            for name, applications in [("original", original), ("slow", slow), ("changed", changed)]}


def wait_for_batching(base_url: str, settings: dict, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    live: dict = {}
    while time.monotonic() < deadline:
        try:
            live = httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False).json()["model"]["batching"]
            if all(live.get(key) == value for key, value in settings.items()):
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"batch settings still {live}, not {settings}, after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def redeploy_record(service: str, photo_urls: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two replacements of both deployments under load; the shared service runs its original config afterwards."""
    started = time.monotonic()
    wait_healthy(service, PHOTOS[0], timeout_s=120)
    instance = ray_instance(urlsplit(service).port)
    original = running_applications(instance)
    assert [app["name"] for app in original] == [APP], original
    configs = redeploy_configs(original, urlsplit(service).port)
    workdir = tmp_path_factory.mktemp("redeploy")
    deployed: list[str] = []

    def deploy_config(name: str) -> None:
        deploy(instance, configs[name], workdir / f"{name}.yaml")
        deployed.append(name)

    try:
        deploy_config("slow")  # applied in place (user_config): no new replicas yet
        wait_for_batching(service, SLOW_BATCHING, timeout_s=60)
        logs = ServeLogs(instance.session_dir)
        logs.mark()
        answers, batches, replacements = asyncio.run(
            load_through_redeploys(service, photo_urls, ["changed", "original"], deploy_config))
        new_text = logs.new_text()
        record = {
            "duration_s": round(time.monotonic() - started, 1),
            "answers": answers,
            "batches": batches,
            "replacements": replacements,
            "stops": replica_stops(new_text, APP, WORK),
            "retried_model_calls": replica_log_lines(new_text, APP, INGRESS, "model replica failed"),
        }
        print(json.dumps({"duration_s": record["duration_s"], "requests": len(answers), "batches": len(batches),
                          "replacements": [(r.accepted_s, r.replaced_s) for r in replacements],
                          "stops": [stop.__dict__ for stop in record["stops"]]}, default=str))
        yield record
    finally:
        if deployed and deployed[-1] != "original":
            deploy_config("original")
        wait_healthy(service, PHOTOS[0], timeout_s=180)
        model = next(d for d in original[0]["deployments"] if d["name"] == MODEL_DEPLOYMENT)
        wait_for_batching(service, model.get("user_config") or {}, timeout_s=60)
        print(f"redeploy test took {time.monotonic() - started:.1f} s, the original config restored included")


def in_flight_at(started_and_ended: list[tuple[float, float]], moment_s: float) -> int:
    return sum(started < moment_s < ended for started, ended in started_and_ended)


def test_both_deployments_got_new_replicas_twice(redeploy_record: dict) -> None:
    replacements = redeploy_record["replacements"]
    assert len(replacements) == 2 and all(r.replaced_s is not None for r in replacements), replacements
    for replacement in replacements:
        assert replacement.old_info_start is not None, replacement
        assert replacement.new_info_start not in (None, replacement.old_info_start), replacement
        assert not replacement.new_pids[INGRESS] & replacement.old_pids[INGRESS], replacement


def test_every_request_in_flight_during_the_replacements_succeeds(redeploy_record: dict) -> None:
    answers, batches = redeploy_record["answers"], redeploy_record["batches"]
    singles = [(a.started_s, a.started_s + a.latency_s) for a in answers]
    streams = [(b.started_s, b.ended_s) for b in batches]
    for replacement in redeploy_record["replacements"]:
        assert in_flight_at(singles, replacement.accepted_s) > 0, "no image request was in flight at a redeploy"
        assert in_flight_at(streams, replacement.accepted_s) > 0, "no /batch stream was in flight at a redeploy"
    failed = [a for a in answers if a.outcome != OK]
    assert not failed, [(a.started_s, a.status, a.detail) for a in failed]
    assert not [b for b in batches if b.problems], [(b.started_s, b.problems[:3]) for b in batches if b.problems]


@pytest.mark.parametrize("deployment", [MODEL_DEPLOYMENT, INGRESS])
def test_old_replicas_finished_their_requests_and_exited_by_themselves(redeploy_record: dict,
                                                                       deployment: str) -> None:
    stops: list[ReplicaStop] = [s for s in redeploy_record["stops"] if s.deployment == deployment]
    assert len(stops) == 2, redeploy_record["stops"]  # one per redeploy
    assert all(stop.drained and not stop.force_killed for stop in stops), stops
    # Proof that the drain had work: answers the old replicas gave after the controller stopped them. Summed over
    # both stops, because a stop can land in the moment between one batch and the next calls (see SLOW_BATCHING).
    assert sum(stop.work_finished_after_stop for stop in stops) > 0, stops


def test_no_model_call_needed_the_ingress_retry(redeploy_record: dict) -> None:
    # The ingress retries a model call once when its replica died; a drained replica never makes it do so.
    assert redeploy_record["retried_model_calls"] == []
