"""Start `serve run` on a derived config as a subprocess, for benchmarks and end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVE_CLI = ["-c", "from ray.serve.scripts import cli; cli()"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` command-line items as a dict, each value read as YAML (`8`, `[1, 8]`, `true`, `/a/path`)."""
    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def derive_config(base: Path, *, model: dict[str, Any] | None = None, ingress: dict[str, Any] | None = None,
                  batching: dict[str, Any] | None = None, remover: dict[str, Any] | None = None,
                  ingress_replicas: int | None = None, port: int | None = None) -> dict:
    """A copy of a Serve config with some settings replaced (the first application is the one changed)."""
    config = yaml.safe_load(base.read_text())
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    app = config["applications"][0]
    args = app.setdefault("args", {})
    args.setdefault("model", {}).update(model or {})
    args.setdefault("ingress", {}).update(ingress or {})
    deployments = {d["name"]: d for d in app.setdefault("deployments", [])}
    remover_config = deployments.setdefault("BackgroundRemover", {"name": "BackgroundRemover"})
    for key, value in (remover or {}).items():  # None removes a key, e.g. autoscaling_config
        if value is None:
            remover_config.pop(key, None)
        else:
            remover_config[key] = value
    remover_config.setdefault("user_config", {}).update(batching or {})
    if ingress_replicas is not None:
        ingress_config = deployments.setdefault("Ingress", {"name": "Ingress"})
        # null, not absent: an absent key keeps the decorator's autoscaling_config, which then wins over
        # num_replicas (the 2026-11-22 benchmarks asked for 12 replicas and got the decorator's 1 to 4)
        ingress_config["autoscaling_config"] = None
        ingress_config["num_replicas"] = ingress_replicas
    app["deployments"] = list(deployments.values())
    return config


def model_info(base_url: str) -> dict:
    """The model deployment's part of GET /v1/info: settings, live batch limit, histogram, replica pid."""
    response = httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False)
    response.raise_for_status()
    return response.json()["model"]


class ServeProcess:
    """`serve run CONFIG` in its own process group; `stop()` ends it and the local Ray it started."""

    def __init__(self, config: dict, workdir: Path, log_path: Path, env: dict[str, str] | None = None):
        self.config_path = workdir / "serve_config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = config.get("http_options", {}).get("port", 8000)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, *SERVE_CLI, "run", str(self.config_path)],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                        start_new_session=True)

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /readyz answered 200; raises with the log's tail if it never did."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
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
