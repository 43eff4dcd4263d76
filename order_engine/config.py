"""Settings: built-in defaults, then a TOML file, then the environment.

`config.toml` at the repository root spells out every default (a test keeps it equal to the
dataclasses below). Any key can be overridden as `ORDER_ENGINE_<SECTION>_<KEY>`; the seed's
variables (`PORT`, `HOST`, `DATABASE_URL`, `REDIS_URL`, `REDIS_HOST`, `POSTGRES_*`) keep their
meaning. Bad configuration raises `ConfigError` with one line that says what and where.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from order_engine.venues.profiles import PROFILES, Profile


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    max_body_bytes: int = 16_384
    # A request body must arrive within this (slow senders would hold handlers forever).
    body_timeout_s: float = 10.0
    # A request's head (request line and headers) must arrive within this of the connection
    # opening or of the head's first byte; a client that trickles one in (slowloris) is cut off.
    header_timeout_s: float = 10.0
    # A connection idle between requests is closed after this. Behind a proxy that keeps
    # connections to the engine alive, keep the proxy's idle timeout the shorter one.
    keepalive_timeout_s: float = 15.0
    # Connections the kernel completes and holds for the engine to accept (the listen
    # backlog; the kernel caps it at net.core.somaxconn). Past it, a new connection's
    # handshake is dropped and the client retries a second later: a burst of connections
    # (bots reconnecting, a WebSocket per order) would meet seconds of silence instead of an
    # answer. aiohttp's default of 128 overflowed some 12,000 times in one benchmark row
    # (2,400 clients, a WebSocket each per order).
    backlog: int = 4096
    # How long a graceful stop waits for in-flight stages before cancelling them.
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line, for log collectors


@dataclass(frozen=True, slots=True)
class EngineSettings:
    workers: int = 10
    queue_size: int = 10_000
    max_attempts: int = 3
    retry_base_ms: float = 200.0
    retry_max_ms: float = 5_000.0
    quote_timeout_ms: float = 1_000.0
    # How long one wait for the chain's verdict on a submitted transaction lasts; nothing is
    # decided when it runs out. A transaction still pending is waited for again (resending
    # it could execute the order twice) until the chain settles it; one the chain never saw
    # is looked for again until its blockhash expires, and only then retried with fresh
    # quotes, while attempts remain.
    confirm_timeout_ms: float = 60_000.0
    # Transactions in flight at once: a slot is taken before the build and given back when
    # the chain's verdict is in (confirmations are awaited off the workers, pipelined).
    max_in_flight: int = 5_000
    # all: takes and executes orders; api: takes orders and streams them, executes none;
    # worker: executes orders that api replicas took, serves no public API.
    role: str = "all"
    # Unique among live replicas (empty: host-pid-random). A stable id lets a restarted
    # replica take its own orders back at once instead of waiting for their leases.
    replica_id: str = ""
    lease_s: float = 15.0  # an order whose owner stops renewing is taken over after this
    claim_interval_ms: float = 500.0  # how often replicas look for orders nobody holds


ROLES = ("all", "api", "worker")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # "name:sha256-hex-of-the-key" per client (`python -m order_engine new-key NAME` makes
    # one). Empty: no authentication, for local runs.
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # Token bucket per client (API key, or address for requests without a valid key),
    # shared by the replicas through Redis when the hub is Redis. 0 = unlimited.
    requests_per_s: float = 0.0
    burst: int = 100
    redis_prefix: str = "order_engine:limits:"  # the buckets' keys in Redis start with this
    websockets_per_client: int = 0  # open WebSockets at once; 0 = unlimited
    # Behind a load balancer every client has its address: take it from X-Forwarded-For
    # (only when the balancer sets it, or clients could forge it). Proxies append to the
    # header, so the entry `trusted_proxy_hops` from the right is the one the outermost
    # trusted proxy saw; entries left of it are the client's own.
    trust_forwarded_for: bool = False
    trusted_proxy_hops: int = 1
    # Open connections (at the TCP level, before any API key is read) per peer address, and
    # in all; beyond either a new connection is refused at once (429 or 503, then closed).
    # Per address, a connection that became a WebSocket no longer counts (websockets_per_client
    # does); the total counts every connection: it is what keeps file descriptors free.
    connections_per_address: int = 1_024  # 0 = unlimited
    max_connections: int = 0  # 0: the open-file limit (ulimit -n) less a tenth kept spare
    # Peers exempt from connections_per_address (addresses or networks, e.g. "10.0.0.0/8"):
    # the proxies in front, whose connections carry every client's. With trust_forwarded_for
    # and none listed, every peer is taken for such a proxy and only max_connections holds.
    connections_exempt: tuple[str, ...] = ()

    @property
    def proxy_hops(self) -> int:
        """Trusted X-Forwarded-For hops; 0 when the header is not trusted."""
        return self.trusted_proxy_hops if self.trust_forwarded_for else 0


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = "sqlite:///data/order_engine.db"
    # FULL: an acknowledged event survives power loss, not only a process crash.
    sqlite_synchronous: str = "FULL"
    max_batch: int = 256
    # At start, PostgreSQL not answering is waited for this long, retried with a growing
    # delay (it may be starting beside the engine); 0: give up at once.
    connect_wait_s: float = 30.0


@dataclass(frozen=True, slots=True)
class HubSettings:
    redis_url: str = ""
    inbox_size: int = 64
    # With Redis: how often watchers are checked against the store, for events a replica
    # committed but died before publishing.
    audit_interval_s: float = 5.0


@dataclass(frozen=True, slots=True)
class OrderSettings:
    default_slippage_bps: int = 50
    max_slippage_bps: int = 5_000
    # An order whose best route moves the price more than this fails (permanent).
    max_price_impact_bps: float = 1_000.0
    # An Idempotency-Key answers with its original order for this long, then may be reused.
    idempotency_ttl_s: float = 86_400.0
    # A limit or sniper order without an expiry expires after the default; none may ask
    # for more than the maximum (an order armed forever is an order nobody remembers).
    default_expiry_s: float = 86_400.0
    max_expiry_s: float = 604_800.0


@dataclass(frozen=True, slots=True)
class SimSettings:
    # HTTP controls of the in-process simulated market (/api/sim/...: launch a token, move
    # a price). For demos and tests only: anyone who can reach them moves the market.
    controls: bool = False


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    heartbeat_s: float = 20.0
    # A client that has not taken a message within this time is disconnected.
    send_timeout_s: float = 10.0
    # The execute WebSocket waits this long for its order: a client may take time to
    # compose one, and waiting costs only an idle socket.
    first_message_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class VenueSettings:
    profile: str = "realistic"
    seed: int = 7
    chain_url: str = ""
    # The in-process chain's state file (its ledger, transactions received, pools), so a
    # restart neither forgets nor repeats a swap; "" keeps it in memory (forgotten on exit).
    # The chain service has its own (--state, CHAIN_STATE; data/chain-service.db).
    chain_state: str = "data/chain.db"
    # Split an order across venues only if it yields at least this much more output.
    split_min_gain_bps: float = 1.0
    split_steps: int = 20
    # Quote from the pool states the chain streams (microseconds, no round trip) rather than
    # by asking each venue per order; false: always ask the venues.
    quote_from_stream: bool = True
    # A streamed view this many slots (400 ms each) behind the chain is not quoted from:
    # routing falls back to the venues' quote calls until the stream catches up.
    max_staleness_slots: int = 4


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    hub: HubSettings = field(default_factory=HubSettings)
    orders: OrderSettings = field(default_factory=OrderSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    venues: VenueSettings = field(default_factory=VenueSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    profiles: Mapping[str, Profile] = field(default_factory=lambda: dict(PROFILES))

    @property
    def profile(self) -> Profile:
        return self.profiles[self.venues.profile]

    def replace(self, **sections: Any) -> Settings:
        """A copy with some keys changed: `replace(engine={"workers": 2})`."""
        changes: dict[str, Any] = {}
        for name, values in sections.items():
            changes[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changes)


_SECTIONS = [f.name for f in dataclasses.fields(Settings) if f.name != "profiles"]


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(raw) - {*_SECTIONS, "profiles"}
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")

    sections: dict[str, Any] = {}
    for name in _SECTIONS:
        cls = _section_class(name)
        values = dict(raw.get(name, {}))
        values.update(_env_overrides(name, cls, env))
        sections[name] = _build(cls, values, name)
    sections["profiles"] = _profiles(raw.get("profiles", {}))
    settings = Settings(**sections)
    settings = _apply_seed_variables(settings, env)
    validate(settings)
    return settings


def _section_class(name: str) -> type[Any]:
    hints = typing.get_type_hints(Settings)
    cls = hints[name]
    assert isinstance(cls, type)
    return cls


def _env_overrides(section: str, cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"ORDER_ENGINE_{section.upper()}_{f.name.upper()}"
        if key in env:
            out[f.name] = env[key]
    return out


def _build(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(sorted(unknown))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own invariant (e.g. a profile's ranges)
        raise ConfigError(f"[{where}] {exc}") from None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Values from TOML arrive typed; values from the environment arrive as strings."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in {"1", "true", "yes", "on"}:
                return True
            if str(value).lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        origin = typing.get_origin(kind)
        if origin is tuple:
            if isinstance(value, str):  # from the environment: comma-separated
                value = [v.strip() for v in value.split(",") if v.strip()]
            args = typing.get_args(kind)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], where) for v in value)
            return tuple(_coerce(v, t, where) for v, t in zip(value, args, strict=True))
        if isinstance(kind, types.UnionType):  # pragma: no cover - no such field yet
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {_kind_name(kind)}") from None
    return value


def _kind_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _profiles(raw: Mapping[str, Any]) -> dict[str, Profile]:
    profiles = dict(PROFILES)
    for name, values in raw.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"[profiles.{name}] must be a table")
        base = profiles.get(name)
        merged = {**(dataclasses.asdict(base) if base else {}), **values, "name": name}
        profiles[name] = _build(Profile, merged, f"profiles.{name}")
    return profiles


def _apply_seed_variables(settings: Settings, env: Mapping[str, str]) -> Settings:
    server: dict[str, Any] = {}
    if "PORT" in env:
        server["port"] = _coerce(env["PORT"], int, "PORT")
    if "HOST" in env:
        server["host"] = env["HOST"]
    store: dict[str, Any] = {}
    if env.get("DATABASE_URL"):
        store["url"] = env["DATABASE_URL"]
    elif env.get("POSTGRES_HOST"):
        user = quote(env.get("POSTGRES_USER", "postgres"))
        password = env.get("POSTGRES_PASSWORD")
        auth = f"{user}:{quote(password)}" if password else user
        host = env["POSTGRES_HOST"]
        port = env.get("POSTGRES_PORT", "5432")
        db = env.get("POSTGRES_DB", "postgres")
        store["url"] = f"postgresql://{auth}@{host}:{port}/{db}"
    hub: dict[str, Any] = {}
    if env.get("REDIS_URL"):
        hub["redis_url"] = env["REDIS_URL"]
    elif env.get("REDIS_HOST"):
        hub["redis_url"] = f"redis://{env['REDIS_HOST']}:{env.get('REDIS_PORT', '6379')}/0"
    return settings.replace(server=server, store=store, hub=hub)


def validate(s: Settings) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(what)

    need(0 < s.server.port < 65536, f"server.port must be 1..65535, not {s.server.port}")
    need(s.server.max_body_bytes >= 256, "server.max_body_bytes must be at least 256")
    need(s.server.body_timeout_s > 0, "server.body_timeout_s must be positive")
    need(s.server.header_timeout_s > 0, "server.header_timeout_s must be positive")
    need(s.server.keepalive_timeout_s > 0, "server.keepalive_timeout_s must be positive")
    need(s.server.backlog >= 1, "server.backlog must be at least 1")
    need(s.hub.audit_interval_s > 0, "hub.audit_interval_s must be positive")
    need(s.server.log_format in ("text", "json"), "server.log_format must be text or json")
    need(s.engine.workers >= 1, "engine.workers must be at least 1")
    need(s.engine.queue_size >= 1, "engine.queue_size must be at least 1")
    need(s.engine.max_attempts >= 1, "engine.max_attempts must be at least 1")
    need(s.engine.quote_timeout_ms > 0, "engine.quote_timeout_ms must be positive")
    need(s.engine.max_in_flight >= 1, "engine.max_in_flight must be at least 1")
    need(s.engine.role in ROLES, f"engine.role must be one of {', '.join(ROLES)}")
    need(s.engine.lease_s > 0, "engine.lease_s must be positive")
    need(s.engine.claim_interval_ms > 0, "engine.claim_interval_ms must be positive")
    need(
        s.engine.role == "all" or not s.store.url.startswith("sqlite://"),
        f"engine.role {s.engine.role!r} needs a shared store: SQLite serves one process,"
        " which must run role 'all' (use postgresql:// to split api and worker)",
    )
    need(s.store.max_batch >= 1, "store.max_batch must be at least 1")
    need(s.store.connect_wait_s >= 0, "store.connect_wait_s must not be negative")
    need(
        s.store.sqlite_synchronous.upper() in {"OFF", "NORMAL", "FULL", "EXTRA"},
        "store.sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA",
    )
    need(
        s.store.url.startswith(("sqlite://", "postgresql://", "postgres://")),
        f"store.url must start with sqlite:// or postgresql://, not {s.store.url!r}",
    )
    need(
        0 <= s.orders.default_slippage_bps <= s.orders.max_slippage_bps,
        "orders.default_slippage_bps must be between 0 and orders.max_slippage_bps",
    )
    need(
        s.venues.profile in s.profiles,
        f"venues.profile {s.venues.profile!r} is not one of {', '.join(sorted(s.profiles))}",
    )
    need(s.venues.split_steps >= 2, "venues.split_steps must be at least 2")
    need(s.venues.max_staleness_slots >= 1, "venues.max_staleness_slots must be at least 1")
    need(s.websocket.send_timeout_s > 0, "websocket.send_timeout_s must be positive")
    need(
        s.websocket.first_message_timeout_s > 0,
        "websocket.first_message_timeout_s must be positive",
    )
    need(s.orders.idempotency_ttl_s > 0, "orders.idempotency_ttl_s must be positive")
    need(
        0 < s.orders.default_expiry_s <= s.orders.max_expiry_s,
        "orders.default_expiry_s must be positive and at most orders.max_expiry_s",
    )
    need(s.limits.requests_per_s >= 0, "limits.requests_per_s must not be negative")
    need(s.limits.burst >= 1, "limits.burst must be at least 1")
    need(s.limits.websockets_per_client >= 0, "limits.websockets_per_client must not be negative")
    need(s.limits.trusted_proxy_hops >= 1, "limits.trusted_proxy_hops must be at least 1")
    need(
        s.limits.connections_per_address >= 0,
        "limits.connections_per_address must not be negative",
    )
    need(s.limits.max_connections >= 0, "limits.max_connections must not be negative")
    for entry in s.limits.connections_exempt:
        need(_is_network(entry), f"limits.connections_exempt: {entry!r} is no address or network")
    for entry in s.auth.api_keys:
        name, _, digest = entry.partition(":")
        need(
            bool(name) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
            "auth.api_keys entries must be 'name:<sha256 hex of the key>'"
            " (python -m order_engine new-key NAME prints one)",
        )
    names = [entry.partition(":")[0] for entry in s.auth.api_keys]
    need(len(names) == len(set(names)), "auth.api_keys names must be unique")


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def default_config_path() -> Path | None:
    """`./config.toml` when there is one (running from a checkout), else built-in defaults."""
    candidate = Path("config.toml")
    return candidate if candidate.is_file() else None
