"""Command line: `python -m order_engine` serves (the default command)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from order_engine import __version__
from order_engine.config import (
    ROLES,
    ConfigError,
    Settings,
    default_config_path,
    load_settings,
    validate,
)
from order_engine.logs import configure as configure_logs
from order_engine.runtime import install_uvloop, listen

_WATCH_EXITS = (
    "exit status: 0 confirmed, 1 failed, 3 cancelled, 4 expired,\n"
    "2 the order could not be submitted or watched (refused, unknown, unreachable)"
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-engine",
        description="Routes swap orders to the best venue and streams every stage.",
    )
    parser.add_argument("--version", action="version", version=f"order_engine {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (the default)")
    submit = sub.add_parser(
        "submit",
        help="submit an order and show its stages live",
        description="Submit an order and show its stages live until it ends.\n"
        "With --limit-price it is a limit order: armed (open) until the best route pays at\n"
        "least that price, then executed. Ctrl-C stops watching and leaves the order as it is.\n"
        "With --count N: N such orders over one trading session, then a summary.",
        epilog=_WATCH_EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument("token_in", help="token to sell, e.g. SOL")
    submit.add_argument("token_out", help="token to buy, e.g. USDC")
    submit.add_argument("amount", help="amount of token_in, e.g. 1.5")
    submit.add_argument("--slippage-bps", type=int, help="slippage tolerance (default 50)")
    submit.add_argument("--client-order-id", help="your own id for the order")
    submit.add_argument(
        "--limit-price",
        metavar="PRICE",
        help="a limit order: the least token_out per one token_in it accepts, e.g. 160",
    )
    submit.add_argument(
        "--count",
        metavar="N",
        type=_positive_count,
        help="submit N such orders over one trading session (one WebSocket), follow each to"
        " its end and print a summary: confirmed, failed, orders/s (exit 0 all confirmed, 1"
        " some did not, 2 some could not be submitted)",
    )
    submit.set_defaults(usage_error=submit.error)
    expiry = submit.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in",
        metavar="SECONDS",
        type=_seconds,
        help="with --limit-price: expire unfilled after this long (the server's default 24 h,"
        " at most 7 days)",
    )
    expiry.add_argument(
        "--expires-at",
        metavar="TIME",
        help="with --limit-price: expire unfilled at this time, epoch seconds or ISO 8601"
        " with a zone (e.g. 2030-01-01T12:00:00Z)",
    )
    watch = sub.add_parser(
        "watch",
        help="show an order's stages live",
        description="Show an order's stages live (its history first) until it ends.",
        epilog=_WATCH_EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("order_id")
    cancel = sub.add_parser(
        "cancel",
        help="cancel a pending or open order",
        description="Cancel an order that is pending or open (a limit order waiting for its\n"
        "price) and print it. Once its execution began (routing and after) or it ended, it\n"
        "can no longer be cancelled.",
        epilog="exit status: 0 cancelled (the order is printed), 1 not cancellable (its "
        "status is printed),\n2 no such order (or another client's) or any other error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cancel.add_argument("order_id")
    cancel.add_argument("--json", action="store_true", help="print the order as JSON")
    for p in (submit, watch, cancel):
        p.add_argument(
            "--url",
            default=os.environ.get("ORDER_ENGINE_URL", "http://127.0.0.1:3000"),
            help="the engine (default http://127.0.0.1:3000, env ORDER_ENGINE_URL)",
        )
        p.add_argument(
            "--api-key",
            default=os.environ.get("ORDER_ENGINE_API_KEY"),
            help="when the engine requires one (env ORDER_ENGINE_API_KEY)",
        )
    key = sub.add_parser("new-key", help="make an API key and the [auth] api_keys entry for it")
    key.add_argument("name", help="the client's name (orders are scoped to it)")
    for p in (parser, serve):
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default 3000, env PORT)")
        p.add_argument("--config", type=Path, help="TOML file (default ./config.toml if present)")
        p.add_argument(
            "--log-format",
            choices=("text", "json"),
            help="text (default) or json: one JSON object per line, for log collectors",
        )
        p.add_argument(
            "--role",
            choices=ROLES,
            help="all (default): take and execute orders; api: take orders, execute none;"
            " worker: execute what api replicas took (needs PostgreSQL)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "new-key":
        return _new_key(args.name)
    expiry = getattr(args, "expires_in", None) is not None or getattr(args, "expires_at", None)
    if args.command == "submit" and args.limit_price is None and expiry:
        args.usage_error("--expires-in and --expires-at need --limit-price (a limit order)")
    if args.command == "submit" and (args.count or 1) > 1 and args.client_order_id:
        args.usage_error("--client-order-id names one order: not with --count")
    if args.command in ("submit", "watch", "cancel"):
        return _client(args)
    try:
        settings = load_settings(args.config or default_config_path())
        overrides = {}
        if args.host:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        settings = settings.replace(server=overrides)
        if args.role:
            settings = settings.replace(engine={"role": args.role})
        if args.log_format:
            settings = settings.replace(server={"log_format": args.log_format})
        validate(settings)
    except ConfigError as exc:
        print(f"order-engine: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def serve(settings: Settings) -> int:
    configure_logs(settings.server.log_level, settings.server.log_format)
    install_uvloop()
    from order_engine.app import SERVICES, build_app  # after the loop policy is chosen
    from order_engine.serving import serve as serve_app
    from order_engine.store import StoreUnavailable
    from order_engine.store.sqlite_lock import DatabaseInUse
    from order_engine.venues.chain_state import ChainStateUnavailable

    host, port = settings.server.host, settings.server.port
    # Bound before start-up, which resumes the database's unfinished orders: an engine
    # that cannot listen would otherwise take them from the one that does, then hand them
    # back to nobody.
    try:
        sockets = listen(host, port, settings.server.backlog)
    except OSError as exc:
        print(f"order-engine: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    app = build_app(settings)

    def banner() -> None:
        shown = "localhost" if host in {"127.0.0.1", "::1"} else host
        print(
            f"order_engine {__version__} listening on http://{host}:{port}"
            f" (role {settings.engine.role}, store {settings.store.url},"
            f" venues {settings.venues.chain_url or settings.venues.profile})\n"
            f"Try: curl -s -X POST http://{shown}:{port}/api/order/execute"
            " -H 'Content-Type: application/json'"
            ' -d \'{"tokenIn":"SOL","tokenOut":"USDC","amount":1.5}\'',
            flush=True,
        )

    try:
        metrics = app[SERVICES].metrics
        asyncio.run(serve_app(app, sockets, settings, metrics, ready=banner))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130
    except DatabaseInUse as exc:
        print(f"order-engine: {exc}", file=sys.stderr)
        return 1
    except (StoreUnavailable, ChainStateUnavailable) as exc:
        # One line that names the file or server and the cause, not a traceback.
        print(f"order-engine: cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        for sock in sockets:  # a start-up that failed never handed them to a server to close
            sock.close()
    return 0


def _client(args: argparse.Namespace) -> int:
    from order_engine.client import order_request, parse_time
    from order_engine.client_commands import run, run_cancel, run_many

    order = None
    if args.command == "submit":
        order = order_request(
            args.token_in,
            args.token_out,
            args.amount,
            slippage_bps=args.slippage_bps,
            client_order_id=args.client_order_id,
            limit_price=args.limit_price,
            expires_in=args.expires_in,
            expires_at=None if args.expires_at is None else parse_time(args.expires_at),
        )
    try:
        if args.command == "cancel":
            return asyncio.run(run_cancel(args.url, args.api_key, args.order_id, as_json=args.json))
        if order is not None and args.count is not None:
            return asyncio.run(run_many(args.url, args.api_key, order, args.count))
        order_id = getattr(args, "order_id", None)
        return asyncio.run(run(args.url, args.api_key, order=order, order_id=order_id))
    except KeyboardInterrupt:
        return 130


def _new_key(name: str) -> int:
    from order_engine.api.auth import new_key

    if not name or ":" in name or not name.isprintable():
        print("order-engine: the name must be printable and contain no ':'", file=sys.stderr)
        return 2
    key, entry = new_key(name)
    print(f"API key for {name} (give it to the client; it is not stored anywhere):\n  {key}")
    print(f'Add to config.toml under [auth]:\n  api_keys = ["{entry}"]')
    return 0


if __name__ == "__main__":
    sys.exit(main())
