"""Start `serve run` on a derived config as a subprocess, for benchmarks and end-to-end tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from serve_app.local_ray import NODE_START_TIMEOUT
from serve_app.serve_config import haproxy_enabled

SERVE_CLI = ["-c", "from ray.serve.scripts import cli; cli()"]
# With the HAProxy ingress, Ray listens on ports that do not depend on the config: HAProxy's stats page and metrics
# exporter (8404, 9101), the Serve proxy that HAProxy keeps as its fallback server (8500, 9500),
# and the replicas' own HTTP and gRPC servers (from 30000 and 40000). With a second service on the same machine,
# requests sent to one reached the other's replicas (seen in the end-to-end tests), so each service started here
# gets ports of its own.
HAPROXY_PORT_VARIABLES = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                          "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
REPLICA_PORT_RANGES = (("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"),
                       ("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"))
REPLICA_PORTS_PER_SERVICE = 64  # Ray moves on to the next port when one is taken


# Ports are handed out from below Linux's ephemeral range (32768-60999 by default), from which the kernel also takes
# the local ports of outgoing connections (Ray opens many): one free there when chosen could be a connection's a
# moment later. Seen in CI: HAProxy could not bind a service's HTTP port. Ports already handed out by this process
# are not handed out again, so a replica range never covers another service's port.
_LOWEST_PORT, _HIGHEST_PORT = 10_000, 32_000
_handed_out: set[int] = set()


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on now and that this process
    has not handed out before."""
    chooser = random.SystemRandom()
    for _ in range(1000):
        low = chooser.randrange(_LOWEST_PORT, _HIGHEST_PORT - count)
        ports = range(low, low + count)
        if _handed_out.isdisjoint(ports) and all(_bindable(port) for port in ports):
            _handed_out.update(ports)
            return low
    raise RuntimeError(f"no {count} free consecutive ports between {_LOWEST_PORT} and {_HIGHEST_PORT}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT does not count
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_port_free(host: str, port: int) -> None:
    """Raise if something already listens on host:port: /readyz would then reach it instead of this service. A run
    killed with SIGKILL leaves Ray's HAProxy behind, still holding the port (seen on the GPU hosts)."""
    with socket.socket() as sock:
        # As servers bind: connections of an earlier service still in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise RuntimeError(f"port {port} on {host} is taken ({error.strerror}): another service, or an HAProxy "
                               f"left behind by a killed run (`pkill -x haproxy`)") from None


def model_info(base_url: str) -> dict:
    """The model deployment's part of GET /v1/info: settings, live batch limit, histogram, replica pid."""
    response = httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False)
    response.raise_for_status()
    return response.json()["model"]


def haproxy_ports() -> dict[str, str]:
    """Environment for `serve run` behind HAProxy: ports free now, for HAProxy's own listeners and the replicas."""
    ports = {name: str(free_port()) for name in HAPROXY_PORT_VARIABLES}
    for low_name, high_name in REPLICA_PORT_RANGES:
        low = free_port(REPLICA_PORTS_PER_SERVICE + 1)
        ports |= {low_name: str(low), high_name: str(low + REPLICA_PORTS_PER_SERVICE)}
    return ports


class ServeProcess:
    """`serve run CONFIG` in its own process group; `stop()` ends it and the local Ray it started."""

    def __init__(self, config: dict, workdir: Path, log_path: Path, env: dict[str, str] | None = None):
        self.port = config.get("http_options", {}).get("port", 8000)
        ensure_port_free(config.get("http_options", {}).get("host", "127.0.0.1"), self.port)
        self.config_path = workdir / "serve_config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        if haproxy_enabled(config, full_env):
            full_env = {**haproxy_ports(), **full_env}
        self._env = full_env
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._start_retried = False
        self._start()

    def _start(self) -> None:
        self.started_at = time.time()  # wall clock, to set the replicas' own start-up marks against
        self.process = subprocess.Popen([sys.executable, *SERVE_CLI, "run", str(self.config_path)],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=self._env,
                                        start_new_session=True)

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /readyz answered 200; raises with the log's tail if it never did."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                # Its local Ray node timed out before it registered (serve_app/local_ray.py): nothing of the service
                # ran, so it is tried once more.
                if not self._start_retried and NODE_START_TIMEOUT in self.log_tail():
                    self._start_retried = True
                    _kill_group(self.process.pid)  # whatever of that node did start
                    self._start()
                    continue
                raise RuntimeError(f"serve run exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=5, trust_env=False).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"/readyz not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 60) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # serve run shuts Serve and its local Ray down
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
