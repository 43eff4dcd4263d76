"""The one way the tests and the benchmark start a server process, and what they start with it.

It lives here, with no pytest import, so that `bench` (a plain program run as
`python -m bench`) imports it as well: tests and benchmark then start the engine, the chain
service, nginx and Redis the same way, and a fix to one is a fix to both. Whether a missing
program skips or fails a test is pytest's business, decided in `tests/support/services.py`
from the `MissingProgram` raised here; the benchmark decides for itself.

Every server is started as a user would start it (its command line and environment
variables, in a clean environment: the caller's own settings must not leak in) and counts as
started once its ready line reaches stdout. Its stderr goes straight to `<name>.log`, never to
a pipe nobody reads, so a chatty server cannot block on its own logs; its stdout goes to
`<name>.out`, and the lines up to the ready one are kept as its banner. On exit it is stopped
with SIGTERM, as a process manager would, and killed if it does not stop in time. Commands
that are not servers (a client, a one-off run, the load generator) go through `spawn` and
`run`, in the same clean environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# The engine's banner is two lines printed at once; its last line means both have arrived.
ENGINE_READY = "Try: curl"
SERVER_READY = "listening on"
REDIS_READY = "Ready to accept connections"
# nginx logs this once its listening sockets are open.
NGINX_READY = "start worker process"
# Settings that would take over from the ones a launcher passes (see order_engine.config).
_CALLERS_SETTINGS = ("PORT", "HOST", "DATABASE_URL", "REDIS_URL", "REDIS_HOST", "POSTGRES_HOST")


class ProcessFailed(RuntimeError):
    """A process exited or answered wrongly; the message says where its logs are."""


class MissingProgram(RuntimeError):
    """A program a launcher needs (nginx, redis-server) is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_program(name: str, *fallbacks: str) -> str | None:
    """On PATH, or at one of the fallbacks (sbin is not on every user's PATH)."""
    return shutil.which(name) or next((p for p in fallbacks if Path(p).exists()), None)


@dataclass(slots=True)
class Process:
    process: asyncio.subprocess.Process
    url: str
    log: Path
    banner: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9: no shutdown, no lease released."""
        self.process.kill()

    async def wait(self) -> int:
        return await self.process.wait()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDER_ENGINE_")}
    for key in _CALLERS_SETTINGS:
        env.pop(key, None)
    # The checkout's packages, whatever the working directory (bench.floor_app, bench.load).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


@asynccontextmanager
async def launch(
    args: Sequence[str],
    ready: str,
    url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[Process]:
    """Start `args` in `log`'s directory and wait until a line of its stdout contains
    `ready`. `stop_signal` is sent on exit if it still runs (SIGKILL: left as a crash
    would leave it)."""
    out = log.with_suffix(".out")
    with log.open("ab") as stderr, out.open("ab") as stdout_copy:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=log.parent,
            env=clean_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        assert proc.stdout is not None
        stdout = proc.stdout
        copier: asyncio.Task[None] | None = None
        try:
            banner: list[str] = []
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    while not banner or ready not in banner[-1]:
                        line = await stdout.readline()
                        stdout_copy.write(line)
                        stdout_copy.flush()
                        if not line:
                            raise ProcessFailed(
                                f"{args[:3]} exited before it was ready; see {log}: "
                                f"{_tail(log)} and {out}: {_tail(out)}"
                            )
                        banner.append(line.decode(errors="replace"))
            except TimeoutError:
                raise ProcessFailed(
                    f"{args[:3]} not ready in {READY_TIMEOUT_S:.0f} s; see {log} and {out}"
                ) from None

            async def copy_rest() -> None:
                while line := await stdout.readline():
                    stdout_copy.write(line)
                    stdout_copy.flush()

            copier = asyncio.create_task(copy_rest())
            yield Process(proc, url, log, "".join(banner))
        finally:
            await _stop(proc, stop_signal)
            if copier is not None:
                copier.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await copier


async def _stop(proc: asyncio.subprocess.Process, stop_signal: signal.Signals) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(stop_signal)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def spawn(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bool = False,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A command that is not a server (a client, a one-off run), its output piped to the
    caller; killed on exit if it still runs, so a failing test leaves nothing behind."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=clean_env(env),
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run(
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> Finished:
    """Run a command to its end; TimeoutError (and the command killed) if it takes longer."""
    async with spawn(args, cwd=cwd, env=env, stdin=input is not None) as proc:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(input)
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


# -- the programs ------------------------------------------------------------------------------


def engine(
    workdir: Path,
    name: str,
    *,
    store_url: str | None = None,
    profile: str = "instant",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    stop_signal: signal.Signals = signal.SIGTERM,
    python: str = sys.executable,
) -> AbstractAsyncContextManager[Process]:
    """`python -m order_engine` with its defaults, except where the caller says: its own
    SQLite file in `workdir` unless `store_url`, the instant venues unless `profile`, a
    replica id of `name`, and `env` last (it overrides all of these). `python` may be
    another checkout's interpreter (the benchmark compares two); its `env` then names that
    checkout on PYTHONPATH."""
    port = free_port() if port is None else port
    settings = {
        "PORT": str(port),
        "ORDER_ENGINE_STORE_URL": store_url or f"sqlite:///{workdir}/orders.db",
        "ORDER_ENGINE_VENUES_PROFILE": profile,
        "ORDER_ENGINE_ENGINE_REPLICA_ID": name,
        **(env or {}),
    }
    return launch(
        [python, "-m", "order_engine", *args],
        ENGINE_READY,
        f"http://127.0.0.1:{port}",
        workdir / f"{name}.log",
        settings,
        stop_signal=stop_signal,
    )


def engine_process(tmp_path: Path, port: int, **env: str) -> AbstractAsyncContextManager[Process]:
    """One engine on `tmp_path`'s SQLite file, as a user runs it; the same port (and so the
    same replica id and log) again is a restart of that engine. Killed on exit: a test that
    wants a graceful stop signals it itself."""
    return engine(tmp_path, f"engine-{port}", port=port, env=env, stop_signal=signal.SIGKILL)


def replica(
    tmp_path: Path, name: str, store_url: str, chain_url: str, redis_url: str, *args: str
) -> AbstractAsyncContextManager[Process]:
    """An engine replica of the scaled-out topology, with leases short enough that a
    takeover happens within a test."""
    env = {
        "REDIS_URL": redis_url,
        "ORDER_ENGINE_VENUES_CHAIN_URL": chain_url,
        "ORDER_ENGINE_ENGINE_LEASE_S": "1.0",
        "ORDER_ENGINE_ENGINE_CLAIM_INTERVAL_MS": "50",
        "ORDER_ENGINE_ENGINE_RETRY_BASE_MS": "5",
    }
    return engine(tmp_path, name, store_url=store_url, env=env, args=args)


def chain_service(workdir: Path, *args: str) -> AbstractAsyncContextManager[Process]:
    """`python -m order_engine.chain` with the instant profile; `args` add to (or, given
    again, override) its options."""
    port = free_port()
    command = [sys.executable, "-m", "order_engine.chain", "--port", str(port)]
    return launch(
        [*command, "--profile", "instant", *args],
        SERVER_READY,
        f"http://127.0.0.1:{port}",
        workdir / "chain.log",
    )


def nginx(workdir: Path, upstreams: list[str]) -> AbstractAsyncContextManager[Process]:
    """nginx in front of `upstreams`, with the proxy settings the compose file uses."""
    binary = find_program("nginx", "/usr/sbin/nginx")
    if binary is None:
        raise MissingProgram("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    servers = "\n".join(
        f"        server {u.removeprefix('http://')} max_fails=1 fail_timeout=5s;"
        for u in upstreams
    )
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "nginx" / folder).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx" / "nginx.conf"
    # Its log goes to stdout, where the launcher looks for the ready line.
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {workdir}/nginx/nginx.pid;
error_log /dev/stdout notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx/client_body;
    proxy_temp_path {workdir}/nginx/proxy;
    fastcgi_temp_path {workdir}/nginx/fastcgi;
    uwsgi_temp_path {workdir}/nginx/uwsgi;
    scgi_temp_path {workdir}/nginx/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream order_engine {{
        least_conn;
{servers}
        keepalive 32;
        keepalive_timeout 10s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {REPO}/deploy/nginx/proxy.conf;
            proxy_pass http://order_engine;
        }}
    }}
}}
""")
    args = [binary, "-p", str(workdir / "nginx"), "-c", str(conf)]
    return launch(args, NGINX_READY, f"http://127.0.0.1:{port}", workdir / "nginx.log")


def redis_server(port: int, workdir: Path) -> AbstractAsyncContextManager[Process]:
    """A Redis of the caller's own, so it can be stopped mid-stream (and started again on
    the same port) without disturbing anyone else's."""
    binary = find_program("redis-server")
    if binary is None:
        raise MissingProgram("redis-server is not installed")
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    return launch(args, REDIS_READY, f"redis://127.0.0.1:{port}/0", workdir / "redis.log")
