"""Deploying the application on the in-process Ray of this tier, and reading its state.

Deployed from a config dict exactly as `serve run`/`serve deploy` deploy a config file (`deploy_apps`), because
only that path updates `user_config` in place: `serve.run(app)` treats every call as new code and restarts.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from harness.service_process import free_port
from serve_app.serve_config import derive_config
from serve_app.settings import IngressSettings, load_api_keys

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
APP_NAME = "background-removal"
# The tiny config's 256x256 input keeps the edge band small for 320x200 pictures (scale 1.25).
EDGE_MARGIN = 5
PORT = free_port()


def deploy(tiny_model_dir: Path, batching: dict, ingress: dict | None = None) -> None:
    config = derive_config(CONFIG, model={"model_id": str(tiny_model_dir)}, batching=batching, ingress=ingress,
                           port=PORT)
    client = serve_start(http_options=config["http_options"])
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
    keys_file = (ingress or {}).get("api_keys_file")
    keys = load_api_keys(IngressSettings(api_keys_file=keys_file)) if keys_file else ()
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        settled = status is not None and status.status == "RUNNING"
        if settled and all(d.status == "HEALTHY" for d in status.deployments.values()):
            try:
                live = info(f"http://127.0.0.1:{PORT}", headers)["batching"]
                if all(live.get(key) == value for key, value in batching.items()):
                    return
            except (httpx.HTTPError, KeyError):
                pass  # the proxy or the new settings are not there yet
        time.sleep(0.5)
    raise TimeoutError(f"{APP_NAME} did not reach RUNNING with {batching}: {serve.status()}")


def info(base_url: str, headers: dict | None = None) -> dict:
    return httpx.get(f"{base_url}/v1/info", timeout=30, trust_env=False, headers=headers).json()["model"]


