"""Schemathesis against the service's own OpenAPI schema: generated requests never get a server error.

The URL-fetching routes are left out (remove.bg's route takes image_url and bg_image_url): generated URLs would
make the service look up arbitrary host names, and tests send nothing off this machine. Their inputs are covered by
test_ssrf.py, the URL unit tests and test_compat_apis.py. Each API's errors keep its own shape.
(Schemathesis's pytest plugin does not run under pytest 9, so the operations are driven with hypothesis here.)
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

EXCLUDED = {("GET", "/v1/remove-background"), ("POST", "/v1/remove-background/batch"), ("GET", "/api/remove"),
            ("POST", "/v1.0/removebg")}


def error_of(path: str, body: dict) -> object:
    """The error in the shape of the API that `path` belongs to."""
    if path.startswith("/api/"):
        return body["detail"]
    return body["error"]["code"]


def test_generated_requests_get_no_server_error(service: str) -> None:
    schema = schemathesis.openapi.from_url(f"{service}/openapi.json")
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def requests_never_fail_on_the_server(case) -> None:
            response = case.call(base_url=service, timeout=60)
            assert response.status_code < 500, (case.method, case.path, case.query, response.text[:500])
            if response.status_code >= 400:
                assert error_of(case.path, response.json()), response.text[:500]

        requests_never_fail_on_the_server()
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    assert len(fuzzed) >= 5, fuzzed
