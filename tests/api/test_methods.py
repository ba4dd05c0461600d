"""An unsupported method is a 405 whose Allow header names every method the path serves."""

from __future__ import annotations

import httpx
import pytest

ACTIONS = "/api/v1/actions"
POLICIES = "/api/v1/policies"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (ACTIONS, "GET, POST"),
        (f"{ACTIONS}/1/cancel", "PUT"),
        (f"{ACTIONS}/status/pending", "GET"),
        (POLICIES, "GET, POST"),
        (f"{POLICIES}/web-cpu-high", "DELETE, GET, PUT"),
        (f"{POLICIES}/web-cpu-high/enable", "PUT"),
        # Also /api/v1/policies/{name}: a policy may be called "reload".
        (f"{POLICIES}/reload", "DELETE, GET, POST, PUT"),
    ],
)
async def test_an_unsupported_method_is_a_405_naming_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    # Found by the fuzz test: Starlette named only the methods of the first route matching
    # the path (`Allow: GET` for a path that also takes POST).
    r = await client.request("PATCH", path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json() == {"detail": "Method Not Allowed"}
