// order_engine live dashboard: plain JS, no dependencies, everything from this engine.
//
// Sources: the firehose WebSocket (/api/orders/stream: every event of every order, live),
// GET /api/orders (recent history, and every pending or open order, on every (re)connect),
// GET /api/order/{id} (an order's events when only its snapshot is known) and, for orders
// submitted here, the order's own stream (/api/order/status), which replays its history and
// so misses nothing. The chart's lines come from /api/market/stream: each venue's price,
// live, whether or not orders flow. Open orders are cancelled with DELETE /api/order/{id};
// the form's tokens are the engine's tradable ones (/api/tokens).

const TOKENS = ["SOL", "USDC", "USDT", "BONK", "JUP", "RAY", "WSOL"]; // until /api/tokens answers
const STAGES = ["pending", "routing", "building", "submitted", "confirmed"];
const TERMINAL = new Set(["confirmed", "failed", "cancelled", "expired"]);
// Executed, or failed trying: what success rates and latencies count (cancelled and expired
// orders never ran).
const FINISHED = new Set(["confirmed", "failed"]);
const CANCELLABLE = new Set(["pending", "open"]);
const ARMED_TYPES = new Set(["limit", "sniper"]); // wait armed (open) for a trigger
const VENUES = ["Raydium", "Meteora"];
// The token a pair is priced in: the earlier one in this list (USDC per SOL, SOL per JUP...).
const QUOTE_RANK = ["USDC", "USDT", "SOL", "WSOL", "JUP", "RAY", "BONK"];
const STAGE_HINT = {
  routing: "queue wait",
  building: "quotes & route",
  submitted: "build & send",
  confirmed: "landing",
  failed: "to failure",
};
const MAX_ORDERS = 300; // kept in memory (and in the table)
const MAX_POINTS = 400; // chart points per pair, of quotes and of live prices each
const HISTORY_LIMIT = 50;
const DETAIL_PREFETCH = 20; // history orders whose events are fetched for decisions/latency
const KEY_STORAGE = "order_engine.apiKey";
const MAX_FETCHING = 6; // order details fetched at once
const HISTORY_EVERY_MS = 3000; // at most one history reload per lagged burst
const OPEN_LIMIT = 500; // pending and open orders loaded on (re)connect

const $ = (sel) => document.querySelector(sel);

const state = {
  orders: new Map(), // orderId -> record
  points: new Map(), // pair key -> [{t, dex, price, won, id}]
  pointKeys: new Set(), // orderId:seq of building events already charted
  live: new Map(), // pair key -> [{t, dex, price}] from the market stream
  liveSeen: new Map(), // pair key|dex -> ts of the newest live price charted
  selected: null, // orderId shown in the detail panel
  chartPair: "SOL→USDC",
  chartPairChosen: false,
  fetching: new Set(), // orderIds whose details are being fetched
  watching: new Map(), // orderId -> WebSocket for orders submitted here
};

// ---------------------------------------------------------------------------------------
// formatting

const nf = (digits) =>
  new Intl.NumberFormat("en-US", { maximumSignificantDigits: digits, useGrouping: true });
const PRICE_FMT = nf(6);
const INT_FMT = new Intl.NumberFormat("en-US");

function fmtPrice(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  if (x !== 0 && Math.abs(x) < 1e-4) return x.toPrecision(4);
  return PRICE_FMT.format(x);
}

// Amounts are exact decimal strings: shorten for display without going through a float.
function fmtAmount(s) {
  if (s === null || s === undefined) return "—";
  const text = String(s);
  const [int, frac] = text.split(".");
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  if (!frac) return grouped;
  const keep = int.length >= 4 ? 2 : 6;
  const cut = frac.slice(0, keep).replace(/0+$/, "");
  return cut ? `${grouped}.${cut}` : grouped;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 10000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function fmtTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

function fmtDateTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  if (sameDay) return fmtTime(ts);
  return `${d.toLocaleDateString("en-GB", { day: "2-digit", month: "short" })} ${fmtTime(ts)}`;
}

// A span of time, two units at most: "42 s", "3 min 05 s", "2 h 03 min", "1 d 04 h".
function fmtSpan(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  return `${Math.floor(s / 86400)} d ${pad(Math.floor((s % 86400) / 3600))} h`;
}

const shortId = (id) => id.slice(0, 8);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title")
      node.setAttribute(k, v === true ? "true" : String(v));
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function median(values) {
  return quantile(values, 0.5);
}

function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// ---------------------------------------------------------------------------------------
// API access (the optional key: x-api-key header; on WebSockets, which take no headers from
// a browser, the subprotocol "key.<key>" beside "order-engine": never in a URL, which
// proxies log)

function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("x-api-key", key);
  const resp = await fetch(path, { ...options, headers });
  let body = null;
  if ((resp.headers.get("content-type") || "").includes("application/json")) {
    body = await resp.json();
  }
  if (resp.status === 401) showNotice("This engine needs an API key: enter it at the top.");
  return { status: resp.status, ok: resp.ok, body };
}

function wsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

// The characters a subprotocol may hold (an HTTP token); the engine's keys are made of them.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function openSocket(path, params = {}) {
  const key = apiKey();
  let protocols = [];
  // The server answers "order-engine", never the key's protocol.
  if (TOKEN.test(key)) protocols = ["order-engine", `key.${key}`];
  else if (key) showNotice("This API key has characters a WebSocket cannot carry.");
  return new WebSocket(wsUrl(path, params), protocols);
}

let noticeTimer = null;

function showNotice(text, clearAfterMs = 0) {
  const box = $("#notice");
  clearTimeout(noticeTimer);
  box.textContent = text;
  box.hidden = !text;
  if (text && clearAfterMs) noticeTimer = setTimeout(() => showNotice(""), clearAfterMs);
}

// ---------------------------------------------------------------------------------------
// the model: orders built from snapshots (history) and events (streams), merged by seq

function record(id) {
  let rec = state.orders.get(id);
  if (!rec) {
    rec = {
      id,
      tokenIn: null,
      tokenOut: null,
      amount: null,
      slippageBps: null,
      status: "pending",
      dex: null,
      amountOut: null,
      executedPrice: null,
      error: null,
      txHash: null,
      attempts: 0,
      createdAt: null,
      updatedAt: null,
      orderType: null, // market, limit or sniper (null: not known yet)
      limitPrice: null, // exact decimal string: least tokenOut per one tokenIn
      expiresAt: null, // epoch seconds (limit and sniper orders)
      events: new Map(), // seq -> event
      mine: false,
      cancelling: false, // a DELETE is under way
    };
    state.orders.set(id, rec);
  }
  return rec;
}

function sortedEvents(rec) {
  return [...rec.events.values()].sort((a, b) => a.seq - b.seq);
}

function lastEventTs(rec) {
  let ts = 0;
  for (const e of rec.events.values()) ts = Math.max(ts, e.ts);
  return ts;
}

function applySnapshot(o) {
  const rec = record(o.orderId);
  rec.tokenIn = o.tokenIn;
  rec.tokenOut = o.tokenOut;
  rec.amount = o.amount;
  rec.slippageBps = o.slippageBps;
  rec.createdAt = o.createdAt;
  rec.orderType = o.orderType ?? rec.orderType;
  rec.limitPrice = o.limitPrice ?? rec.limitPrice;
  rec.expiresAt = o.expiresAt ?? rec.expiresAt;
  // The snapshot wins only if it is newer than every event seen for this order.
  if (o.updatedAt >= lastEventTs(rec)) {
    rec.status = o.status;
    rec.updatedAt = o.updatedAt;
    rec.dex = o.dex ?? rec.dex;
    rec.amountOut = o.amountOut ?? rec.amountOut;
    rec.executedPrice = o.executedPrice ?? rec.executedPrice;
    rec.txHash = o.txHash ?? rec.txHash;
    rec.error = o.error ?? rec.error;
    rec.attempts = Math.max(rec.attempts, o.attempts || 0);
  }
  return rec;
}

function applyEvent(ev) {
  const rec = record(ev.orderId);
  if (rec.events.has(ev.seq)) return rec;
  rec.events.set(ev.seq, ev);
  const d = ev.data || {};
  switch (ev.status) {
    case "pending":
      rec.tokenIn = d.tokenIn ?? rec.tokenIn;
      rec.tokenOut = d.tokenOut ?? rec.tokenOut;
      rec.amount = d.amount ?? rec.amount;
      rec.slippageBps = d.slippageBps ?? rec.slippageBps;
      rec.createdAt = rec.createdAt ?? ev.ts;
      break;
    case "open":
      rec.orderType = d.orderType ?? rec.orderType;
      rec.limitPrice = d.limitPrice ?? rec.limitPrice;
      rec.expiresAt = d.expiresAt ?? rec.expiresAt;
      break;
    case "routing":
      rec.attempts = Math.max(rec.attempts, d.attempt || 1);
      break;
    case "building":
      rec.dex = d.dex ?? rec.dex;
      addPricePoints(rec, ev);
      break;
    case "submitted":
      rec.txHash = d.txHash ?? rec.txHash;
      break;
    case "confirmed":
      rec.dex = d.dex ?? rec.dex;
      rec.txHash = d.txHash ?? rec.txHash;
      rec.amountOut = d.amountOut ?? rec.amountOut;
      rec.executedPrice = d.executedPrice ?? rec.executedPrice;
      break;
    case "failed":
      rec.error = d.error ?? rec.error;
      break;
    case "expired":
      rec.expiresAt = d.expiresAt ?? rec.expiresAt;
      break;
  }
  // The current stage is the newest event's (a snapshot newer than it may still override).
  const newest = Math.max(...rec.events.keys());
  if (ev.seq === newest && (!rec.updatedAt || ev.ts >= rec.updatedAt)) {
    rec.status = ev.status;
    rec.updatedAt = ev.ts;
  }
  if (!rec.tokenIn && !rec.events.has(1)) fetchDetail(rec.id); // joined mid-flight
  return rec;
}

// Armed orders (limit, sniper) wait for a trigger: their wait is the market's, not the
// engine's, so latencies leave it out.
function isArmed(rec) {
  if (ARMED_TYPES.has(rec.orderType)) return true;
  for (const e of rec.events.values()) if (e.status === "open") return true;
  return false;
}

// The newest event with this status for which `test` holds (by seq, whatever the arrival order).
function latestEvent(rec, status, test = () => true) {
  let found = null;
  for (const e of rec.events.values()) {
    if (e.status === status && test(e) && (!found || e.seq > found.seq)) found = e;
  }
  return found;
}

// A pending or open order of a type that waits: listed among the open orders, cancellable.
function isOpenOrder(rec) {
  return rec.status === "open" || (rec.status === "pending" && ARMED_TYPES.has(rec.orderType));
}

function building(rec) {
  // The latest routing decision (a retried order is routed again).
  let found = null;
  for (const e of rec.events.values()) {
    if (e.status === "building" && (!found || e.seq > found.seq)) found = e;
  }
  return found;
}

// A chart series is one direction of a pair (selling and buying SOL are quoted apart: the
// spread between them is the fees), always priced in the quote token: USDC per SOL.
function pairOf(tokenIn, tokenOut) {
  const rank = (t) => {
    const i = QUOTE_RANK.indexOf(t);
    return i < 0 ? QUOTE_RANK.length : i;
  };
  const inIsQuote =
    rank(tokenIn) < rank(tokenOut) || (rank(tokenIn) === rank(tokenOut) && tokenIn < tokenOut);
  const quote = inIsQuote ? tokenIn : tokenOut;
  const base = inIsQuote ? tokenOut : tokenIn;
  // A quote's price is tokenOut per tokenIn: selling the base gives quote per base directly.
  return { key: `${tokenIn}→${tokenOut}`, base, quote, invert: inIsQuote };
}

function addPricePoints(rec, ev) {
  const key = `${ev.orderId}:${ev.seq}`;
  if (state.pointKeys.has(key) || !rec.tokenIn || !rec.tokenOut) return;
  const quotes = (ev.data && ev.data.quotes) || [];
  if (!quotes.length) return;
  state.pointKeys.add(key);
  const pair = pairOf(rec.tokenIn, rec.tokenOut);
  let list = state.points.get(pair.key);
  if (!list) {
    list = [];
    state.points.set(pair.key, list);
  }
  for (const q of quotes) {
    if (!(q.price > 0)) continue;
    list.push({
      t: ev.ts,
      dex: q.dex,
      price: pair.invert ? 1 / q.price : q.price,
      won: q.dex === ev.data.dex,
      id: ev.orderId,
    });
  }
  list.sort((a, b) => a.t - b.t);
  if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
}

function prune() {
  if (state.orders.size <= MAX_ORDERS) return;
  const byAge = [...state.orders.values()].sort((a, b) => (a.createdAt || 0) - (b.createdAt || 0));
  for (const rec of byAge) {
    if (state.orders.size <= MAX_ORDERS) break;
    if (rec.id === state.selected || rec.mine || !TERMINAL.has(rec.status)) continue;
    state.orders.delete(rec.id);
  }
  // Under a flood of orders in flight, the oldest go too: memory and the table stay bounded.
  for (const rec of byAge) {
    if (state.orders.size <= MAX_ORDERS * 2) break;
    if (rec.id !== state.selected && !rec.mine) state.orders.delete(rec.id);
  }
}

function resetOrders() {
  state.orders.clear();
  state.points.clear();
  state.pointKeys.clear();
  state.selected = null;
}

// ---------------------------------------------------------------------------------------
// loading: history, details, streams

async function loadHistory() {
  try {
    const [history] = await Promise.all([
      api(`/api/orders?limit=${HISTORY_LIMIT}`),
      loadOpenOrders(), // older than the history's page, they still wait to execute
    ]);
    const { ok, body } = history;
    if (!ok || !body) return;
    for (const o of body.orders) applySnapshot(o);
    const lacking = body.orders
      .filter((o) => !record(o.orderId).events.size)
      .slice(0, DETAIL_PREFETCH);
    scheduleRender();
    await pool(
      lacking.map((o) => () => fetchDetail(o.orderId, { force: true })),
      4,
    );
  } catch (err) {
    showNotice(`Could not load the order history: ${err.message}`);
  } finally {
    document.body.dataset.history = "loaded";
    scheduleRender();
  }
}

// Every order still pending or open, however old: the open-orders panel lists them all.
async function loadOpenOrders() {
  const { ok, body } = await api(`/api/orders?status=pending,open&limit=${OPEN_LIMIT}`);
  if (!ok || !body) return;
  const listed = new Set();
  for (const o of body.orders) {
    applySnapshot(o);
    listed.add(o.orderId);
  }
  // Shown as waiting but no longer listed: it ended while this page was away (the firehose
  // missed it). Its details say how.
  if (body.nextCursor === null) {
    for (const rec of state.orders.values()) {
      if (CANCELLABLE.has(rec.status) && !listed.has(rec.id)) fetchDetail(rec.id);
    }
  }
}

async function pool(tasks, width) {
  const queue = [...tasks];
  const run = async () => {
    while (queue.length) await queue.shift()();
  };
  await Promise.all(Array.from({ length: Math.min(width, queue.length) }, run));
}

async function fetchDetail(id, { force = false } = {}) {
  // Bounded: orders joined mid-flight under load are fetched a few at a time (their next
  // event asks again).
  if (state.fetching.has(id) || (!force && state.fetching.size >= MAX_FETCHING)) return;
  state.fetching.add(id);
  try {
    const { ok, body } = await api(`/api/order/${encodeURIComponent(id)}`);
    if (ok && body) {
      const rec = applySnapshot(body.order);
      for (const ev of body.events) applyEvent(ev);
      // Decisions seen before the order's pair was known are charted now.
      for (const ev of rec.events.values()) if (ev.status === "building") addPricePoints(rec, ev);
      scheduleRender();
    }
  } catch {
    // a later event or reconnect retries
  } finally {
    state.fetching.delete(id);
  }
}

const firehose = { ws: null, attempt: 0, timer: null, everOpened: false, lastCatchUp: 0 };

function connectFirehose() {
  clearTimeout(firehose.timer);
  if (firehose.ws) {
    firehose.ws.onclose = null;
    firehose.ws.close();
  }
  setConn("connecting", firehose.attempt ? "reconnecting…" : "connecting…");
  const ws = openSocket("/api/orders/stream");
  firehose.ws = ws;
  ws.onopen = () => {
    firehose.attempt = 0;
    firehose.everOpened = true;
    setConn("open", "live");
    showNotice("");
    loadHistory(); // whatever happened while we were away
    loadTokens(); // a token may have launched meanwhile
  };
  ws.onmessage = (msg) => {
    let data;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (data.warning) {
      const now = Date.now();
      if (now - firehose.lastCatchUp > HISTORY_EVERY_MS) {
        firehose.lastCatchUp = now;
        showNotice(`Stream lagged (${data.warning.code}): catching up from the history.`, 5000);
        loadHistory();
      }
      return;
    }
    if (data.error) {
      showNotice(`Stream refused: ${data.error.message}`);
      return;
    }
    if (data.orderId && data.seq) {
      applyEvent(data);
      prune();
      scheduleRender();
    }
  };
  ws.onclose = (ev) => {
    if (firehose.ws !== ws) return;
    firehose.attempt += 1;
    const delay = Math.min(15000, 500 * 2 ** (firehose.attempt - 1)) * (0.75 + Math.random() * 0.5);
    setConn(
      "closed",
      `disconnected (${ev.code || "no answer"}), retrying in ${Math.ceil(delay / 1000)} s`,
    );
    if (ev.code === 1008 || (!firehose.everOpened && firehose.attempt === 2)) {
      api("/api/orders?limit=1").catch(() => {}); // says whether a key is needed
    }
    firehose.timer = setTimeout(connectFirehose, delay);
  };
}

function setConn(stateName, text) {
  const box = $("#conn");
  box.dataset.state = stateName;
  $("#conn-text").textContent = text;
}

// Live prices: every pair's prices first, then the pairs that change (a few times a second).
const market = { ws: null, attempt: 0, timer: null, refusal: null };

function connectMarket() {
  clearTimeout(market.timer);
  if (market.ws) {
    market.ws.onclose = null;
    market.ws.close();
  }
  setMarketConn("connecting", "connecting…", "live prices: connecting");
  market.refusal = null;
  const ws = openSocket("/api/market/stream");
  market.ws = ws;
  ws.onmessage = (msg) => {
    let data;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (data.error) {
      market.refusal = data.error;
      return;
    }
    if (Array.isArray(data.pairs)) {
      market.attempt = 0;
      setMarketConn("open", "live", "live prices from the pools the engine follows");
      addLivePrices(data.pairs);
      scheduleRender();
    }
  };
  ws.onclose = (ev) => {
    if (market.ws !== ws) return;
    market.attempt += 1;
    const off = market.refusal && market.refusal.code === "market_data_off";
    // Off is a setting: asking again often would not change it.
    const cap = off ? 60000 : 15000;
    const delay = Math.min(cap, 500 * 2 ** (market.attempt - 1)) * (0.75 + Math.random() * 0.5);
    const why = market.refusal
      ? market.refusal.message
      : `disconnected (${ev.code || "no answer"})`;
    const detail = `live prices: ${why}; retrying in ${Math.ceil(delay / 1000)} s`;
    if (off) setMarketConn("off", "prices off", detail);
    else setMarketConn("closed", "retrying…", detail);
    market.timer = setTimeout(connectMarket, delay);
  };
}

function setMarketConn(stateName, text, detail) {
  const box = $("#market-conn");
  box.dataset.state = stateName;
  $("#market-conn-text").textContent = text;
  box.title = detail;
  box.setAttribute("aria-label", detail);
}

function addLivePrices(pairs) {
  for (const entry of pairs) {
    const pair = pairOf(entry.tokenIn, entry.tokenOut);
    let list = state.live.get(pair.key);
    if (!list) {
      list = [];
      state.live.set(pair.key, list);
    }
    let unordered = false;
    for (const q of entry.prices || []) {
      if (!(q.price > 0)) continue;
      // A venue whose price did not change is sent again with the time it was first seen.
      const seen = `${pair.key}|${q.dex}`;
      if (q.ts <= (state.liveSeen.get(seen) ?? -Infinity)) continue;
      state.liveSeen.set(seen, q.ts);
      if (list.length && q.ts < list[list.length - 1].t) unordered = true;
      // The engine names the token it prices in; this page's own rule decides the chart's.
      const price = entry.base === pair.base ? q.price : 1 / q.price;
      list.push({ t: q.ts, dex: q.dex, price });
    }
    if (unordered) list.sort((a, b) => a.t - b.t);
    if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
  }
}

function watchOrder(id, tries = 0) {
  const rec = record(id);
  const after = Math.max(0, ...rec.events.keys());
  const ws = openSocket("/api/order/status", { orderId: id, after: String(after) });
  state.watching.set(id, ws);
  ws.onmessage = (msg) => {
    let data;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (data.orderId && data.seq) {
      applyEvent(data);
      scheduleRender();
    } else if (data.error) {
      $("#detail-message").textContent = data.error.message;
    }
  };
  ws.onclose = (ev) => {
    state.watching.delete(id);
    if (TERMINAL.has(record(id).status) || ev.code === 1000 || ev.code === 4404 || tries >= 5)
      return;
    setTimeout(() => watchOrder(id, tries + 1), 500 * 2 ** tries);
  };
}

// ---------------------------------------------------------------------------------------
// the form

function fillTokens(tokens = TOKENS) {
  for (const [sel, fallback] of [
    ["#token-in", "SOL"],
    ["#token-out", "USDC"],
  ]) {
    const select = $(sel);
    if ([...select.options].map((o) => o.value).join(",") === tokens.join(",")) continue;
    const value = select.value || fallback; // a choice already made survives a refill
    select.replaceChildren(...tokens.map((t) => el("option", { value: t, text: t })));
    select.value = tokens.includes(value) ? value : fallback;
  }
  renderLimitFields();
}

// The engine's tradable tokens (a launched token joins them); the built-in list otherwise.
async function loadTokens() {
  try {
    const { ok, body } = await api("/api/tokens");
    if (!ok || !body || !Array.isArray(body.tokens)) return;
    const tradable = body.tokens.filter((t) => t.state === "tradable").map((t) => t.symbol);
    if (tradable.length >= 2) fillTokens(tradable);
  } catch {
    // the built-in list stays
  }
}

function orderType() {
  const checked = document.querySelector('input[name="orderType"]:checked');
  return checked ? checked.value : "market";
}

// The limit fields show for a limit order; the price is named in the pair's terms, with the
// market's price now beside it (the best venue's, for a small trade) as a reference.
function renderLimitFields() {
  const limit = orderType() === "limit";
  const tokenIn = $("#token-in").value;
  const tokenOut = $("#token-out").value;
  for (const node of document.querySelectorAll(".limit-only")) node.hidden = !limit;
  setText($("#submit"), limit ? "Place limit order" : "Swap");
  $("#order-form").dataset.orderType = orderType();
  setText($("#limit-unit"), tokenIn && tokenOut ? `${tokenOut} per ${tokenIn}` : "");
  if (!limit) return;
  const now = marketPrice(tokenIn, tokenOut);
  setText(
    $("#limit-hint"),
    now === null
      ? "Fires once the best route pays at least this for the whole amount."
      : `Market now ≈ ${fmtPrice(now)} for a small trade; fires once the best route pays ` +
          "at least the limit for the whole amount.",
  );
}

// tokenOut per one tokenIn, the best venue's latest streamed price (null: not streamed).
function marketPrice(tokenIn, tokenOut) {
  if (!tokenIn || !tokenOut || tokenIn === tokenOut) return null;
  const pair = pairOf(tokenIn, tokenOut);
  const list = state.live.get(pair.key) || [];
  const latest = {};
  for (const p of list) latest[p.dex] = p.price; // charted as quote per base
  const prices = Object.values(latest).map((p) => (pair.invert ? 1 / p : p));
  return prices.length ? Math.max(...prices) : null;
}

const FORM_FIELDS = {
  tokenIn: "#token-in",
  tokenOut: "#token-out",
  amount: "#amount",
  slippageBps: "#slippage",
  orderType: "#type-limit",
  limitPrice: "#limit-price",
  expiresIn: "#expires-in",
};

async function submitOrder(event) {
  event.preventDefault();
  const error = $("#form-error");
  error.hidden = true;
  const tokenIn = $("#token-in").value;
  const tokenOut = $("#token-out").value;
  const amount = $("#amount").value.trim();
  const slippage = $("#slippage").value.trim();
  const type = orderType();
  if (tokenIn === tokenOut)
    return formError("Sell and buy must be different tokens.", "#token-out");
  if (!/^\d+(\.\d+)?$/.test(amount) || !(Number(amount) > 0)) {
    return formError("Amount must be a positive decimal number.", "#amount");
  }
  const body = { tokenIn, tokenOut, amount };
  if (slippage !== "") {
    if (!/^\d+$/.test(slippage))
      return formError("Slippage is a whole number of bps.", "#slippage");
    body.slippageBps = Number(slippage);
  }
  if (type === "limit") {
    const limitPrice = $("#limit-price").value.trim();
    if (!/^\d+(\.\d+)?$/.test(limitPrice) || !(Number(limitPrice) > 0)) {
      const text = `Limit price must be a positive decimal number (${tokenOut} per ${tokenIn}).`;
      return formError(text, "#limit-price");
    }
    body.orderType = "limit";
    body.limitPrice = limitPrice; // exact: sent as typed
    const expires = $("#expires-in").value.trim();
    if (expires !== "") {
      const seconds = Math.round(Number(expires) * Number($("#expires-unit").value));
      if (!/^\d+(\.\d+)?$/.test(expires) || !(seconds >= 1))
        return formError("Expiry must be a positive number (at least a second).", "#expires-in");
      body.expiresIn = seconds;
    }
  }
  const button = $("#submit");
  button.disabled = true;
  try {
    const resp = await api("/api/order/execute", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (resp.status !== 201 && resp.status !== 200) {
      const e = resp.body && resp.body.error;
      const field = e && e.field ? FORM_FIELDS[e.field] : null;
      return formError(
        e ? `${e.message} (${e.code})` : `The engine answered ${resp.status}.`,
        field,
      );
    }
    const id = resp.body.orderId;
    const rec = record(id);
    rec.mine = true;
    rec.tokenIn = rec.tokenIn || tokenIn;
    rec.tokenOut = rec.tokenOut || tokenOut;
    rec.amount = rec.amount || amount;
    rec.orderType = rec.orderType || type;
    rec.limitPrice = rec.limitPrice || body.limitPrice || null;
    rec.createdAt = rec.createdAt || Date.now() / 1000;
    if (!state.chartPairChosen) state.chartPair = `${rec.tokenIn}→${rec.tokenOut}`;
    select(id);
    if (!TERMINAL.has(rec.status)) watchOrder(id);
  } catch (err) {
    formError(`Could not reach the engine: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function formError(text, focus) {
  const error = $("#form-error");
  error.textContent = text;
  error.hidden = false;
  if (focus) $(focus).focus();
}

function select(id) {
  state.selected = id;
  const rec = state.orders.get(id);
  if (rec && !rec.events.size) fetchDetail(id);
  scheduleRender();
}

// ---------------------------------------------------------------------------------------
// rendering (batched to one pass per animation frame)

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  const orders = [...state.orders.values()].sort(
    (a, b) => (b.createdAt || 0) - (a.createdAt || 0) || (a.id < b.id ? 1 : -1),
  );
  renderStats(orders);
  renderLatency(orders);
  renderOpenOrders(orders);
  renderOrders(orders);
  renderDetail();
  renderLimitFields();
  renderDecision();
  renderDecisions(orders);
  renderPairs();
  drawChart();
}

function latencySamples(orders) {
  const samples = {
    routing: [],
    building: [],
    submitted: [],
    confirmed: [],
    failed: [],
    total: [],
  };
  for (const rec of orders) {
    const events = sortedEvents(rec);
    for (let i = 1; i < events.length; i++) {
      const prev = events[i - 1];
      const cur = events[i];
      if (cur.seq !== prev.seq + 1 || !samples[cur.status]) continue;
      if (prev.status === "open") continue; // waited for the market, not for the engine
      samples[cur.status].push((cur.ts - prev.ts) * 1000);
    }
    const first = events[0];
    const last = events[events.length - 1];
    if (first && first.seq === 1 && FINISHED.has(last.status) && !isArmed(rec))
      samples.total.push((last.ts - first.ts) * 1000);
  }
  return samples;
}

// Submission to the end; for an armed order, from the trigger that fired it last (its wait
// for the price is not latency). Cancelled and expired orders have none.
function orderLatency(rec) {
  if (!FINISHED.has(rec.status)) return null;
  const events = sortedEvents(rec);
  const last = events[events.length - 1];
  if (isArmed(rec)) {
    const fired = latestEvent(rec, "routing", (e) => e.data && e.data.trigger);
    return fired && last && FINISHED.has(last.status) ? (last.ts - fired.ts) * 1000 : null;
  }
  if (events.length && events[0].seq === 1)
    return FINISHED.has(last.status) ? (last.ts - events[0].ts) * 1000 : null;
  if (rec.createdAt && rec.updatedAt) return (rec.updatedAt - rec.createdAt) * 1000;
  return null;
}

function renderStats(orders) {
  let confirmed = 0;
  let failed = 0;
  let open = 0;
  let ended = 0; // cancelled or expired
  const wins = { Raydium: 0, Meteora: 0 };
  for (const rec of orders) {
    if (rec.status === "confirmed") {
      confirmed += 1;
      if (rec.dex in wins) wins[rec.dex] += 1;
    } else if (rec.status === "failed") failed += 1;
    else if (isOpenOrder(rec)) open += 1;
    else if (TERMINAL.has(rec.status)) ended += 1;
  }
  const done = confirmed + failed;
  $("#stat-total").textContent = INT_FMT.format(orders.length);
  $("#stat-open").textContent = INT_FMT.format(open);
  $("#stat-inflight").textContent = INT_FMT.format(orders.length - done - open - ended);
  $("#stat-confirmed").textContent = INT_FMT.format(confirmed);
  $("#stat-failed").textContent = INT_FMT.format(failed);
  $("#stat-rate").textContent = done ? `${((100 * confirmed) / done).toFixed(1)} %` : "—";
  $("#wins-raydium").textContent = INT_FMT.format(wins.Raydium);
  $("#wins-meteora").textContent = INT_FMT.format(wins.Meteora);
  const totals = orders
    .filter((rec) => !isArmed(rec))
    .map(orderLatency)
    .filter((x) => x !== null);
  $("#stat-e2e").textContent = fmtMs(median(totals));
}

function renderLatency(orders) {
  const samples = latencySamples(orders);
  const body = $("#latency tbody");
  const rows = [];
  for (const stage of ["routing", "building", "submitted", "confirmed", "failed", "total"]) {
    const values = samples[stage];
    if (stage === "failed" && !values.length) continue;
    const label = stage === "total" ? "end to end" : stage;
    const hint = stage === "total" ? "pending → terminal" : STAGE_HINT[stage];
    rows.push(
      el(
        "tr",
        { "data-stage": stage, class: stage === "total" ? "total" : "" },
        el(
          "th",
          { scope: "row", title: hint },
          el("span", { class: `badge s-${stage}`, text: label }),
          el("span", { class: "stage-hint", text: hint }),
        ),
        el("td", { class: "num median", text: fmtMs(median(values)) }),
        el("td", { class: "num p95", text: fmtMs(quantile(values, 0.95)) }),
        el("td", { class: "num", text: String(values.length) }),
      ),
    );
  }
  body.replaceChildren(...rows);
}

const rowCache = new Map(); // orderId -> tr

function renderOrders(orders) {
  const body = $("#orders tbody");
  const rows = [];
  const live = new Set();
  for (const rec of orders) {
    live.add(rec.id);
    let tr = rowCache.get(rec.id);
    if (!tr) {
      tr = el("tr", { "data-order-id": rec.id });
      rowCache.set(rec.id, tr);
    }
    const stamp = [
      rec.status,
      rec.dex,
      rec.amountOut,
      rec.tokenIn,
      rec.events.size,
      rec.id === state.selected,
      rec.updatedAt,
      rec.orderType,
    ].join("|");
    if (tr.dataset.stamp !== stamp) {
      tr.dataset.stamp = stamp;
      tr.dataset.status = rec.status;
      tr.classList.toggle("selected", rec.id === state.selected);
      tr.classList.toggle("mine", rec.mine);
      const pick = el("button", {
        class: "link mono",
        type: "button",
        text: shortId(rec.id),
        title: rec.id,
        "aria-label": `Show order ${rec.id}`,
      });
      pick.addEventListener("click", () => select(rec.id));
      const stage = el("span", { class: `badge s-${rec.status}`, text: rec.status });
      if (rec.attempts > 1)
        stage.append(
          el("span", {
            class: "retry",
            text: ` ×${rec.attempts}`,
            title: `attempt ${rec.attempts}`,
          }),
        );
      tr.replaceChildren(
        el("td", { class: "mono dim", text: fmtTime(rec.createdAt) }),
        el("td", {}, pick),
        el(
          "td",
          { class: "pair" },
          rec.tokenIn ? `${rec.tokenIn} → ${rec.tokenOut}` : "…",
          ARMED_TYPES.has(rec.orderType)
            ? el("span", { class: "type-tag", text: rec.orderType, title: orderTitle(rec) })
            : null,
        ),
        el("td", { class: "num mono", text: fmtAmount(rec.amount) }),
        el("td", { class: "stage" }, stage),
        el("td", { class: rec.dex ? `venue v-${rec.dex}` : "venue dim", text: rec.dex || "—" }),
        el("td", {
          class: "num mono",
          text:
            rec.status === "failed"
              ? (rec.error && rec.error.code) || "—"
              : fmtAmount(rec.amountOut),
        }),
        el("td", { class: "num mono", text: fmtMs(orderLatency(rec)) }),
      );
    }
    rows.push(tr);
  }
  for (const id of rowCache.keys()) if (!live.has(id)) rowCache.delete(id);
  syncChildren(body, rows);
  $("#orders-count").textContent = `${orders.length} shown · newest first`;
}

function orderTitle(rec) {
  const parts = [`${rec.orderType} order`];
  if (rec.limitPrice) parts.push(`limit ${rec.limitPrice} ${rec.tokenOut} per ${rec.tokenIn}`);
  if (rec.expiresAt) parts.push(`expires ${fmtDateTime(rec.expiresAt)}`);
  return parts.join(", ");
}

// ---------------------------------------------------------------------------------------
// open orders: armed (or about to be), each with its limit, expiry, age and a Cancel button

const openRowCache = new Map(); // orderId -> tr
const cancelResult = { text: "", kind: "", orderId: "" };

function renderOpenOrders(orders) {
  const body = $("#open-orders tbody");
  const rows = [];
  const live = new Set();
  for (const rec of orders) {
    if (!isOpenOrder(rec)) continue;
    live.add(rec.id);
    let tr = openRowCache.get(rec.id);
    if (!tr) {
      tr = el("tr", { "data-order-id": rec.id });
      openRowCache.set(rec.id, tr);
    }
    const armed = latestEvent(rec, "open");
    const rearmed = armed && armed.data && armed.data.rearmed;
    const per = `${rec.tokenOut}/${rec.tokenIn}`;
    const expiry = rec.expiresAt ? new Date(rec.expiresAt * 1000).toString() : null;
    const stamp = [
      rec.status,
      rec.orderType,
      rec.limitPrice,
      rec.expiresAt,
      rec.tokenIn,
      rec.cancelling,
      armed ? armed.seq : 0,
      rec.id === state.selected,
    ].join("|");
    if (tr.dataset.stamp !== stamp) {
      tr.dataset.stamp = stamp;
      tr.dataset.status = rec.status;
      tr.classList.toggle("selected", rec.id === state.selected);
      tr.classList.toggle("mine", rec.mine);
      const status = el("span", { class: `badge s-${rec.status}`, text: rec.status });
      if (rearmed)
        status.append(
          el("span", {
            class: "retry",
            text: " ↺",
            title: `armed again after ${rearmed.code}: ${rearmed.message}`,
            "aria-label": `armed again after ${rearmed.code}`,
          }),
        );
      const cancel = el("button", {
        class: "btn btn-small btn-danger",
        type: "button",
        text: rec.cancelling ? "Cancelling…" : "Cancel",
        disabled: rec.cancelling,
        "aria-label": `Cancel order ${rec.id}`,
        "data-cancel": rec.id,
      });
      cancel.addEventListener("click", () => cancelOrder(rec.id));
      tr.replaceChildren(
        el(
          "td",
          {},
          el("button", {
            class: "link mono",
            type: "button",
            text: shortId(rec.id),
            title: rec.id,
            "aria-label": `Show order ${rec.id}`,
            onclick: () => select(rec.id),
          }),
        ),
        el("td", { class: "pair", text: rec.tokenIn ? `${rec.tokenIn} → ${rec.tokenOut}` : "…" }),
        el("td", { class: "num mono", text: fmtAmount(rec.amount) }),
        el("td", { class: "type", text: rec.orderType || "—" }),
        el(
          "td",
          { class: "num mono limit", title: rec.limitPrice ? `at least, ${per}` : null },
          rec.limitPrice ? `≥ ${rec.limitPrice}` : "—",
          rec.limitPrice ? el("span", { class: "dim unit", text: ` ${per}` }) : null,
        ),
        el(
          "td",
          { class: "expires", title: expiry },
          el("span", { class: "mono", text: fmtDateTime(rec.expiresAt) }),
          " ",
          el("span", { class: "dim countdown", "data-until": rec.expiresAt || "" }),
        ),
        el("td", { class: "num mono dim age", "data-since": rec.createdAt || "" }),
        el("td", { class: "stage" }, status),
        el("td", { class: "num" }, cancel),
      );
    }
    rows.push(tr);
  }
  for (const id of openRowCache.keys()) if (!live.has(id)) openRowCache.delete(id);
  syncChildren(body, rows);
  $("#open-empty").hidden = rows.length > 0;
  $("#open-orders").hidden = rows.length === 0;
  setText($("#open-count"), rows.length ? `${rows.length} waiting` : "");
  const box = $("#cancel-result");
  box.hidden = !cancelResult.text;
  box.dataset.kind = cancelResult.kind;
  box.dataset.orderId = cancelResult.orderId;
  setText(box, cancelResult.text);
  tickOpenOrders();
}

// Ages and countdowns move on their own: refreshed every second, not only on events.
function tickOpenOrders() {
  const now = Date.now() / 1000;
  for (const node of document.querySelectorAll("#open-orders [data-since]")) {
    const since = Number(node.dataset.since);
    setText(node, since ? fmtSpan(now - since) : "—");
  }
  for (const node of document.querySelectorAll("#open-orders [data-until]")) {
    const until = Number(node.dataset.until);
    if (!until) setText(node, "");
    else setText(node, until > now ? `in ${fmtSpan(until - now)}` : "due");
  }
}

function showCancelResult(text, kind = "", orderId = "") {
  Object.assign(cancelResult, { text, kind, orderId });
  scheduleRender();
}

async function cancelOrder(id) {
  const rec = state.orders.get(id);
  if (!rec || rec.cancelling) return;
  rec.cancelling = true;
  showCancelResult("");
  const name = shortId(id);
  try {
    const resp = await api(`/api/order/${encodeURIComponent(id)}`, { method: "DELETE" });
    const e = resp.body && resp.body.error;
    if (resp.ok && resp.body && resp.body.orderId) {
      applySnapshot(resp.body);
      showCancelResult(`Order ${name} cancelled.`, "ok", id);
    } else if (resp.status === 409 && e && e.code === "not_cancellable") {
      showCancelResult(
        `Order ${name} cannot be cancelled: it is ${e.status || "no longer open"} ` +
          `(409 ${e.code}).`,
        "error",
        id,
      );
      fetchDetail(id, { force: true }); // where it is now: the page may be behind
    } else if (resp.status === 404) {
      showCancelResult(`Order ${name} was not found (404${e ? ` ${e.code}` : ""}).`, "error", id);
    } else {
      showCancelResult(
        e
          ? `Order ${name} was not cancelled: ${e.message} (${resp.status} ${e.code}).`
          : `Order ${name} was not cancelled: the engine answered ${resp.status}.`,
        "error",
        id,
      );
    }
  } catch (err) {
    const text = `Order ${name} was not cancelled: could not reach the engine (${err.message}).`;
    showCancelResult(text, "error", id);
  } finally {
    rec.cancelling = false;
    scheduleRender();
  }
}

// Puts `nodes` in `parent` in order, moving only what moved (focus stays where it was).
function syncChildren(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

function renderDetail() {
  const panel = $("#order-detail");
  const rec = state.selected && state.orders.get(state.selected);
  if (!rec) {
    if (panel.dataset.orderId) {
      panel.dataset.orderId = "";
      panel.dataset.status = "";
      $("#detail-title").textContent = "No order selected";
      $("#detail-badge").hidden = true;
      $("#stepper").replaceChildren();
      $("#detail-facts").replaceChildren();
      $("#detail-facts").hidden = true;
      $("#detail-message").textContent = "Submit a swap, or pick an order in the table.";
    }
    return;
  }
  panel.dataset.orderId = rec.id;
  panel.dataset.status = rec.status;
  $("#detail-title").textContent =
    `${rec.tokenIn || "?"} → ${rec.tokenOut || "?"} · ${fmtAmount(rec.amount)}`;
  $("#detail-title").title = rec.id;
  const badge = $("#detail-badge");
  badge.hidden = false;
  badge.className = `badge s-${rec.status}`;
  badge.textContent = rec.status;
  const events = sortedEvents(rec);
  const firstTs = events.length && events[0].seq === 1 ? events[0].ts : null;
  const reached = new Map();
  for (const e of events) reached.set(e.status, e); // the latest time each stage was reached
  const failed = rec.status === "failed";
  const stages = stagesOf(rec, reached);
  const current = stages.indexOf(rec.status);
  const items = stages.map((stage, i) => {
    const e = reached.get(stage);
    let stepState;
    if (failed) stepState = stage === "failed" ? "failed" : e ? "done" : "skipped";
    else if (i === current && (stage === "cancelled" || stage === "expired")) stepState = "stopped";
    else if (i < current || (i === current && TERMINAL.has(stage))) stepState = "done";
    else stepState = i === current ? "current" : "todo";
    const offset =
      e && firstTs !== null && stepState !== "todo" ? `+${fmtMs((e.ts - firstTs) * 1000)}` : "";
    return el(
      "li",
      {
        "data-stage": stage,
        "data-state": stepState,
        "aria-current": stepState === "current" ? "step" : null,
      },
      el("span", { class: "step-dot", "aria-hidden": "true" }),
      el("span", { class: "step-name", text: stage }),
      el("span", { class: "step-time mono", text: offset }),
    );
  });
  $("#stepper").replaceChildren(...items);
  const facts = orderFacts(rec);
  $("#detail-facts").replaceChildren(...facts);
  $("#detail-facts").hidden = !facts.length;
  const last = events[events.length - 1];
  let text = last ? last.message : "Waiting for events…";
  if (rec.status === "failed" && rec.error) text = `${rec.error.code}: ${rec.error.message}`;
  const msg = $("#detail-message");
  msg.replaceChildren(text);
  if (rec.txHash)
    msg.append(
      el("br"),
      el("span", { class: "mono dim", text: `tx ${rec.txHash.slice(0, 20)}…`, title: rec.txHash }),
    );
}

// The stages an order goes through: an armed one is open before it routes; a cancelled or
// expired one shows the way it went, then how it ended.
function stagesOf(rec, reached) {
  const path = isArmed(rec) ? ["pending", "open", ...STAGES.slice(1)] : STAGES;
  if (rec.status === "cancelled" || rec.status === "expired")
    return [...path.filter((stage) => reached.has(stage) && stage !== "confirmed"), rec.status];
  if (rec.status === "failed") return [...path.slice(0, -1), "failed"];
  return path;
}

const FACT_LABELS = {
  limit: "limit",
  expires: "expires",
  expired: "expired",
  trigger: "fired",
  rearmed: "armed again",
};

// What a limit order adds to its stages: its limit and expiry, what fired it, why it was
// armed again.
function orderFacts(rec) {
  const facts = [];
  const fact = (name, ...children) =>
    facts.push(
      el(
        "li",
        { "data-fact": name },
        el("span", { class: "fact-name", text: FACT_LABELS[name] }),
        ...children,
      ),
    );
  if (rec.limitPrice)
    fact(
      "limit",
      el("span", { class: "mono", text: `≥ ${rec.limitPrice}` }),
      ` ${rec.tokenOut} per ${rec.tokenIn}`,
    );
  if (rec.expiresAt && (CANCELLABLE.has(rec.status) || rec.status === "expired"))
    fact(
      rec.status === "expired" ? "expired" : "expires",
      el("span", {
        class: "mono",
        text: fmtDateTime(rec.expiresAt),
        title: new Date(rec.expiresAt * 1000).toString(),
      }),
    );
  const fired = latestEvent(rec, "routing", (e) => e.data && e.data.trigger);
  if (fired) {
    const t = fired.data.trigger;
    fact(
      "trigger",
      "price ",
      el("span", { class: "mono", text: fmtPrice(t.price) }),
      " at slot ",
      el("span", { class: "mono", text: String(t.slot) }),
      el("span", { class: "dim", text: ` · ${fmtTime(fired.ts)}` }),
    );
  }
  const armedAgain = latestEvent(rec, "open", (e) => e.data && e.data.rearmed);
  if (armedAgain) {
    const why = armedAgain.data.rearmed;
    fact(
      "rearmed",
      el("span", { class: "mono", text: why.code }),
      el("span", { class: "dim", text: `: ${why.message} · ${fmtTime(armedAgain.ts)}` }),
    );
  }
  return facts;
}

function quoteMargin(quotes, winner) {
  // How much the winner's output beats the runner-up, in bps.
  const win = quotes.find((q) => q.dex === winner);
  const others = quotes.filter((q) => q.dex !== winner);
  if (!win || !others.length) return null;
  const best = Math.max(...others.map((q) => Number(q.amountOut)));
  return best > 0 ? (Number(win.amountOut) / best - 1) * 10000 : null;
}

function decisionSource() {
  const chosen = state.selected && state.orders.get(state.selected);
  if (chosen && building(chosen)) return chosen;
  let newest = null;
  let newestTs = -1;
  for (const rec of state.orders.values()) {
    const b = building(rec);
    if (b && b.ts > newestTs) {
      newest = rec;
      newestTs = b.ts;
    }
  }
  return newest;
}

function renderDecision() {
  const box = $("#decision");
  const rec = decisionSource();
  if (!rec) {
    if (box.dataset.stamp) {
      box.dataset.stamp = "";
      box.dataset.orderId = "";
      box.replaceChildren(el("p", { class: "empty", text: "No quotes yet." }));
    }
    return;
  }
  const ev = building(rec);
  const stamp = `${rec.id}:${ev.seq}:${rec.tokenIn}:${rec.attempts}`;
  if (box.dataset.stamp === stamp) return;
  box.dataset.stamp = stamp;
  box.dataset.orderId = rec.id;
  const d = ev.data;
  const quotes = [...(d.quotes || [])].sort((a, b) => Number(b.amountOut) - Number(a.amountOut));
  const margin = quoteMargin(quotes, d.dex);
  box.dataset.winner = d.dex;
  const rows = quotes.map((q) =>
    el(
      "tr",
      {
        "data-dex": q.dex,
        "data-amount-out": q.amountOut,
        "data-winner": q.dex === d.dex ? "true" : "false",
        class: q.dex === d.dex ? "winner" : "",
      },
      el(
        "th",
        { scope: "row", class: `venue v-${q.dex}` },
        q.dex,
        q.dex === d.dex
          ? el(
              "span",
              { class: "win-tag", title: "winner" },
              el("span", { "aria-hidden": "true", text: "★" }),
              el("span", { class: "sr-only", text: "winner" }),
            )
          : null,
      ),
      el("td", { class: "num mono", text: fmtAmount(q.amountOut) }),
      el("td", { class: "num mono", text: fmtPrice(q.price) }),
      el("td", { class: "num mono", text: q.feeBps.toFixed(1) }),
      el("td", { class: "num mono", text: q.priceImpactBps.toFixed(1) }),
    ),
  );
  const skipped = (d.skipped || []).map((s) =>
    el("li", { class: "dim", text: `${s.dex} skipped: ${s.code}` }),
  );
  const legs = (d.legs || []).map((l) =>
    el("li", {
      class: "mono",
      text: `${l.dex} ${(l.share * 100).toFixed(1)} %: ${fmtAmount(l.amountIn)} → ${fmtAmount(l.amountOut)}`,
    }),
  );
  const parts = [
    el(
      "p",
      { class: "decision-head" },
      el("span", {
        class: "pair",
        text: `${rec.tokenIn} → ${rec.tokenOut} · ${fmtAmount(rec.amount)}`,
      }),
      " ",
      el("button", {
        class: "link mono",
        type: "button",
        text: shortId(rec.id),
        title: rec.id,
        "aria-label": `Show order ${rec.id}`,
        onclick: () => select(rec.id),
      }),
      el("span", { class: "dim", text: ` · attempt ${Math.max(1, rec.attempts)}` }),
    ),
    el(
      "p",
      { class: "verdict" },
      el("strong", { class: `venue v-${d.dex}`, text: d.dex }),
      " wins",
      margin !== null
        ? el("span", {
            class: "margin",
            "data-margin-bps": margin.toFixed(2),
            text: ` by ${margin.toFixed(1)} bps`,
          })
        : null,
    ),
    el("p", { class: "reason", text: d.reason || "only venue quoted" }),
    el(
      "div",
      { class: "table-scroll" },
      el(
        "table",
        { class: "table quotes" },
        el("caption", { class: "sr-only", text: "Quotes of every venue for this order" }),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col", text: "venue" }),
            el("th", { scope: "col", class: "num", text: `out (${rec.tokenOut || ""})` }),
            el("th", { scope: "col", class: "num", text: "price" }),
            el("th", { scope: "col", class: "num", text: "fee", title: "fee, bps" }),
            el("th", { scope: "col", class: "num", text: "impact", title: "price impact, bps" }),
          ),
        ),
        el("tbody", {}, ...rows),
      ),
    ),
    legs.length ? el("ul", { class: "legs", "aria-label": "Split route legs" }, ...legs) : null,
    skipped.length ? el("ul", { class: "legs" }, ...skipped) : null,
  ];
  box.replaceChildren(...parts.filter(Boolean));
}

function renderDecisions(orders) {
  const recent = [];
  for (const rec of orders) {
    const ev = building(rec);
    if (ev) recent.push([rec, ev]);
    if (recent.length >= 4) break;
  }
  const list = $("#decisions");
  const stamp = recent.map(([rec, ev]) => `${rec.id}:${ev.seq}`).join(",");
  if (list.dataset.stamp === stamp) return;
  list.dataset.stamp = stamp;
  const items = [];
  for (const [rec, ev] of recent) {
    const margin = quoteMargin(ev.data.quotes || [], ev.data.dex);
    const split = (ev.data.legs || []).length > 1;
    items.push(
      el(
        "li",
        { "data-order-id": rec.id },
        el("button", {
          class: "link mono",
          type: "button",
          text: shortId(rec.id),
          title: rec.id,
          "aria-label": `Show order ${rec.id}`,
          onclick: () => select(rec.id),
        }),
        el("span", { class: "pair", text: `${rec.tokenIn}→${rec.tokenOut}` }),
        el("span", {
          class: `venue v-${ev.data.dex}`,
          text: split ? `${ev.data.dex} (split)` : ev.data.dex,
        }),
        el("span", {
          class: "num mono",
          text: margin === null ? "—" : `+${margin.toFixed(1)} bps`,
        }),
      ),
    );
  }
  list.replaceChildren(...items);
}

function renderPairs() {
  const select = $("#chart-pair");
  const keys = [...new Set([...state.points.keys(), ...state.live.keys()])];
  if (!keys.includes(state.chartPair)) keys.push(state.chartPair);
  keys.sort();
  const current = [...select.options].map((o) => o.value).join(",");
  if (current !== keys.join(",")) {
    select.replaceChildren(...keys.map((k) => el("option", { value: k, text: k })));
  }
  select.value = state.chartPair;
}

// ---------------------------------------------------------------------------------------
// the price chart, drawn on a canvas

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawChart() {
  const canvas = $("#price-chart");
  const quoted = state.points.get(state.chartPair) || [];
  const live = state.live.get(state.chartPair) || [];
  const points = [...quoted, ...live];
  const { base, quote } = pairOf(...state.chartPair.split("→"));
  canvas.dataset.points = String(points.length);
  canvas.dataset.livePoints = String(live.length);
  canvas.dataset.pair = state.chartPair;
  $("#chart-empty").hidden = points.length > 0;

  // The legend shows the market's price now when it is streamed, else the latest quote.
  const latest = {};
  for (const p of quoted) latest[p.dex] = p;
  for (const p of live) latest[p.dex] = p;
  const legend = VENUES.map((dex) =>
    el(
      "span",
      { class: `legend-item v-${dex}`, "data-dex": dex },
      el("span", { class: "swatch", "aria-hidden": "true" }),
      `${dex} `,
      el("span", { class: "mono", text: latest[dex] ? fmtPrice(latest[dex].price) : "—" }),
    ),
  );
  legend.push(el("span", { class: "dim", text: `${quote} per ${base}` }));
  $("#chart-legend").replaceChildren(...legend);
  canvas.setAttribute(
    "aria-label",
    points.length
      ? `${state.chartPair} price per venue, ${live.length} live prices and ` +
          `${quoted.length} quotes; latest ` +
          VENUES.filter((d) => latest[d])
            .map((d) => `${d} ${fmtPrice(latest[d].price)}`)
            .join(", ")
      : `No prices yet for ${state.chartPair}`,
  );

  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (!points.length) return;

  const pad = { left: 64, right: 14, top: 10, bottom: 26 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  let tMin = Infinity;
  let tMax = -Infinity;
  let yMin = Infinity;
  let yMax = -Infinity;
  for (const p of points) {
    tMin = Math.min(tMin, p.t);
    tMax = Math.max(tMax, p.t);
    yMin = Math.min(yMin, p.price);
    yMax = Math.max(yMax, p.price);
  }
  if (tMax - tMin < 1) {
    const mid = (tMax + tMin) / 2;
    tMin = mid - 0.5;
    tMax = mid + 0.5;
  }
  const span = yMax - yMin || Math.abs(yMax) * 0.002 || 1;
  yMin -= span * 0.12;
  yMax += span * 0.12;
  const x = (t) => pad.left + ((t - tMin) / (tMax - tMin)) * w;
  const y = (v) => pad.top + (1 - (v - yMin) / (yMax - yMin)) * h;

  const grid = cssVar("--grid") || "#333";
  const muted = cssVar("--muted") || "#999";
  ctx.font = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + w, yy);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.fillText(fmtPrice(v), pad.left - 6, yy);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const ticks = Math.max(2, Math.min(5, Math.floor(w / 110)));
  for (let i = 0; i <= ticks; i++) {
    const t = tMin + ((tMax - tMin) * i) / ticks;
    const label =
      tMax - tMin < 60
        ? new Date(t * 1000).toLocaleTimeString("en-GB", {
            hour12: false,
            minute: "2-digit",
            second: "2-digit",
          }) + `.${String(Math.floor((t % 1) * 10))}`
        : fmtTime(t);
    ctx.fillStyle = muted;
    ctx.textAlign = i === 0 ? "left" : i === ticks ? "right" : "center";
    ctx.fillText(label, x(t), pad.top + h + 8);
  }

  const line = (series, width) => {
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    ctx.beginPath();
    series.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.price)) : ctx.moveTo(x(p.t), y(p.price))));
    ctx.stroke();
  };
  const colors = Object.fromEntries(
    VENUES.map((dex) => [dex, cssVar(`--${dex.toLowerCase()}`) || "#888"]),
  );
  const streamed = new Set();
  for (const dex of VENUES) {
    const prices = live.filter((p) => p.dex === dex);
    if (!prices.length) continue;
    streamed.add(dex);
    ctx.strokeStyle = colors[dex];
    // A price holds until it changes: the line runs on to the newest time charted.
    line([...prices, { t: tMax, price: prices[prices.length - 1].price }], 2);
  }
  // Quotes are dots, on top of the lines; with no live prices a thin line shows their trend.
  for (const dex of VENUES) {
    const series = quoted.filter((p) => p.dex === dex);
    if (!series.length) continue;
    const color = colors[dex];
    ctx.strokeStyle = color;
    if (!streamed.has(dex)) line(series, 1);
    for (const p of series) {
      ctx.beginPath();
      ctx.arc(x(p.t), y(p.price), p.won ? 4 : 3, 0, Math.PI * 2);
      if (p.won) {
        ctx.fillStyle = color;
        ctx.fill();
      } else {
        ctx.fillStyle = cssVar("--panel") || "#111";
        ctx.fill();
        ctx.lineWidth = 1.5;
        ctx.stroke();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// start

function start() {
  fillTokens();
  $("#order-form").addEventListener("submit", submitOrder);
  $("#flip").addEventListener("click", () => {
    const a = $("#token-in");
    const b = $("#token-out");
    [a.value, b.value] = [b.value, a.value];
    renderLimitFields();
  });
  for (const input of document.querySelectorAll('input[name="orderType"]'))
    input.addEventListener("change", renderLimitFields);
  $("#token-in").addEventListener("change", renderLimitFields);
  $("#token-out").addEventListener("change", renderLimitFields);
  setInterval(tickOpenOrders, 1000);
  $("#chart-pair").addEventListener("change", (e) => {
    state.chartPair = e.target.value;
    state.chartPairChosen = true;
    scheduleRender();
  });
  const keyInput = $("#api-key");
  keyInput.value = apiKey();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    try {
      if (keyInput.value.trim()) localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      showNotice("This browser does not allow storing the key.");
    }
    // Another key may see other orders (with authentication on, each client sees its own).
    resetOrders();
    showCancelResult("");
    scheduleRender();
    firehose.attempt = 0;
    firehose.everOpened = false;
    connectFirehose();
    market.attempt = 0;
    connectMarket();
  });
  new ResizeObserver(() => drawChart()).observe($("#price-chart"));
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", scheduleRender);
  connectFirehose();
  connectMarket();
  scheduleRender();
}

start();
