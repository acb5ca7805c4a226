"""Replace a running service's replicas by deploying its config again, and read from Serve's logs how they stopped.

The Ray instance that serves a port on this machine is found from the process listening on it: its raylet knows
the dashboard address (for `serve config` / `serve deploy`) and Ray's log folder (`--session_dir`). Serve logs
every replica it stops, each request a replica answers, the ongoing requests it waits for while draining, and a
force-kill when the drain outlasts `graceful_shutdown_timeout_s`; together those lines say whether the old
replicas of a replacement answered the requests they held and then exited by themselves.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.memory import serving_raylet
from harness.overload import require_loopback
from harness.service_process import SERVE_CLI

# Serve's own log lines (ray/serve/_private/deployment_state.py and replica.py, Ray 2.60), each starting with
# "LEVEL YYYY-MM-DD HH:MM:SS,mmm", a format in which text order is time order.
_TIME = re.compile(r"^[A-Z]+ (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_STOPPING = re.compile(r"Stopping Replica\(id='(?P<replica>[^']+)', deployment='(?P<deployment>[^']+)'")
_FORCE_KILLED = re.compile(r"Replica\(id='(?P<replica>[^']+)'[^)]*\) did not shut down after grace period")
_WAITING = re.compile(r"Waiting for an additional [\d.]+s to shut down: (?P<ongoing>\d+) ongoing requests")
_DRAINED = "Graceful shutdown complete; replica exiting."


@dataclass(frozen=True)
class RayInstance:
    dashboard_url: str
    session_dir: Path
    gcs_address: str  # what `ray.init(address=...)` takes to reach this very instance


def ray_instance(port: int) -> RayInstance:
    """Dashboard, log folder and GCS address of the Ray instance whose Serve proxy listens on `port` here."""
    command = " ".join(serving_raylet(port).cmdline())
    logs = re.search(r"--session_dir=(\S+)", command)
    dashboard = re.search(r"--webui=(\S+)", command)
    gcs = re.search(r"--gcs-address=(\S+)", command)
    if logs is None or dashboard is None or gcs is None:
        raise LookupError(f"no --session_dir, --webui or --gcs-address in the raylet's command line: {command[:300]}")
    dashboard_url = f"http://{dashboard.group(1)}"
    require_loopback(dashboard_url)
    return RayInstance(dashboard_url, Path(logs.group(1)), gcs.group(1))


def serve_cli(*args: str, timeout_s: float = 120) -> str:
    """Run the `serve` command line with `args`: its stdout, or RuntimeError with its stderr."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # A local Ray started by `ray.init()` (as `serve run` does) uses token authentication unless RAY_AUTH_MODE
    # says otherwise, but the CLI sends Ray's token only when RAY_AUTH_MODE says so.
    env.setdefault("RAY_AUTH_MODE", "token")
    result = subprocess.run([sys.executable, *SERVE_CLI, *args], capture_output=True, text=True, env=env,
                            timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"serve {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def running_applications(instance: RayInstance) -> list[dict]:
    """The applications as Serve runs them (`serve config`), ready to be deployed again."""
    return [app for app in yaml.safe_load_all(serve_cli("config", "--address", instance.dashboard_url)) if app]


def deploy(instance: RayInstance, config: dict, config_path: Path) -> None:
    """`serve deploy` a whole Serve config (written to `config_path`); returns once Serve accepted it."""
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve_cli("deploy", str(config_path), "--address", instance.dashboard_url)


def _with_changed_deployments(applications: list[dict], names: tuple[str, ...],
                              change: Callable[[dict], None]) -> list[dict]:
    """A copy of `applications` in which `change` edited the config of every deployment named in `names`."""
    changed = copy.deepcopy(applications)
    for app in changed:
        for deployment in app.get("deployments", []):
            if deployment["name"] in names:
                change(deployment)
    return changed


def with_fewer_cpus(applications: list[dict], deployments: tuple[str, ...], factor: float = 0.8) -> list[dict]:
    """A copy in which the named deployments ask for `factor` times their CPUs (a change of `ray_actor_options`,
    so Serve replaces their replicas)."""
    def fewer_cpus(deployment: dict) -> None:
        options = deployment.setdefault("ray_actor_options", {})
        options["num_cpus"] = round(factor * options.get("num_cpus", 1), 3)
    return _with_changed_deployments(applications, deployments, fewer_cpus)


def with_user_config(applications: list[dict], deployment: str, **settings: object) -> list[dict]:
    """A copy with `settings` merged into the deployment's `user_config` (applied live, no new replicas)."""
    def merge(config: dict) -> None:
        config["user_config"] = {**(config.get("user_config") or {}), **settings}
    return _with_changed_deployments(applications, (deployment,), merge)


class ServeLogs:
    """What Ray's Serve log files (controller, proxy, replicas) gained since `mark()`."""

    def __init__(self, session_dir: Path):
        self.directory = session_dir / "logs" / "serve"
        self._offsets: dict[str, int] = {}

    def mark(self) -> None:
        self._offsets = {path.name: path.stat().st_size for path in self.directory.glob("*.log")}

    def new_text(self) -> dict[str, str]:
        """{file name: text written since the mark}, files created since then included."""
        texts = {}
        for path in sorted(self.directory.glob("*.log")):
            with path.open("rb") as log:
                log.seek(self._offsets.get(path.name, 0))
                texts[path.name] = log.read().decode(errors="replace")
        return texts


@dataclass(frozen=True)
class ReplicaStop:
    deployment: str
    replica: str
    stopped_at: str  # when the controller told it to stop, as Serve's logs write time
    work_finished_after_stop: int  # requests of the kind asked for that it answered after that moment
    most_ongoing_while_draining: int  # the largest count Serve logged while it waited; 0: idle at the first check
    drained: bool  # the replica logged that its graceful shutdown completed
    force_killed: bool  # the controller killed it after graceful_shutdown_timeout_s


def replica_stops(new_text: dict[str, str], app: str, work: dict[str, str]) -> list[ReplicaStop]:
    """Every replica of `app` the controller stopped in `new_text` (from ServeLogs.new_text), with how it went.

    `work` names, per deployment, the start of the access-log entry of a finished request that counts as work,
    e.g. "CALL remove_background OK" or "POST /v1/remove-background".
    """
    controller = "\n".join(text for name, text in new_text.items() if name.startswith("controller_")
                           and not name.startswith("controller_build"))
    force_killed = {match["replica"] for match in _FORCE_KILLED.finditer(controller)}
    stops = []
    for controller_line in controller.splitlines():
        stopping, stopped = _STOPPING.search(controller_line), _TIME.match(controller_line)
        if stopping is None or stopped is None:
            continue
        deployment, replica = stopping["deployment"], stopping["replica"]
        lines = new_text.get(f"replica_{app}_{deployment}_{replica}.log", "").splitlines()
        finished = _answered_after(lines, work[deployment], stopped["time"]) if deployment in work else 0
        ongoing = [int(waiting["ongoing"]) for waiting in map(_WAITING.search, lines) if waiting]
        stops.append(ReplicaStop(deployment, replica, stopped["time"], finished, max(ongoing, default=0),
                                 any(_DRAINED in line for line in lines), replica in force_killed))
    return stops


def _answered_after(lines: list[str], entry: str, moment: str) -> int:
    """Access-log entries starting with `entry` written at or after `moment`."""
    times = [_TIME.match(line) for line in lines if f" -- {entry}" in line]
    return sum(time is not None and time["time"] >= moment for time in times)


def replica_log_lines(new_text: dict[str, str], app: str, deployment: str, needle: str) -> list[str]:
    """Lines containing `needle` in the new text of every replica log of `deployment`."""
    prefix = f"replica_{app}_{deployment}_"
    return [line for name, text in new_text.items() if name.startswith(prefix)
            for line in text.splitlines() if needle in line]
