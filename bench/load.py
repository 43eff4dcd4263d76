"""The load generator: its own process, so it never shares an event loop with a server.

`python -m bench.load` reads one JSON spec on stdin, drives the servers it names and writes
one JSON result on stdout. Modes:

- `post`: closed loop, `concurrency` clients each POSTing an order, then the next.
- `e2e`: closed loop, each client POSTs an order, watches it on a WebSocket until its
  terminal event, then starts the next; latency is POST -> terminal event received.
- `session`: closed loop on ONE trading session (`GET /api/session`): `concurrency` orders
  in flight, each submitted when the one before it in its slot ended; latency is submit ->
  terminal event received.
- `paced`: open loop, orders arrive at `rate` per second whatever the server does, and
  latency runs from each order's scheduled arrival (a late start counts against the server
  instead of being hidden by it: no coordinated omission).
- `fanout`: `watchers` WebSockets watch one order held at `submitted` by the chain service;
  the chain is released and each watcher's receive time of `confirmed` is recorded.
- `idle`: `watchers` WebSockets held open on one held order; the server's RSS is read
  before and after.

Throughput modes measure a window after a warm-up; the CPU time of the server processes
(`pids`) and of this process is read at the window's edges from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import procfs
from bench.stats import summary_ms

# Alternate directions so the simulated pools stay balanced however many orders run (the
# instant profile has no arbitrageurs to pull prices back).
ORDERS = (
    orjson.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5, "slippageBps": 50}),
    orjson.dumps({"tokenIn": "USDC", "tokenOut": "SOL", "amount": 225, "slippageBps": 50}),
)
# The same orders as a trading session's `order` (JSON text, spliced into each request).
SESSION_ORDERS = tuple(order.decode() for order in ORDERS)
JSON_HEADERS = {"Content-Type": "application/json"}
OP_TIMEOUT_S = 60.0
TERMINAL = ("confirmed", "failed")
# What one operation came to, and when (perf_counter) its answer was read.
Outcome = tuple[str, float]


@dataclass(frozen=True, slots=True)
class Spec:
    mode: str
    urls: list[str]
    pids: list[int] = field(default_factory=list)
    # Processes whose CPU is reported but not charged to the orders (the chain service).
    others: dict[str, int] = field(default_factory=dict)
    concurrency: int = 32
    rate: float = 0.0
    warmup: float = 1.0
    duration: float = 5.0
    watchers: int = 0
    chain_url: str = ""
    # realistic venues fail a few orders for good (slippage, expiry): those are completed
    # orders too; with instant venues a failed order is an error.
    count_failed: bool = False
    seed: int = 1

    @classmethod
    def from_json(cls, raw: bytes) -> Spec:
        return cls(**orjson.loads(raw))


class OpError(Exception):
    """An order that did not complete; `kind` is what the report counts."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, OpError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


@dataclass(slots=True)
class Window:
    """Completions and the CPU time spent between `start` and `end` (perf_counter)."""

    start: float
    end: float
    pids: list[int]
    others: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # POST -> `submitted` seen on the WebSocket: how long an order waits for a worker and
    # for routing, before the chain's own latency.
    to_submitted: list[float] = field(default_factory=list)
    # Paced orders, by the server's own event stamps: pending -> terminal (the engine's part
    # of the latency: not the POST's way in nor the last event's way out), and each step
    # between two events ("pending->routing"; a retry is "submitted->routing") apart.
    in_server: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    # ... and the rest of its latency, by the same (wall) clock: its scheduled arrival ->
    # the pending event's stamp (the client's start, the POST's way in), and the terminal
    # event's stamp -> read by the client (its way out, through the server's loop and the
    # client's).
    way_in: list[float] = field(default_factory=list)
    way_out: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end

    async def read_cpu(self) -> None:
        """Snapshot CPU at the start and the end of the window."""
        await asyncio.sleep(max(0.0, self.start - time.perf_counter()))
        server0, self0 = procfs.total_cpu_seconds(self.pids), procfs.cpu_seconds(os.getpid())
        host0 = procfs.host_busy_seconds()
        others0 = {name: procfs.cpu_seconds(pid) for name, pid in self.others.items()}
        await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
        for name, pid in self.others.items():
            self.cpu[f"{name}_cpu_s"] = procfs.cpu_seconds(pid) - others0[name]
        self.cpu["server_cpu_s"] = procfs.total_cpu_seconds(self.pids) - server0
        self.cpu["loadgen_cpu_s"] = procfs.cpu_seconds(os.getpid()) - self0
        self.cpu["host_busy_s"] = procfs.host_busy_seconds() - host0

    def result(self, completed_in: float | None = None) -> dict[str, Any]:
        span = self.end - self.start
        done = len(self.latencies)
        server_cpu = self.cpu.get("server_cpu_s")
        return {
            "completed": done,
            "window_s": span,
            "rate": done / (completed_in or span),
            "latency_ms": summary_ms(self.latencies),
            **({"submitted_ms": summary_ms(self.to_submitted)} if self.to_submitted else {}),
            **({"in_server_ms": summary_ms(self.in_server)} if self.in_server else {}),
            **({"way_in_ms": summary_ms(self.way_in)} if self.way_in else {}),
            **({"way_out_ms": summary_ms(self.way_out)} if self.way_out else {}),
            **(
                {"step_p99_ms": {k: summary_ms(v)["p99"] for k, v in self.steps.items()}}
                if self.steps
                else {}
            ),
            "errors": dict(self.errors),
            "statuses": dict(self.statuses),
            "cpu_ms_per_op": server_cpu / done * 1000 if server_cpu and done else None,
            "loadgen_cpu_util": self.cpu.get("loadgen_cpu_s", 0.0) / span,
            # Busy cores of the whole machine: near os.cpu_count(), nothing has room to grow.
            "host_busy_cores": self.cpu.get("host_busy_s", 0.0) / span,
            **self.cpu,
        }


def _session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=OP_TIMEOUT_S),
    )


def _ws_url(base: str, order_id: str) -> str:
    return base.replace("http://", "ws://", 1) + f"/api/order/status?orderId={order_id}"


async def post_order(session: aiohttp.ClientSession, base: str, body: bytes) -> str:
    async with session.post(f"{base}/api/order/execute", data=body, headers=JSON_HEADERS) as r:
        payload = await r.read()
        if r.status != 201:
            raise OpError(f"http_{r.status}")
    order_id: str = orjson.loads(payload)["orderId"]
    return order_id


async def watch_to_end(
    session: aiohttp.ClientSession,
    base: str,
    order_id: str,
    on_submitted: Callable[[], None] | None = None,
    stamps: list[tuple[str, float]] | None = None,
) -> Outcome:
    """Watch an order until its terminal event: that status and when it was read (before the
    close handshake, which is the client's business and no part of the order's latency).
    `stamps`: each event's (status, ts) is added to it."""
    async with session.ws_connect(_ws_url(base, order_id)) as ws:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            read_at = time.perf_counter()
            event = orjson.loads(msg.data)
            status: str = event["status"]
            if stamps is not None:
                stamps.append((status, event["ts"]))
            if status in TERMINAL:
                return status, read_at
            if status == "submitted" and on_submitted is not None:
                on_submitted()
                on_submitted = None  # the first time only (a retry submits again)
        raise OpError(f"ws_closed_{ws.close_code}")


class Targets:
    """Which replica takes the k-th POST, and which one serves its WebSocket. The WebSocket
    replica is drawn independently of the POST's, as a load balancer would: with two
    replicas, half the watchers see their order's events through Redis."""

    def __init__(self, urls: list[str], seed: int) -> None:
        self._urls = urls
        self._rng = random.Random(seed)

    def pick(self, k: int) -> tuple[str, str]:
        return self._urls[k % len(self._urls)], self._rng.choice(self._urls)


# -- throughput modes -----------------------------------------------------------------------


async def _closed_loop(
    spec: Spec, op: Callable[[int, Window], Awaitable[Outcome]]
) -> dict[str, Any]:
    """`concurrency` clients run `op` back to back; what completes inside the window counts,
    its latency up to when its answer was read."""
    t0 = time.perf_counter()
    window = Window(t0 + spec.warmup, t0 + spec.warmup + spec.duration, spec.pids, spec.others)
    accepted = {"201", *TERMINAL} - (set() if spec.count_failed else {"failed"})

    async def client(i: int) -> None:
        k = i
        while True:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(OP_TIMEOUT_S):
                    outcome, end = await op(k, window)
            except (aiohttp.ClientError, OSError, TimeoutError, OpError) as exc:
                outcome, end = f"error:{_error_kind(exc)}", time.perf_counter()
            k += spec.concurrency
            if not window.holds(end):
                continue
            if outcome in accepted:
                window.latencies.append(end - start)
                window.statuses[outcome] += 1
            else:
                window.errors[outcome.removeprefix("error:")] += 1
                await asyncio.sleep(0.01)  # a refused client must not spin

    clients = [asyncio.create_task(client(i)) for i in range(spec.concurrency)]
    await window.read_cpu()
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return window.result()


async def run_post(spec: Spec) -> dict[str, Any]:
    async with _session() as session:

        async def op(k: int, window: Window) -> Outcome:
            url = spec.urls[k % len(spec.urls)]
            await post_order(session, url, ORDERS[k % 2])
            return "201", time.perf_counter()

        return await _closed_loop(spec, op)


async def run_e2e(spec: Spec) -> dict[str, Any]:
    targets = Targets(spec.urls, spec.seed)
    async with _session() as session:

        async def op(k: int, window: Window) -> Outcome:
            post_to, watch_on = targets.pick(k)
            start = time.perf_counter()

            def submitted() -> None:
                now = time.perf_counter()
                if window.holds(now):
                    window.to_submitted.append(now - start)

            order_id = await post_order(session, post_to, ORDERS[k % 2])
            return await watch_to_end(session, watch_on, order_id, submitted)

        return await _closed_loop(spec, op)


async def run_paced(spec: Spec) -> dict[str, Any]:
    targets = Targets(spec.urls, spec.seed)
    t0 = time.perf_counter()
    window = Window(t0 + spec.warmup, t0 + spec.warmup + spec.duration, spec.pids, spec.others)
    pending: set[asyncio.Task[None]] = set()
    wall = time.time() - time.perf_counter()  # perf_counter -> the servers' event clock

    async def arrival(session: aiohttp.ClientSession, k: int, scheduled: float) -> None:
        post_to, watch_on = targets.pick(k)

        def submitted() -> None:
            if window.holds(scheduled):
                window.to_submitted.append(time.perf_counter() - scheduled)

        stamps: list[tuple[str, float]] = []
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                order_id = await post_order(session, post_to, ORDERS[k % 2])
                status, read_at = await watch_to_end(session, watch_on, order_id, submitted, stamps)
        except (aiohttp.ClientError, OSError, TimeoutError, OpError) as exc:
            if window.holds(scheduled):
                window.errors[_error_kind(exc)] += 1
            return
        if not window.holds(scheduled):
            return
        if status == "confirmed" or spec.count_failed:
            window.latencies.append(read_at - scheduled)
            window.statuses[status] += 1
            window.in_server.append(stamps[-1][1] - stamps[0][1])
            window.way_in.append(stamps[0][1] - (scheduled + wall))
            window.way_out.append(read_at + wall - stamps[-1][1])
            for (was, before), (now, ts) in itertools.pairwise(stamps):
                window.steps.setdefault(f"{was}->{now}", []).append(ts - before)
        else:
            window.errors[status] += 1

    async with _session() as session:
        cpu = asyncio.create_task(window.read_cpu())
        k = 0
        while (now := time.perf_counter()) < window.end:
            while (scheduled := t0 + k / spec.rate) <= now:
                task = asyncio.create_task(arrival(session, k, scheduled))
                if window.holds(scheduled):
                    pending.add(task)
                k += 1
            await asyncio.sleep(max(0.0, t0 + k / spec.rate - time.perf_counter()))
        await cpu
        # Every order that arrived in the window is waited for: dropping the slow ones at the
        # window's end would cut the tail this mode exists to measure.
        await asyncio.wait(pending, timeout=OP_TIMEOUT_S)
        result = window.result()
        result["offered_rate"] = spec.rate
        return result


# -- one trading session ---------------------------------------------------------------------


async def run_session(spec: Spec) -> dict[str, Any]:
    """Closed loop on ONE trading session: `concurrency` orders in flight, each submitted
    when the one before it in its slot ended; latency: submit sent -> terminal event read."""
    t0 = time.perf_counter()
    window = Window(t0 + spec.warmup, t0 + spec.warmup + spec.duration, spec.pids, spec.others)
    accepted = set(TERMINAL) - (set() if spec.count_failed else {"failed"})
    url = spec.urls[0].replace("http://", "ws://", 1) + "/api/session"
    asked: dict[int, tuple[float, int]] = {}  # request id -> (sent at, slot)
    flying: dict[str, tuple[float, int]] = {}  # order id -> (sent at, slot)
    next_id = 0

    async with _session() as http, http.ws_connect(url, max_msg_size=0) as ws:

        async def submit(slot: int, k: int) -> None:
            nonlocal next_id
            next_id += 1
            asked[next_id] = (time.perf_counter(), slot)
            order = SESSION_ORDERS[k % 2]
            await ws.send_str(f'{{"id":{next_id},"op":"submit","order":{order}}}')

        async def read() -> None:
            k = spec.concurrency
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = orjson.loads(msg.data)
                event = frame.get("event")
                if event is None:
                    start, slot = asked.pop(frame["id"])
                    if "result" in frame:
                        flying[frame["result"]["orderId"]] = (start, slot)
                        continue
                    if window.holds(time.perf_counter()):
                        window.errors[frame["error"]["code"]] += 1
                    await asyncio.sleep(0.01)  # a refused slot must not spin
                elif event["status"] in TERMINAL:
                    start, slot = flying.pop(event["orderId"])
                    end = time.perf_counter()
                    if window.holds(end):
                        if event["status"] in accepted:
                            window.latencies.append(end - start)
                            window.statuses[event["status"]] += 1
                        else:
                            window.errors[event["status"]] += 1
                else:
                    continue
                await submit(slot, k)
                k += 1
            raise OpError(f"ws_closed_{ws.close_code}")

        for slot in range(spec.concurrency):
            await submit(slot, slot)
        reader = asyncio.create_task(read())
        cpu = asyncio.create_task(window.read_cpu())
        await asyncio.wait({reader, cpu}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            cpu.cancel()
            raise reader.exception() or OpError("session_ended")
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return window.result()


# -- WebSocket fan-out and idle connections ------------------------------------------------


async def _admin(session: aiohttp.ClientSession, chain_url: str, action: str) -> None:
    async with session.post(f"{chain_url}/admin/{action}") as r:
        if r.status != 200:
            raise OpError(f"chain_{action}_{r.status}")


class Watchers:
    """Many WebSockets on one order; each notes when it saw `submitted` (it is live and
    subscribed) and when it saw `confirmed`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, count: int, opening: int):
        self._session = session
        self._url = url
        self._count = count
        self._opening = asyncio.Semaphore(opening)
        self.live = 0
        self.all_live = asyncio.Event()
        self.confirmed_at: list[float] = []
        self.confirmed_ts: float | None = None
        self.errors: Counter[str] = Counter()
        self.tasks = [asyncio.create_task(self._watch()) for _ in range(count)]

    async def _watch(self) -> None:
        try:
            async with self._opening:
                ws = await self._session.ws_connect(self._url)
            async with ws:
                async for msg in ws:
                    received = time.time()  # wall clock: compared with the event's own ts
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    event = orjson.loads(msg.data)
                    if event["status"] == "submitted":
                        self.live += 1
                        if self.live == self._count:
                            self.all_live.set()
                    elif event["status"] == "confirmed":
                        self.confirmed_at.append(received)
                        self.confirmed_ts = event["ts"]
        except (aiohttp.ClientError, OSError) as exc:
            self.errors[_error_kind(exc)] += 1
            self._count -= 1  # so all_live is not waited for in vain
            if self.live >= self._count:
                self.all_live.set()


def _raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _held_order(session: aiohttp.ClientSession, spec: Spec) -> str:
    """An order that stays `submitted`: the chain service holds every transaction."""
    await _admin(session, spec.chain_url, "hold")
    return await post_order(session, spec.urls[0], ORDERS[0])


async def run_fanout(spec: Spec) -> dict[str, Any]:
    async with _session() as session:
        order_id = await _held_order(session, spec)
        watchers = Watchers(session, _ws_url(spec.urls[0], order_id), spec.watchers, 100)
        async with asyncio.timeout(OP_TIMEOUT_S):
            await watchers.all_live.wait()
        released = time.time()
        await _admin(session, spec.chain_url, "release")
        await asyncio.wait(watchers.tasks, timeout=OP_TIMEOUT_S)
    got = sorted(watchers.confirmed_at)
    ts = watchers.confirmed_ts
    missed = spec.watchers - len(got)
    return {
        "watchers": spec.watchers,
        "received": len(got),
        "errors": dict(watchers.errors) | ({"missed": missed} if missed else {}),
        "spread_ms": (got[-1] - got[0]) * 1000 if got else None,
        "commit_to_last_ms": (got[-1] - ts) * 1000 if got and ts else None,
        "release_to_last_ms": (got[-1] - released) * 1000 if got else None,
        # Per watcher, from the event's timestamp (taken just before its commit) to receipt.
        "latency_ms": summary_ms([t - ts for t in got]) if ts else summary_ms([]),
    }


async def run_idle(spec: Spec) -> dict[str, Any]:
    limit = _raise_nofile_limit()
    if limit < spec.watchers + 100:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {limit} < {spec.watchers} connections")
    pid = spec.pids[0]
    async with _session() as session:
        order_id = await _held_order(session, spec)
        url = _ws_url(spec.urls[0], order_id)
        # A few connections first, so one-off costs (first handler, imports, caches) are in
        # the "before" figure and not charged to the connections.
        warm = Watchers(session, url, 20, 20)
        await warm.all_live.wait()
        for task in warm.tasks:
            task.cancel()
        await asyncio.gather(*warm.tasks, return_exceptions=True)
        await asyncio.sleep(0.5)
        before = procfs.rss_bytes(pid)
        started = time.perf_counter()
        watchers = Watchers(session, url, spec.watchers, 200)
        async with asyncio.timeout(OP_TIMEOUT_S * 2):
            await watchers.all_live.wait()
        opened_in = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the server's allocator settle
        after = procfs.rss_bytes(pid)
        await _admin(session, spec.chain_url, "release")
        result = {
            "watchers": spec.watchers,
            "live": watchers.live,
            "errors": dict(watchers.errors),
            "open_s": opened_in,
            "rate": watchers.live / opened_in,
            "rss_before": before,
            "rss_after": after,
            "rss_per_conn": (after - before) / max(watchers.live, 1),
        }
        # Closing 10,000 WebSockets politely takes longer than the measurement; the server
        # sees the sockets close either way.
        print(orjson.dumps(result).decode(), flush=True)
        os._exit(0)


MODES: dict[str, Callable[[Spec], Coroutine[Any, Any, dict[str, Any]]]] = {
    "post": run_post,
    "e2e": run_e2e,
    "paced": run_paced,
    "session": run_session,
    "fanout": run_fanout,
    "idle": run_idle,
}


def main() -> int:
    spec = Spec.from_json(sys.stdin.buffer.read())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    _raise_nofile_limit()
    result = asyncio.run(MODES[spec.mode](spec))
    sys.stdout.write(orjson.dumps({"mode": spec.mode, **result}).decode() + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
