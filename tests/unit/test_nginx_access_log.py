"""The shipped nginx config logs no query string (issue 14 item 12): an old client's
WebSocket URL may carry its API key as ?apiKey=, which nginx's default `combined` format
writes down with `$request`. Read from deploy/nginx/order_engine.conf as shipped."""

from __future__ import annotations

import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "deploy/nginx/order_engine.conf"
# Variables that hold the query string, or the request line or URI with it.
QUERY_VARIABLES = (
    "$request ",
    '$request"',
    "$request'",
    "$request_uri",
    "$args",
    "$query_string",
    "$arg_",
)


def test_every_access_log_uses_a_format_without_the_query_string() -> None:
    text = re.sub(r"#[^\n]*", "", CONF.read_text())
    formats = {
        name: " ".join(re.findall(r"'([^']*)'", body))
        for name, body in re.findall(r"log_format\s+(\S+)\s+([^;]*);", text)
    }
    logs = re.findall(r"access_log\s+([^;]*);", text)
    assert logs, "no access_log: nginx would log every request line in its default format"
    for directive in logs:
        words = directive.split()
        if words == ["off"]:
            continue
        assert len(words) >= 2 and words[1] in formats, directive  # never the default format
        line = formats[words[1]] + " "
        assert not [v for v in QUERY_VARIABLES if v in line], line
        assert "$uri" in line  # what was asked for is still logged, without its query
