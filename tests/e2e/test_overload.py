"""Open-loop overload at twice the measured capacity: every answer is a cut-out or a 503 with Retry-After.

A shortened scripts/overload.py on the tiny model: capacity from a short closed loop, then two runs of 15 s of
arrivals at twice that rate, with the memory of the service's processes sampled throughout.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import yaml

from harness.answers import OK, SHED
from harness.fault import wait_healthy
from harness.overload import OverloadPlan, run_overload
from serve_app.serve_config import haproxy_enabled
from tests.helpers import TINY_CONFIG
from tests.images import distinct_pngs

# Distinct sizes, so that an answer meant for another request shows as a wrong size.
PHOTOS = distinct_pngs(8)
# More than the ingress admits at once (max_ongoing_requests 8 + max_queued_requests 64): its queue is full
# from the start, so every run must shed, on a fast machine as on a slow one.
BURST = 300
# Memory, summed over the proxy and the replicas. The first overload of a fresh service grew it 45-75 MiB on a
# 2-core CPU (allocator pools sized by the peak of ~500 connections and queued requests), a second run at the
# same rate 3-6 MiB. A leak of one decoded 320x200 input and its mask (~250 KiB) per request, over the 500+
# cut-outs of a run, would add 125 MiB or more; even a leaked mask alone (~64 KiB) passes 32 MiB.
FIRST_RUN_MAX_GROWTH_MIB = 128
LATER_RUN_MAX_GROWTH_MIB = 32
# The processes of the service: Serve's proxy and one replica each; HAProxy and its manager actor as well when
# the tier runs behind the HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1 .venv/bin/python -m pytest tests/e2e).
SERVICE_PROCESSES = {"BackgroundRemover": 1, "Ingress": 1, "ProxyActor": 1} | (
    {"HAProxyManager": 1, "HAProxy": 1} if haproxy_enabled(yaml.safe_load(TINY_CONFIG.read_text()), os.environ) else {})


@pytest.fixture(scope="module")
def overload_record(service: str) -> dict:
    # The client must offer the whole load even when this 2-core machine also runs the other test worker and the
    # proxy answers slowly: room for 4096 requests in flight (the file limit here is far above it).
    plan = OverloadPlan(duration_s=15.0, rate_factor=2.0, burst=BURST, repeats=2, capacity_clients=16,
                        capacity_s=8.0, capacity_warmup_s=2.0, max_in_flight=4096, timeout_s=60.0)
    record = asyncio.run(run_overload(service, PHOTOS, plan))
    print(json.dumps(record))
    wait_healthy(service, PHOTOS[0], timeout_s=120)
    return record


@pytest.mark.parametrize("run", [0, 1])
def test_overload_answers_only_cutouts_or_503_with_retry_after(overload_record: dict, run: int) -> None:
    overload = overload_record["runs"][run]["overload"]
    assert overload["not_sent_in_flight_cap"] == 0, "the client could not offer the whole load"
    assert set(overload["outcomes"]) <= {OK, SHED}, overload["failure_reasons"]
    assert overload["outcomes"].get(OK, 0) > 0 and overload["outcomes"].get(SHED, 0) > 0, overload["outcomes"]


@pytest.mark.parametrize(("run", "max_growth_mib"), [(0, FIRST_RUN_MAX_GROWTH_MIB), (1, LATER_RUN_MAX_GROWTH_MIB)])
def test_overload_keeps_memory_flat_and_replicas_alive(overload_record: dict, run: int,
                                                       max_growth_mib: float) -> None:
    memory = overload_record["runs"][run]["memory"]
    assert memory["processes_by_role"] == SERVICE_PROCESSES, "a replica was restarted or added under overload"
    assert memory["growth_mib"] < max_growth_mib, memory
