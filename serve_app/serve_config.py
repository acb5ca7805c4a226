"""Serve config files (configs/*.yaml): read in one place, and copied with some settings replaced (prebuild,
benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Serve's HAProxy ingress: HAProxy takes the HTTP port and forwards each request straight to an ingress replica's
# own HTTP server, instead of through the Python proxy actor and a Ray call. Ray reads the switch from the Serve
# controller's environment, which a config sets under controller_options.runtime_env.env_vars (prod.yaml does).
INGRESS_PROXIES = ("serve", "haproxy")
HAPROXY_SWITCH = "RAY_SERVE_ENABLE_HA_PROXY"
# HAProxy may take up to 30 s to start (Ray's RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S), but the controller marks a proxy
# unhealthy after three readiness checks of 5 s each, and `serve run` then exits; on a busy host a healthy HAProxy
# misses that. A 30 s check gives the proxy, whichever it is, as long as HAProxy gives itself.
PROXY_READY_CHECK = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_CHECK_S = "30"


def read_config(path: Path) -> dict:
    """A Serve config file as written (YAML)."""
    return yaml.safe_load(Path(path).read_text())


def app_args(config: Mapping[str, Any]) -> dict:
    """The `args:` of the config's application (the first; this project's configs have one)."""
    return dict(config["applications"][0].get("args") or {})


def deployment(config: Mapping[str, Any], name: str) -> dict:
    """The config's options for deployment `name`, or {} when it sets none."""
    return next((d for d in config["applications"][0].get("deployments", []) if d.get("name") == name), {})


def controller_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables a Serve config gives its controller (and, through it, every Serve actor)."""
    runtime_env = (config.get("controller_options") or {}).get("runtime_env") or {}
    return dict(runtime_env.get("env_vars") or {})


def haproxy_enabled(config: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether `serve run` of `config`, started with the environment `env`, puts HAProxy on the HTTP port (the
    config's controller environment wins over the inherited one)."""
    return controller_env(config).get(HAPROXY_SWITCH, env.get(HAPROXY_SWITCH)) == "1"


def with_ingress_proxy(config: dict, proxy: str) -> dict:
    """`config` with Serve's proxy actor ("serve") or HAProxy on the HTTP port, whatever the environment says, and
    the proxy's readiness check as long as HAProxy's start unless the config sets it."""
    if proxy not in INGRESS_PROXIES:
        raise ValueError(f"ingress proxy must be one of {INGRESS_PROXIES}, got {proxy!r}")
    options = config.get("controller_options") or {}
    runtime_env = options.get("runtime_env") or {}
    env_vars = {PROXY_READY_CHECK: PROXY_READY_CHECK_S, **(runtime_env.get("env_vars") or {}),
                HAPROXY_SWITCH: "1" if proxy == "haproxy" else "0"}
    config["controller_options"] = {**options, "runtime_env": {**runtime_env, "env_vars": env_vars}}
    return config


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` command-line items as a dict, each value read as YAML (`8`, `[1, 8]`, `true`, `/a/path`);
    ValueError naming an item that is not KEY=VALUE or whose value is no YAML."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {key}: the value is no YAML ({' '.join(str(error).split())})") from None
    return overrides


def remover_actor_options(config: dict) -> dict:
    """The model deployment's ray_actor_options in this config (none: Ray's defaults, no GPU), with the
    application's runtime_env beneath its own as Serve gives both to the replicas (env_vars merged, the
    deployment's winning): a task that stands for a replica (the prebuild's) then sees, for example, the same
    SERVE_APP_COMPILE_CACHE."""
    options = dict(deployment(config, "BackgroundRemover").get("ray_actor_options") or {})
    inherited = config["applications"][0].get("runtime_env") or {}
    if inherited:
        own = options.get("runtime_env") or {}
        merged = {**inherited, **own}
        if "env_vars" in inherited or "env_vars" in own:
            merged["env_vars"] = {**(inherited.get("env_vars") or {}), **(own.get("env_vars") or {})}
        options["runtime_env"] = merged
    return options


def _model_name(entry: Mapping[str, Any]) -> str:
    from serve_app.settings import ModelSettings

    return ModelSettings.model_validate(entry).served_name


def derive_config(base: Path, *, model: dict[str, Any] | None = None, ingress: dict[str, Any] | None = None,
                  batching: dict[str, Any] | None = None, remover: dict[str, Any] | None = None,
                  ingress_replicas: int | None = None, port: int | None = None) -> dict:
    """A copy of a Serve config with some settings replaced (the first application is the one changed)."""
    config = read_config(base)
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    app = config["applications"][0]
    args = app.setdefault("args", {})
    if "models" in args and "model" not in args:  # several models: the overrides apply to the default one
        entries = args["models"]
        default = args.get("default_model")
        named = [entry for entry in entries if default and _model_name(entry) == default]
        (named or entries)[0].update(model or {})
    else:
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
        # A fixed count: the config's autoscaling_config would win over num_replicas.
        ingress_config["autoscaling_config"] = None
        ingress_config["num_replicas"] = ingress_replicas
    app["deployments"] = list(deployments.values())
    return config
