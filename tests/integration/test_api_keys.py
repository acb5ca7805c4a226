"""API keys on the deployed app: 401 without a valid key, health routes stay open, keys never echoed."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.images import encode, red_square
from tests.integration.deployment import deploy

KEY = "integration-secret-key"


def test_routes_need_a_valid_key_and_health_stays_open(base_url: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    keys_file = tmp_path / "api_keys"
    keys_file.write_text(f"# test key\n{KEY}\n")
    deploy(tiny_model_dir, {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}, {"api_keys_file": str(keys_file)})
    url = f"{base_url}/v1/remove-background"
    body, png = encode(red_square()), {"Content-Type": "image/png"}

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.post(url, content=body, headers={**png, **headers}, trust_env=False, timeout=60)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
        assert KEY not in response.text
    assert httpx.get(f"{base_url}/v2/unknown", trust_env=False).status_code == 401, "no probing without a key"

    authorized = httpx.post(url, content=body, headers={**png, "Authorization": f"Bearer {KEY}"}, trust_env=False,
                            timeout=60)
    assert authorized.status_code == 200 and authorized.headers["content-type"] == "image/png"
    assert httpx.get(f"{base_url}/healthz", trust_env=False).status_code == 200
    assert httpx.get(f"{base_url}/readyz", trust_env=False, timeout=30).status_code == 200
    # The page and its files load without a key (the page asks for it); what the page then reads does not.
    for path in ("/", "/page/page.js", "/page/page.css"):
        assert httpx.get(f"{base_url}{path}", trust_env=False, timeout=30).status_code == 200, path
    assert httpx.get(f"{base_url}/v1/info", trust_env=False, timeout=30).status_code == 401
    assert httpx.get(f"{base_url}/page/../v1/info", trust_env=False, timeout=30).status_code == 401
    info = httpx.get(f"{base_url}/v1/info", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False, timeout=30)
    assert KEY not in info.text
