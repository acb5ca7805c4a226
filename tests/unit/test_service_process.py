"""The benchmark harness refuses to start `serve run` on a port that something already listens on, and reads
which proxy a config puts on the HTTP port as Ray does."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from ray.serve._private.constants import RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S
from ray.serve.schema import ServeDeploySchema

from harness.service_process import ServeProcess, ensure_port_free, free_port
from serve_app.serve_config import (
    HAPROXY_SWITCH,
    PROXY_READY_CHECK,
    controller_env,
    haproxy_enabled,
    with_ingress_proxy,
)

PROD = Path(__file__).resolve().parents[2] / "configs" / "prod.yaml"


def test_a_taken_port_is_refused_before_anything_starts(tmp_path) -> None:
    with socket.socket() as squatter:  # what a killed run's HAProxy looks like: a listener on the service's port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is taken"):
            ServeProcess({"http_options": {"host": "127.0.0.1", "port": port}}, tmp_path, tmp_path / "serve.log")
    assert not (tmp_path / "serve_config.yaml").exists() and not (tmp_path / "serve.log").exists()


def test_a_free_port_passes() -> None:
    ensure_port_free("127.0.0.1", free_port())


def test_ports_handed_out_never_overlap_and_stay_out_of_the_ephemeral_range() -> None:
    # The kernel takes outgoing connections' local ports from 32768 up: a port chosen there can be gone a moment later.
    blocks = [range(low, low + 65) for low in (free_port(65) for _ in range(20))]
    singles = [free_port() for _ in range(50)]
    taken = [port for block in blocks for port in block] + singles
    assert len(taken) == len(set(taken)) and max(taken) < 32768


def test_connections_an_earlier_service_left_in_time_wait_do_not_count() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
            client.recv(1)
    ensure_port_free("127.0.0.1", port)


def test_prod_puts_haproxy_on_the_port_through_its_own_config_whatever_the_shell_says() -> None:
    prod = yaml.safe_load(PROD.read_text())
    assert haproxy_enabled(prod, {})
    assert haproxy_enabled(prod, {HAPROXY_SWITCH: "0"})  # the controller's environment wins over the inherited one
    ServeDeploySchema.model_validate(prod)  # a key Serve itself accepts, not one of the project's


def test_the_proxy_can_be_chosen_over_the_config() -> None:
    prod = yaml.safe_load(PROD.read_text())
    assert not haproxy_enabled(with_ingress_proxy(prod, "serve"), {HAPROXY_SWITCH: "1"})
    assert haproxy_enabled(with_ingress_proxy({"applications": []}, "haproxy"), {})
    assert not haproxy_enabled({"applications": []}, {})
    assert haproxy_enabled({"applications": []}, {HAPROXY_SWITCH: "1"})
    with pytest.raises(ValueError, match="ingress proxy must be one of"):
        with_ingress_proxy(prod, "nginx")


def test_the_controller_waits_for_a_starting_proxy_as_long_as_haproxy_gives_itself() -> None:
    # Serve marks a proxy unhealthy after three readiness checks; HAProxy's own start may take the whole timeout
    prod = yaml.safe_load(PROD.read_text())
    assert 3 * float(controller_env(prod)[PROXY_READY_CHECK]) > RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S
    assert float(controller_env(with_ingress_proxy({"applications": []}, "haproxy"))[PROXY_READY_CHECK]) >= 30
    own = {"controller_options": {"runtime_env": {"env_vars": {PROXY_READY_CHECK: "60"}}}, "applications": []}
    assert controller_env(with_ingress_proxy(own, "haproxy"))[PROXY_READY_CHECK] == "60"
