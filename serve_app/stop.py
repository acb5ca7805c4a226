"""Stop the whole service without dropping a request: `python -m serve_app.stop [--address ADDR] [--timeout S]`.

`serve shutdown` and Ctrl-C on `serve run` kill Serve's HTTP proxies first (Ray 2.60), which cuts every request in
flight. Deleting an application with `serve.delete` keeps the proxy but stops all its deployments at once, so a
request still in the ingress (fetching its URL, decoding, a /batch stream) finds the model deployment gone and
fails, and requests the proxy queued for the ingress are never served. So this command stops in an order that
finishes them all:

1. fence: a tiny application answers new requests under `/v1`, `/readyz`, rembg's `/api` and remove.bg's `/v1.0`
   with 503 `shutting_down` and `Retry-After`, in the shape of the API called (remove.bg's clients get its 429
   `rate_limit_exceeded`, which they retry), so load balancers see "not ready"; the proxy routes the longest
   matching prefix to it;
2. drain: wait until no replica of the applications holds a request (the proxy keeps serving them meanwhile);
3. delete the applications, which are idle by now, then shut Serve down.

Exit status 0 when Serve is gone, 1 when there is nothing to stop or the timeout passed (Serve then still runs,
fenced; rerun with a longer --timeout, or `serve shutdown` to stop at once). `serve run` does not exit by itself
afterwards: it keeps the local Ray it started until Ctrl-C, which then finds nothing to shut down and exits.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable

import ray
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError
from ray.serve.context import _get_global_client
from ray.serve.exceptions import RayServeException
from ray.serve.schema import ApplicationStatus
from starlette.requests import Request
from starlette.responses import JSONResponse

from serve_app.compat.routes import REMBG_PREFIX, REMOVEBG_PREFIX, in_route_shape
from serve_app.errors import ApiError

# Above the configs' largest graceful_shutdown_timeout_s (100 s, the ingress), so that the drain of any request
# the service would finish on a replica replacement fits, plus the fence's start-up and the deletion.
DEFAULT_TIMEOUT_S = 130.0
# Every route that does work (the native API, rembg's, remove.bg's), and the one load balancers poll. A prefix
# matches whole path segments only: `/v1` does not cover `/v1.0/removebg`.
FENCED_PATHS = ("/v1", "/readyz", REMBG_PREFIX.rstrip("/"), REMOVEBG_PREFIX.rstrip("/"))
FENCE_SUFFIX = "-shutting-down"
POLL_S = 0.5
FENCE_START_S = 30.0  # a replica with no CPU to reserve starts in 1-9 s on a busy 2-core machine
QUIET_S = 1.0  # idle this long before deleting: the proxy hands a queued request to a free ingress within ~0.1 s
REPORT_EVERY_S = 5.0


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class ShuttingDown:
    """Answers every request with 503 `shutting_down` and Retry-After, in the error shape of the API whose routes
    it fences (`path`, within the application)."""

    def __init__(self, retry_after_s: int, path: str = "/v1"):
        self.retry_after_s = retry_after_s
        self.path = path.rstrip("/") + "/"

    async def __call__(self, request: Request) -> JSONResponse:
        error = in_route_shape(self.path, ApiError("the service is shutting down; retry on another instance or later",
                                                   status=503, code="shutting_down",
                                                   headers={"Retry-After": str(self.retry_after_s)}))
        return JSONResponse(error.to_body(), status_code=error.status, headers=error.headers)


class StopFailed(Exception):
    """A stop that cannot go on; the message says what to do."""


def say(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)


def serve_details() -> dict:
    # serve.status() has neither route prefixes nor replica actors; the controller's details (what `serve status`
    # and the dashboard show) have both.
    client = _get_global_client()
    if client is None:
        raise RayServeException("no Serve controller")
    return client.get_serve_details()


def replica_ongoing(actor_name: str) -> int:
    """Requests a replica holds, the count its own graceful shutdown waits on."""
    try:
        actor = ray.get_actor(actor_name, namespace="serve")
        count: ray.ObjectRef[int] = actor.get_num_ongoing_requests.remote()
        return ray.get(count, timeout=10)
    except (ValueError, RayActorError):  # the replica exited meanwhile: it holds nothing
        return 0
    except GetTimeoutError:  # no answer is no proof of idleness
        return 1


def ongoing_requests(apps: list[str]) -> dict[str, int]:
    """{deployment: requests its live replicas hold}, for the named applications."""
    counts: dict[str, int] = {}
    for name, app in serve_details()["applications"].items():
        if name in apps:
            for deployment, details in app["deployments"].items():
                counts[deployment] = sum(replica_ongoing(replica["actor_name"]) for replica in details["replicas"])
    return counts


def fence(apps: dict[str, dict], retry_after_s: int, deadline: float, log: Callable[[str], None]) -> None:
    """Route new requests under each app's FENCED_PATHS to ShuttingDown, and wait (bounded) until it answers.

    Without a fence the drain still works: new requests then get the proxy's plain 404 instead.
    """
    targets = [serve.RunTarget(ShuttingDown.bind(retry_after_s, path),  # type: ignore[attr-defined]
                               name=f"{name}{FENCE_SUFFIX}{re.sub('[^A-Za-z0-9]+', '-', path)}",
                               route_prefix=app["route_prefix"].rstrip("/") + path)
               for name, app in apps.items() if app.get("route_prefix") is not None for path in FENCED_PATHS]
    if not targets:
        return
    routes = ", ".join(target.route_prefix or "" for target in targets)
    try:
        # Not waiting inside Serve: its wait has no time limit, and the drain must not depend on the fence.
        serve.run_many(targets, wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    except Exception as error:  # noqa: BLE001 - any failure only costs the nicer answer
        log(f"could not fence {routes} ({type(error).__name__}: {error}); new requests get 404 while draining")
        return
    fence_wait_end = min(deadline, time.monotonic() + FENCE_START_S)
    statuses: dict[str, ApplicationStatus] = {}
    while time.monotonic() < fence_wait_end:
        statuses = {name: app.status for name, app in serve.status().applications.items()}
        if ApplicationStatus.DEPLOY_FAILED in (statuses.get(target.name) for target in targets):
            break
        if all(statuses.get(target.name) == ApplicationStatus.RUNNING for target in targets):
            log(f"new requests to {routes} now get 503 shutting_down (Retry-After: {retry_after_s} s)")
            return
        time.sleep(POLL_S)
    log(f"the fence on {routes} is not running ({statuses}); new requests may get 404 while draining")


def wait_until_idle(apps: list[str], deadline: float, log: Callable[[str], None]) -> None:
    """Return once the apps' replicas held no request for QUIET_S; StopFailed at the deadline."""
    quiet_since: float | None = None
    last_report = 0.0
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = ongoing_requests(apps)
        now = time.monotonic()
        if sum(counts.values()) == 0:
            quiet_since = quiet_since or now
            if now - quiet_since >= QUIET_S:
                return
        else:
            quiet_since = None
            if now - last_report >= REPORT_EVERY_S:
                log(f"draining: requests in flight {counts}")
                last_report = now
        time.sleep(POLL_S)
    raise StopFailed(f"requests still in flight at the timeout: {counts}. Serve still runs and answers new requests "
                     "with 503; run this again to wait longer, or `serve shutdown` to stop now and drop them")


def delete_apps(apps: list[str], deadline: float) -> None:
    for name in apps:
        # Not blocking: serve.delete's own wait gives up after 60 s, shorter than a replica's grace period.
        serve.delete(name, _blocking=False)
    while time.monotonic() < deadline:
        remaining = [name for name in serve.status().applications if name in apps]
        if not remaining:
            return
        time.sleep(POLL_S)
    raise StopFailed(f"applications {apps} still being deleted at the timeout")


def stop(address: str, timeout_s: float, retry_after_s: int) -> None:
    started = time.monotonic()
    deadline = started + timeout_s

    def log(message: str) -> None:
        say(started, message)

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as error:
        # Ray sends its token only to a cluster it found itself ("auto"), not to an explicit address.
        hint = "" if address == "auto" else " (a Ray that uses token authentication, as `serve run`'s does, " \
            "also needs RAY_AUTH_MODE=token in the environment)"
        raise StopFailed(f"no Ray cluster at {address!r}{hint}: {error}") from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # our own lines say what happens
    try:
        details = serve_details()
    except RayServeException:
        raise StopFailed(f"no Serve instance runs on the Ray cluster at {address!r}") from None
    apps = {name: app for name, app in details["applications"].items() if FENCE_SUFFIX not in name}
    if not apps:
        raise StopFailed(f"Serve runs on the Ray cluster at {address!r} but has no application to stop")
    port = details["http_options"].get("port")
    log(f"stopping {sorted(apps)} (HTTP port {port}, Ray at {ray.get_runtime_context().gcs_address})")
    fence(apps, retry_after_s, deadline, log)
    wait_until_idle(list(apps), deadline, log)
    log("no request in flight; deleting the applications")
    delete_apps(list(apps), deadline)
    log("applications deleted; shutting Serve down")
    serve.shutdown()  # the fences and the proxies: nothing in flight any more
    log("Serve is shut down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.stop", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="auto",
                        help="Ray cluster (GCS address host:port); 'auto': the one started last on this machine")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--retry-after-s", type=int, default=5,
                        help="Retry-After of the 503 answered to new requests while draining (default 5)")
    args = parser.parse_args(argv)
    try:
        stop(args.address, args.timeout, args.retry_after_s)
    except StopFailed as error:
        print(f"stop failed: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
