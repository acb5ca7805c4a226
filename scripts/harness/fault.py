"""Fault injection: SIGKILL the model replica under load and measure what clients see and how fast it heals.

Two ways to watch it: a steady closed loop of N clients (every answer judged, see answers.py), and the bulk
client (`python -m serve_app.bulk client`) over a folder, which must finish with nothing lost. The replica is
found among the processes of the Ray instance that serves the URL's port on this machine, by its process title,
and checked again just before it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from harness.answers import OK, Answer, image_size, judge_png, tally
from harness.memory import process_role, psutil, service_processes
from harness.overload import CONTENT_TYPE, ROUTE, require_loopback, send_and_judge
from serve_app.bulk.layout import FAILURES_NAME, SUMMARY_NAME, Layout, is_temporary

MODEL_DEPLOYMENT = "BackgroundRemover"


def model_replica_pid(base_url: str, deployment: str = MODEL_DEPLOYMENT) -> int:
    """The pid of a `deployment` replica of the Ray instance serving the URL's port on this machine (the lowest
    pid where several run)."""
    require_loopback(base_url)
    port = urlsplit(base_url).port or 80
    pids = sorted(pid for pid, role in service_processes(port).items() if role == deployment)
    if not pids:
        raise RuntimeError(f"no {deployment} replica of the Ray instance serving port {port} runs on this machine")
    return pids[0]


def kill_replica(pid: int, deployment: str = MODEL_DEPLOYMENT) -> None:
    """SIGKILL `pid` if it is still a `deployment` replica (checked again: pids are reused)."""
    role = process_role(psutil.Process(pid))
    if role != deployment:
        raise RuntimeError(f"refusing to kill pid {pid}: it is no longer a {deployment} replica ({role!r})")
    os.kill(pid, signal.SIGKILL)


def wait_healthy(base_url: str, body: bytes, timeout_s: float = 120.0) -> float:
    """Seconds until /readyz is 200 and one image comes back as a PNG of its size; raises if not in time."""
    started = time.monotonic()
    last = "nothing tried"
    with httpx.Client(timeout=30, trust_env=False) as http:
        while time.monotonic() - started < timeout_s:
            try:
                if http.get(f"{base_url}/readyz").status_code == 200:
                    response = http.post(base_url + ROUTE, content=body, headers={"Content-Type": CONTENT_TYPE})
                    if response.status_code == 200 and judge_png(response.content, image_size(body))[0] == OK:
                        return time.monotonic() - started
                    last = f"image request answered {response.status_code}"
                else:
                    last = "/readyz not 200"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}"
            time.sleep(0.5)
    raise TimeoutError(f"service at {base_url} not healthy after {timeout_s:.0f} s: {last}")


# --- steady load -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    clients: int = 4
    kill_after_s: float = 3.0  # of load before the kill, so that requests are in flight at that moment
    settle_s: float = 3.0  # load kept on after recovery, to see that it stays recovered
    max_s: float = 120.0  # the load stops by then, recovered or not
    max_requests: int = 10_000
    timeout_s: float = 60.0  # per request
    readyz_interval_s: float = 0.25


def _after(answers: list[Answer], kill_s: float) -> list[Answer]:
    return [a for a in answers if a.started_s >= kill_s]


async def steady_load_with_kill(base_url: str, bodies: list[bytes], plan: FaultPlan) -> dict:
    """Closed-loop load, the model replica killed part-way; failures and recovery times as a JSON summary."""
    base_url = base_url.rstrip("/")
    require_loopback(base_url)
    sizes = [image_size(body) for body in bodies]
    answers: list[Answer] = []
    readyz: list[tuple[float, float, int]] = []  # (started_s, latency_s, status), status 0 for no answer
    kill_s: float | None = None
    killed_pid = model_replica_pid(base_url)
    stop = asyncio.Event()
    start = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - start

    images_in_flight = 0  # image requests sent whose answer has not begun to arrive

    async def on_request(request: httpx.Request) -> None:
        nonlocal images_in_flight
        images_in_flight += request.url.path.endswith(ROUTE)

    async def on_response(response: httpx.Response) -> None:
        nonlocal images_in_flight
        images_in_flight -= response.request.url.path.endswith(ROUTE)

    async with httpx.AsyncClient(timeout=plan.timeout_s, trust_env=False,
                                 limits=httpx.Limits(max_connections=plan.clients + 1),
                                 event_hooks={"request": [on_request], "response": [on_response]}) as http:

        async def client(number: int) -> None:
            index = number
            while not stop.is_set() and len(answers) < plan.max_requests and elapsed() < plan.max_s:
                body, size = bodies[index % len(bodies)], sizes[index % len(bodies)]
                answers.append(await send_and_judge(http, base_url + ROUTE, body, size, start, plan.timeout_s))
                index += plan.clients

        async def poll_readyz() -> None:
            while not stop.is_set() and elapsed() < plan.max_s:
                sent = elapsed()
                try:
                    status = (await http.get(f"{base_url}/readyz", timeout=10)).status_code
                except httpx.HTTPError:
                    status = 0
                readyz.append((sent, elapsed() - sent, status))
                await asyncio.sleep(plan.readyz_interval_s)

        async def kill_then_watch() -> None:
            nonlocal kill_s
            try:
                await asyncio.sleep(plan.kill_after_s)
                # The kill is to hit work in progress. Closed-loop clients also spend time judging answers, and
                # with a fast model all of them can be doing that at once (seen on a 2-core machine): wait for
                # a moment with an image request out, a few seconds at most.
                waited_from = elapsed()
                while not images_in_flight and elapsed() - waited_from < 5:
                    await asyncio.sleep(0.001)
                kill_replica(killed_pid)
                kill_s = elapsed()
                while elapsed() < plan.max_s:
                    recovered = [_first_ok(answers, kill_s), _first_ready(readyz, kill_s)]
                    times = [t for t in recovered if t is not None]
                    if len(times) == len(recovered) and elapsed() - max(times) >= plan.settle_s:
                        break
                    await asyncio.sleep(0.1)
            finally:
                stop.set()

        tasks = [asyncio.create_task(client(n)) for n in range(plan.clients)]
        tasks += [asyncio.create_task(poll_readyz()), asyncio.create_task(kill_then_watch())]
        await asyncio.gather(*tasks)

    assert kill_s is not None
    return _fault_summary(base_url, answers, readyz, kill_s, killed_pid)


def _first_ok(answers: list[Answer], kill_s: float) -> float | None:
    """When the first request sent after the kill came back good (seconds since the run began)."""
    ends = [a.started_s + a.latency_s for a in _after(answers, kill_s) if a.outcome == OK]
    return min(ends, default=None)


def _first_ready(readyz: list[tuple[float, float, int]], kill_s: float) -> float | None:
    ends = [sent + latency for sent, latency, status in readyz if sent >= kill_s and status == 200]
    return min(ends, default=None)


def _fault_summary(base_url: str, answers: list[Answer], readyz: list[tuple[float, float, int]], kill_s: float,
                   killed_pid: int | None) -> dict:
    failed = [a for a in answers if a.outcome != OK]
    first_ok, first_ready = _first_ok(answers, kill_s), _first_ready(readyz, kill_s)
    readyz_after = [status for sent, _, status in readyz if sent >= kill_s]
    in_flight_at_kill = [a for a in answers if a.started_s < kill_s < a.started_s + a.latency_s]
    return {
        "url": base_url,
        "killed_pid": killed_pid,
        "new_pid": model_replica_pid(base_url) if first_ready is not None else None,
        "kill_at_s": round(kill_s, 2),
        "requests": len(answers),
        "in_flight_at_kill": len(in_flight_at_kill),
        "in_flight_at_kill_failed": sum(a.outcome != OK for a in in_flight_at_kill),
        "failed": len(failed),
        "failed_started_after_kill": sum(a.outcome != OK for a in _after(answers, kill_s)),
        "last_failure_after_kill_s": round(max(a.started_s + a.latency_s for a in failed) - kill_s, 2)
        if failed else None,
        **tally(answers),
        "recovery_s": {
            "first_ok_request": None if first_ok is None else round(first_ok - kill_s, 2),
            "readyz": None if first_ready is None else round(first_ready - kill_s, 2),
        },
        "readyz_statuses_after_kill": {str(s): readyz_after.count(s) for s in sorted(set(readyz_after))},
    }


# --- bulk client -----------------------------------------------------------------------------------------------


def _finished_outputs(layout: Layout) -> set[str]:
    return {name for name in layout.existing_outputs()
            if not (name.rsplit("/", 1)[-1].startswith("_") or is_temporary(name.rsplit("/", 1)[-1]))}


def bulk_with_kill(base_url: str, input_dir: Path, output_dir: Path, *, kill_after_outputs: int = 20,
                   concurrency: int = 4, timeout_s: float = 300.0) -> dict:
    """Run the bulk client over `input_dir`, kill the model replica once some outputs exist, check the result."""
    base_url = base_url.rstrip("/")
    require_loopback(base_url)
    layout = Layout(str(input_dir), str(output_dir), "png")
    inputs = layout.inputs()
    command = [sys.executable, "-m", "serve_app.bulk", "client", str(input_dir), str(output_dir),
               "--url", base_url, "--concurrency", str(concurrency)]
    pid = model_replica_pid(base_url)
    killed_pid, kill_s = None, None
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:  # the progress bar; a pipe nobody reads could fill up
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        try:
            while (len(_finished_outputs(layout)) < kill_after_outputs and process.poll() is None
                   and time.monotonic() - started < timeout_s):
                time.sleep(0.05)
            outputs_at_kill = len(_finished_outputs(layout))
            if process.poll() is None:
                kill_replica(pid)
                killed_pid, kill_s = pid, round(time.monotonic() - started, 2)
            process.wait(timeout=max(1.0, timeout_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            pass  # reported below as exit_code None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
                process.returncode = None
        log.seek(0)
        output_tail = log.read()[-2000:].decode(errors="replace")
    return {
        "killed_pid": killed_pid,  # None: the job finished before it could be killed
        "kill_at_s": kill_s,
        "outputs_at_kill": outputs_at_kill,
        "elapsed_s": round(time.monotonic() - started, 2),
        "exit_code": process.returncode,  # None: it did not finish within timeout_s and was stopped
        **check_bulk_output(layout, inputs),
        "output_tail": output_tail if process.returncode != 0 else "",
    }


def check_bulk_output(layout: Layout, inputs: list[str]) -> dict:
    """Every input has a PNG of its size, no failure is listed, and _summary.json counts them all."""
    root = Path(layout.output_root)
    missing, wrong = [], []
    for relative in inputs:
        target = root / layout.output_relative(relative)
        if not target.exists():
            missing.append(relative)
        elif judge_png(target.read_bytes(), image_size((Path(layout.input_root) / relative).read_bytes()))[0] != OK:
            wrong.append(relative)
    failures_file, summary_file = root / FAILURES_NAME, root / SUMMARY_NAME
    failures = failures_file.read_text().splitlines() if failures_file.exists() else None
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    expected = {"inputs": len(inputs), "processed_this_run": len(inputs), "skipped_already_done": 0, "failed": 0}
    return {
        "inputs": len(inputs),
        "missing_outputs": missing,
        "wrong_outputs": wrong,
        "listed_failures": failures,
        "summary": summary,
        "summary_counts_right": summary is not None and all(summary.get(k) == v for k, v in expected.items()),
    }
