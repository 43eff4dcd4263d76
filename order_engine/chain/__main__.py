"""`python -m order_engine.chain`: serve the simulated market for engine replicas to share."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from order_engine.config import ConfigError, default_config_path, load_settings
from order_engine.runtime import install_uvloop
from order_engine.venues.profiles import Profile

DEFAULT_PORT = 3100
# Not the in-process chain's file ([venues] chain_state): an engine run beside the service
# must not find its chain's file taken, nor trade on the service's history.
DEFAULT_STATE = "data/chain-service.db"
# In-flight long polls are cut short on shutdown; the remote adapter reports them as
# transient and the engine asks again, so waiting the full 30 s would buy nothing.
SHUTDOWN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Options:
    host: str
    port: int
    profile: Profile
    seed: int
    log_level: str
    state: str  # the chain's state file; "" keeps it in memory


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m order_engine.chain",
        description="Serve the simulated venues and chain over HTTP, shared by engine replicas.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help=f"port (default env CHAIN_PORT, else {DEFAULT_PORT})"
    )
    parser.add_argument("--config", type=Path, help="TOML file (default ./config.toml if present)")
    parser.add_argument("--seed", type=int, help="market seed (default [venues] seed)")
    parser.add_argument("--profile", help="market profile (default [venues] profile)")
    parser.add_argument(
        "--state",
        help="the chain's state file: its ledger, transactions received and pools, kept"
        " across restarts; '' keeps them in memory (default env CHAIN_STATE, else"
        f" {DEFAULT_STATE})",
    )
    return parser


def _options(args: argparse.Namespace, env: Mapping[str, str]) -> Options:
    """Raises ConfigError with one line saying what is wrong."""
    settings = load_settings(args.config or default_config_path(), env)
    name = args.profile or settings.venues.profile
    if name not in settings.profiles:
        known = ", ".join(sorted(settings.profiles))
        raise ConfigError(f"profile {name!r} is not one of {known}")
    # PORT is the engine's; a chain service started beside it must not take it.
    port = args.port if args.port is not None else _env_port(env)
    if not 0 < port < 65536:
        raise ConfigError(f"port must be 1..65535, not {port}")
    seed = settings.venues.seed if args.seed is None else args.seed
    state = args.state if args.state is not None else env.get("CHAIN_STATE", DEFAULT_STATE)
    return Options(args.host, port, settings.profiles[name], seed, settings.server.log_level, state)


def _env_port(env: Mapping[str, str]) -> int:
    text = env.get("CHAIN_PORT")
    if text is None:
        return DEFAULT_PORT
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"CHAIN_PORT: {text!r} is not a port number") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        options = _options(args, os.environ)
    except ConfigError as exc:
        print(f"order_engine.chain: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(options)


def serve(options: Options) -> int:
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    install_uvloop()
    # Imported after the loop policy is chosen, as the engine's CLI does.
    from order_engine.chain.server import build_chain_app
    from order_engine.venues.chain_state import ChainState, ChainStateUnavailable
    from order_engine.venues.market import SimulatedMarket

    state = ChainState(options.state) if options.state else None  # opened at start
    app = build_chain_app(SimulatedMarket(options.profile, seed=options.seed, state=state))

    def banner(_: str) -> None:
        print(
            f"order_engine chain service listening on http://{options.host}:{options.port}"
            f" (profile {options.profile.name}, seed {options.seed},"
            f" state {options.state or 'in memory'})",
            flush=True,
        )

    try:
        web.run_app(
            app,
            host=options.host,
            port=options.port,
            print=banner,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=None,
            handle_signals=True,
            # A caller that gives up (its quote timed out) must not leave a handler behind.
            handler_cancellation=True,
        )
    except ChainStateUnavailable as exc:
        print(f"order_engine.chain: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{options.host}:{options.port}"
        print(f"order_engine.chain: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
