"""docs/order_engine.postman_collection.json: it covers every HTTP endpoint of the OpenAPI
document, and newman runs it green against a real `python -m order_engine` process.

newman comes from the npm registry through `npx` (node must be installed): without `npx` the
run skips, saying why, except under CI (ORDER_ENGINE_REQUIRE_SERVICES=1) where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from order_engine.api.openapi import openapi_document
from tests.support.processes import engine_process, free_port
from tests.support.services import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "docs" / "order_engine.postman_collection.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NEWMAN_TIMEOUT_S = 240  # the first run downloads newman


def collection() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(COLLECTION.read_text())
    return loaded


def requests(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        if "item" in item:
            yield from requests(item["item"])
        else:
            yield item


def request_path(item: dict[str, Any]) -> str:
    raw: str = item["request"]["url"]["raw"]
    assert raw.startswith("{{baseUrl}}/"), raw
    return raw.removeprefix("{{baseUrl}}").split("?", 1)[0]


def test_the_collection_covers_every_http_endpoint() -> None:
    doc = collection()
    assert doc["info"]["schema"] == SCHEMA
    assert any(v["key"] == "baseUrl" for v in doc["variable"])
    items = list(requests(doc["item"]))
    called = {(i["request"]["method"], request_path(i)) for i in items}
    for path, operations in openapi_document()["paths"].items():
        # /api/order/{orderId} matches /api/order/{{orderId}} and /api/order/not-a-uuid.
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method, operation in operations.items():
            if "x-websocket" in operation:
                # WebSockets are described in the collection's description instead.
                assert path in doc["info"]["description"], path
                continue
            assert any(
                m == method.upper() and pattern.match(p.replace("{{", "").replace("}}", ""))
                for m, p in called
            ), f"no request for {method.upper()} {path}"
    for item in items:
        tests = [e for e in item["event"] if e["listen"] == "test"]
        assert tests, item["name"]
        assert any("pm.test(" in line for line in tests[0]["script"]["exec"]), item["name"]


def npx_path() -> str:
    found = shutil.which("npx")
    if found is None:
        reason = "npx is not installed (node and npm are needed to run newman)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; ORDER_ENGINE_REQUIRE_SERVICES=1 makes it mandatory")
        pytest.skip(reason)
    return found


@pytest.mark.timeout(NEWMAN_TIMEOUT_S + 60)
async def test_newman_runs_the_collection_green(tmp_path: Path) -> None:
    npx = npx_path()
    port = free_port()
    async with engine_process(tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant") as engine:
        newman = await asyncio.create_subprocess_exec(
            npx,
            "--yes",
            "newman@6",
            "run",
            str(COLLECTION),
            "--env-var",
            f"baseUrl={engine.url}",
            "--reporters",
            "cli",
            "--color",
            "off",
            cwd=tmp_path,
            env={**os.environ, "NO_UPDATE_NOTIFIER": "1", "npm_config_update_notifier": "false"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(NEWMAN_TIMEOUT_S):
                output, _ = await newman.communicate()
        except TimeoutError:
            newman.kill()
            await newman.wait()
            pytest.fail(f"newman did not finish within {NEWMAN_TIMEOUT_S} s")
    report = output.decode(errors="replace")
    assert newman.returncode == 0, report
    assert re.search(r"assertions\s*│\s*\d+\s*│\s*0\s*│", report), report
