// The Tidings debug console: login, live numbers, channels and members, the event log, the
// deliveries sparkline and the test-event form, against the routes under /console/api.
//
// The page runs under `script-src 'self'; style-src 'self'`: no inline handlers, no eval, no
// style attributes. Everything the server sends is untrusted (channel names, event data, user
// info and reasons come from clients), so it only ever reaches the DOM through textContent.

const API = "/console/api";
const POLL_MS = 2000; // overview and members refresh
const LOG_CAP = 1000; // entries kept in the DOM; the oldest go first
const PAUSED_CAP = 1000; // records held while paused; past it, the oldest are counted and dropped
const SPARK_POINTS = 60; // one `stats` record a second: the last minute
const DATA_PREVIEW = 160; // characters of event data shown before "expand"
const LOG_TYPES = [
  "connection",
  "disconnection",
  "subscribed",
  "unsubscribed",
  "refused",
  "api_message",
  "client_event",
  "webhook",
];

const $ = (id) => document.getElementById(id);

const state = {
  csrf: "",
  apps: [],
  appId: null,
  stream: null,
  streamRetry: null,
  pollTimer: null,
  membersTimer: null,
  selectedChannel: null,
  paused: false,
  pending: [],
  pendingDropped: 0,
  spark: [],
  generation: 0, // bumped on every app switch or logout: late answers for the old view are ignored
  abort: new AbortController(), // cancels the old view's calls still in flight
  filter: null, // the log filter, from the inputs (refilter)
};

// -- small DOM helpers -------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

// -- the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// A JSON call to the console API. A 401 anywhere but the login itself means the session is
// gone (expired, logged out in another tab, server restarted): back to the login view.
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: path.startsWith("/apps/") ? state.abort.signal : undefined,
    });
  } catch (error) {
    throw new ApiError(0, "The server did not answer (" + error.message + ")");
  }
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const message =
      payload && typeof payload.error === "string"
        ? payload.error
        : "HTTP " + response.status + " " + response.statusText;
    if (response.status === 401 && path !== "/login") enterLogin();
    throw new ApiError(response.status, message, response.headers.get("Retry-After"));
  }
  return payload;
}

const appPath = (suffix) => "/apps/" + encodeURIComponent(state.appId) + suffix;

// -- login and logout --------------------------------------------------------------------------

function enterLogin(message) {
  stopApp();
  state.csrf = "";
  state.apps = [];
  show($("main-view"), false);
  show($("session-bar"), false);
  show($("login-view"), true);
  $("login-error").textContent = message || "";
  for (const id of ["login-secret", "login-token"]) $(id).value = "";
}

function enterSession(session) {
  state.csrf = session.csrf;
  state.apps = Array.isArray(session.apps) ? session.apps : [];
  show($("login-view"), false);
  $("login-error").textContent = "";
  show($("session-bar"), true);
  show($("main-view"), true);

  const select = $("app-select");
  select.replaceChildren();
  for (const app of state.apps) {
    const option = el("option", "", app.id + " (" + app.key + ")");
    option.value = app.id;
    select.append(option);
  }
  const several = state.apps.length > 1;
  show($("app-picker"), several);
  show($("app-name"), !several);
  if (state.apps.length === 0) {
    $("app-name").textContent = "no apps";
    return;
  }
  const keep = state.apps.some((app) => app.id === state.appId) ? state.appId : state.apps[0].id;
  select.value = keep;
  startApp(keep);
}

async function login(body) {
  $("login-error").textContent = "";
  try {
    enterSession(await api("POST", "/login", body));
  } catch (error) {
    let message = error.message;
    if (error.status === 429 && error.retryAfter) {
      message += " (try again in " + error.retryAfter + " s)";
    }
    $("login-error").textContent = message;
  }
}

async function logout() {
  stopApp(); // first, so no poll or stream of this session is still asking once it is gone
  try {
    await api("POST", "/logout", {});
  } catch (error) {
    if (error.status === 401) return; // already logged out; api() showed the login view
  }
  enterLogin();
}

// -- one app's view ----------------------------------------------------------------------------

function stopApp() {
  state.generation += 1;
  state.abort.abort();
  state.abort = new AbortController();
  if (state.stream) state.stream.close();
  state.stream = null;
  clearTimeout(state.streamRetry);
  clearTimeout(state.pollTimer);
  selectChannel(null);
  setStreamStatus("offline", "offline");
}

function startApp(appId) {
  stopApp();
  state.appId = appId;
  const app = state.apps.find((a) => a.id === appId);
  $("app-name").textContent = app ? "App " + app.id + " (" + app.key + ")" : "";
  clearLog();
  state.spark = [];
  drawSparkline();
  for (const id of ["connections", "nodes", "deliveries-per-second"]) $(id).textContent = "–";
  $("channels").replaceChildren();
  openStream();
  pollOverview();
}

async function pollOverview() {
  const generation = state.generation;
  try {
    const overview = await api("GET", appPath("/overview"));
    if (generation !== state.generation) return;
    $("connections").textContent = overview.connections;
    $("nodes").textContent = overview.nodes;
    renderChannels(overview.channels || [], overview.channels_truncated);
  } catch (error) {
    if (generation !== state.generation || error.status === 401) return;
    $("channels-note").textContent = "(" + error.message + ")";
  }
  if (generation === state.generation) state.pollTimer = setTimeout(pollOverview, POLL_MS);
}

const isPresence = (name) => name.startsWith("presence-");

function renderChannels(channels, truncated) {
  const body = $("channels");
  const rows = new Map();
  for (const row of body.children) rows.set(row.dataset.name, row);
  const seen = new Set();
  let previous = null;
  for (const channel of channels) {
    const name = String(channel.name);
    seen.add(name);
    let row = rows.get(name);
    if (!row) {
      row = el("tr");
      row.dataset.testid = "channel";
      row.dataset.name = name;
      row.append(el("td", "mono name", name), el("td", "num"), el("td", "num"));
      if (isPresence(name)) {
        row.classList.add("clickable");
        row.title = "Show members";
        row.tabIndex = 0;
      }
    }
    row.children[1].textContent = channel.subscription_count ?? "";
    row.children[2].textContent = channel.user_count ?? "";
    row.classList.toggle("selected", name === state.selectedChannel);
    // Keep the server's order (by name) without rebuilding rows that did not change.
    const next = previous ? previous.nextSibling : body.firstChild;
    if (next !== row) body.insertBefore(row, next);
    previous = row;
  }
  for (const [name, row] of rows) if (!seen.has(name)) row.remove();
  show($("channels-empty"), channels.length === 0);
  $("channels-note").textContent = truncated ? "(first " + channels.length + ")" : "";
}

function onChannelsClick(event) {
  const row = event.target.closest("tr.clickable");
  if (row) selectChannel(row.dataset.name === state.selectedChannel ? null : row.dataset.name);
}

function selectChannel(name) {
  state.selectedChannel = name;
  clearTimeout(state.membersTimer);
  for (const row of $("channels").children) {
    row.classList.toggle("selected", row.dataset.name === name);
  }
  show($("members-panel"), name !== null);
  $("members").replaceChildren();
  show($("members-error"), false);
  if (name !== null) {
    $("members-channel").textContent = name;
    pollMembers(name);
  }
}

async function pollMembers(name) {
  const generation = state.generation;
  const current = () => generation === state.generation && state.selectedChannel === name;
  try {
    const answer = await api("GET", appPath("/channels/" + encodeURIComponent(name) + "/members"));
    if (!current()) return;
    show($("members-error"), false);
    const list = $("members");
    list.replaceChildren();
    for (const member of answer.members || []) {
      const item = el("li");
      item.dataset.testid = "member";
      item.append(el("span", "mono member-id", member.id));
      if (member.info !== null && member.info !== undefined) {
        item.append(el("span", "mono muted member-info", JSON.stringify(member.info)));
      }
      list.append(item);
    }
    if (list.children.length === 0) list.append(el("li", "muted", "Nobody."));
  } catch (error) {
    if (!current() || error.status === 401) return;
    $("members-error").textContent = error.message;
    show($("members-error"), true);
  }
  if (current()) state.membersTimer = setTimeout(() => pollMembers(name), POLL_MS);
}

// -- the stream --------------------------------------------------------------------------------

function setStreamStatus(text, kind) {
  const status = $("stream-status");
  status.textContent = text;
  status.dataset.state = kind;
}

function openStream() {
  const generation = state.generation;
  // Same origin, so the session cookie goes along; EventSource reconnects by itself after a
  // dropped connection (the server asks for `retry: 2000`).
  const stream = new EventSource(API + appPath("/stream"));
  state.stream = stream;
  setStreamStatus("connecting", "connecting");
  stream.onopen = () => setStreamStatus("live", "live");
  stream.onmessage = (message) => {
    let record;
    try {
      record = JSON.parse(message.data);
    } catch {
      return; // not ours to guess at
    }
    onRecord(record);
  };
  stream.onerror = () => {
    if (generation !== state.generation) return;
    if (stream.readyState === EventSource.CONNECTING) {
      setStreamStatus("reconnecting", "reconnecting");
      return;
    }
    // CLOSED: the server answered with an error (401, 403, 429 …), which EventSource never
    // retries. Ask the session why; without one, api() goes back to the login view.
    setStreamStatus("reconnecting", "reconnecting");
    stream.close();
    api("GET", "/session")
      .then(() => {
        if (generation !== state.generation) return;
        state.streamRetry = setTimeout(() => {
          if (generation === state.generation) openStream();
        }, POLL_MS);
      })
      .catch(() => {});
  };
}

function onRecord(record) {
  if (!record || typeof record !== "object") return;
  if (record.type === "stats") {
    onStats(record);
    return;
  }
  if (state.paused) {
    state.pending.push(record);
    if (state.pending.length > PAUSED_CAP) {
      state.pending.shift();
      state.pendingDropped += 1;
    }
    updatePauseButton();
    return;
  }
  addEntry(record);
}

function onStats(record) {
  $("deliveries-per-second").textContent = record.deliveries_per_second;
  if (Number.isInteger(record.connections)) $("connections").textContent = record.connections;
  if (Number.isInteger(record.nodes)) $("nodes").textContent = record.nodes;
  state.spark.push(Number(record.deliveries_per_second) || 0);
  if (state.spark.length > SPARK_POINTS) state.spark.shift();
  drawSparkline();
}

function drawSparkline() {
  const values = state.spark;
  const line = $("sparkline-line");
  if (values.length === 0) {
    line.setAttribute("points", "");
    return;
  }
  const top = Math.max(1, ...values);
  const step = 120 / (SPARK_POINTS - 1);
  // Right-aligned: the newest value is always at the right edge.
  const offset = SPARK_POINTS - values.length;
  const points = values.map((value, i) => {
    const x = (offset + i) * step;
    const y = 30 - (value / top) * 28;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  if (points.length === 1) points.unshift("0," + points[0].split(",")[1]);
  line.setAttribute("points", points.join(" "));
  $("sparkline").dataset.max = String(top);
}

// -- the log -----------------------------------------------------------------------------------

const pad = (n, width = 2) => String(n).padStart(width, "0");

function formatTime(ms) {
  const date = new Date(Number(ms) || Date.now());
  return (
    pad(date.getHours()) +
    ":" +
    pad(date.getMinutes()) +
    ":" +
    pad(date.getSeconds()) +
    "." +
    pad(date.getMilliseconds(), 3)
  );
}

// The channels a record is about, for the channel filter.
function recordChannels(record) {
  if (Array.isArray(record.channels)) return record.channels.map(String);
  return record.channel ? [String(record.channel)] : [];
}

function recordEvents(record) {
  if (Array.isArray(record.events)) return record.events.map(String); // webhooks
  return record.event ? [String(record.event)] : [];
}

function field(label, value, className) {
  const span = el("span", "field" + (className ? " " + className : ""));
  span.append(el("span", "key", label), el("span", "val", value));
  return span;
}

// Event data: short data inline, long data behind a <details> with the whole (pretty) text.
function dataBlock(data, truncated) {
  const text = String(data ?? "");
  let pretty = text;
  try {
    pretty = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    pretty = text;
  }
  const suffix = truncated ? " … (truncated by the server)" : "";
  if (text.length <= DATA_PREVIEW && !text.includes("\n")) {
    return el("code", "data", text + suffix);
  }
  const details = el("details", "data");
  details.append(el("summary", "", text.slice(0, DATA_PREVIEW).replace(/\s+/g, " ") + " …"));
  details.append(el("pre", "", pretty + suffix));
  return details;
}

function describe(record) {
  const where = [];
  const details = [];
  const socket = (id) => (id ? field("socket", id, "mono") : null);
  switch (record.type) {
    case "connection":
      where.push(socket(record.socket_id));
      details.push(field("transport", record.transport));
      break;
    case "disconnection":
      where.push(socket(record.socket_id));
      details.push(field("by", record.by));
      if (record.code !== null && record.code !== undefined) details.push(field("code", record.code));
      if (record.reason) details.push(el("span", "reason", record.reason));
      break;
    case "subscribed":
    case "unsubscribed":
      where.push(field("channel", record.channel, "mono"), socket(record.socket_id));
      if (record.user_id !== undefined && record.user_id !== null) {
        details.push(field("user", record.user_id, "mono"));
      }
      break;
    case "refused":
      if (record.channel) where.push(field("channel", record.channel, "mono"));
      where.push(socket(record.socket_id));
      if (record.code !== null && record.code !== undefined) details.push(field("code", record.code));
      details.push(el("span", "reason", record.reason));
      break;
    case "api_message":
      where.push(
        field("channels", (record.channels || []).join(", "), "mono"),
        field("event", record.event, "mono"),
      );
      details.push(field("source", record.source));
      if (record.socket_id) details.push(field("except", record.socket_id, "mono"));
      details.push(dataBlock(record.data, record.truncated));
      break;
    case "client_event":
      where.push(
        field("channel", record.channel, "mono"),
        field("event", record.event, "mono"),
        socket(record.socket_id),
      );
      if (record.user_id !== undefined && record.user_id !== null) {
        details.push(field("user", record.user_id, "mono"));
      }
      details.push(dataBlock(record.data, record.truncated));
      break;
    case "webhook":
      where.push(field("events", (record.events || []).join(", "), "mono"));
      details.push(field("status", record.status, record.status === "failed" ? "bad" : "good"));
      if (record.http_status !== null && record.http_status !== undefined) {
        details.push(field("http", record.http_status));
      }
      details.push(field("url", record.url, "mono"));
      if (record.error) details.push(el("span", "reason", record.error));
      break;
    case "dropped":
      details.push(
        el(
          "span",
          "reason",
          record.count +
            (record.whilePaused
              ? " records dropped while paused (the oldest, past " + PAUSED_CAP + " held)"
              : " records dropped by the server's rate limit"),
        ),
      );
      break;
    default:
      details.push(el("code", "data", JSON.stringify(record)));
  }
  return { where: where.filter(Boolean), details };
}

function buildEntry(record) {
  const type = String(record.type || "unknown");
  const item = el("li", "entry type-" + type.replace(/[^a-z_]/g, ""));
  item.dataset.testid = "log-entry";
  item.dataset.type = type;
  item.dataset.channels = recordChannels(record).join("\n").toLowerCase();
  item.dataset.events = recordEvents(record).join("\n").toLowerCase();
  const time = el("time", "time", formatTime(record.time));
  time.dateTime = new Date(Number(record.time) || Date.now()).toISOString();
  if (record.node) time.title = "node " + record.node;
  const { where, details } = describe(record);
  const whereBox = el("span", "where");
  whereBox.append(...where);
  const detailBox = el("span", "details");
  detailBox.append(...details);
  const body = el("span", "body");
  body.append(whereBox, detailBox);
  item.append(time, el("span", "badge", type.replace("_", " ")), body);
  return item;
}

function addEntry(record) {
  const item = buildEntry(record);
  applyFilter(item, state.filter);
  const log = $("log");
  log.prepend(item); // newest first
  while (log.children.length > LOG_CAP) log.lastElementChild.remove();
  show($("log-empty"), false);
}

function clearLog() {
  $("log").replaceChildren();
  state.pending = [];
  state.pendingDropped = 0;
  updatePauseButton();
  show($("log-empty"), true);
}

function currentFilter() {
  const types = new Set();
  for (const box of $("type-filters").querySelectorAll("input")) {
    if (box.checked) types.add(box.value);
  }
  return {
    channel: $("filter-channel").value.trim().toLowerCase(),
    event: $("filter-event").value.trim().toLowerCase(),
    types,
  };
}

// Local filtering: substring, case-insensitive. A record without a channel (a connection, say)
// does not match a channel filter; `dropped` notices are always shown.
function matches(item, filter) {
  const type = item.dataset.type;
  if (type === "dropped") return true;
  if (LOG_TYPES.includes(type) && !filter.types.has(type)) return false;
  if (filter.channel && !item.dataset.channels.split("\n").some((c) => c.includes(filter.channel))) {
    return false;
  }
  if (filter.event && !item.dataset.events.split("\n").some((e) => e.includes(filter.event))) {
    return false;
  }
  return true;
}

function applyFilter(item, filter) {
  item.hidden = !matches(item, filter);
}

// Read from the inputs once per change, not once per record (up to 200 records a second).
function refilter() {
  state.filter = currentFilter();
  for (const item of $("log").children) applyFilter(item, state.filter);
}

function updatePauseButton() {
  const button = $("pause");
  if (!state.paused) {
    button.textContent = "Pause";
    button.classList.remove("active");
    return;
  }
  const waiting = state.pending.length + state.pendingDropped;
  button.textContent = waiting ? "Resume (" + waiting + " new)" : "Resume";
  button.classList.add("active");
}

function togglePause() {
  state.paused = !state.paused;
  if (!state.paused) {
    if (state.pendingDropped) addEntry({ type: "dropped", time: Date.now(), count: state.pendingDropped, whilePaused: true });
    for (const record of state.pending) addEntry(record);
    state.pending = [];
    state.pendingDropped = 0;
  }
  updatePauseButton();
}

function buildTypeFilters() {
  const box = $("type-filters");
  for (const type of LOG_TYPES) {
    const label = el("label", "type-filter type-" + type);
    const input = el("input");
    input.type = "checkbox";
    input.value = type;
    input.checked = true;
    input.dataset.testid = "filter-type";
    label.append(input, el("span", "badge", type.replace("_", " ")));
    box.append(label);
  }
}

// -- the test event form -----------------------------------------------------------------------

async function sendEvent(event) {
  event.preventDefault();
  const result = $("event-result");
  const button = $("event-send");
  result.textContent = "Sending…";
  result.className = "result";
  button.disabled = true;
  try {
    await api("POST", appPath("/events"), {
      channel: $("event-channel").value.trim(),
      event: $("event-name").value.trim(),
      data: $("event-data").value,
    });
    result.textContent = "Sent at " + formatTime(Date.now());
    result.classList.add("good");
  } catch (error) {
    result.textContent = error.message;
    result.classList.add("bad");
  } finally {
    button.disabled = false;
  }
}

// -- start -------------------------------------------------------------------------------------

function wire() {
  buildTypeFilters();
  state.filter = currentFilter();
  $("login-app").addEventListener("submit", (event) => {
    event.preventDefault();
    login({ key: $("login-key").value.trim(), secret: $("login-secret").value });
  });
  $("login-operator").addEventListener("submit", (event) => {
    event.preventDefault();
    login({ token: $("login-token").value });
  });
  $("logout").addEventListener("click", logout);
  $("app-select").addEventListener("change", (event) => startApp(event.target.value));
  $("channels").addEventListener("click", onChannelsClick);
  $("channels").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") onChannelsClick(event);
  });
  $("members-close").addEventListener("click", () => selectChannel(null));
  $("filter-channel").addEventListener("input", refilter);
  $("filter-event").addEventListener("input", refilter);
  $("type-filters").addEventListener("change", refilter);
  $("pause").addEventListener("click", togglePause);
  $("clear").addEventListener("click", clearLog);
  $("send-form").addEventListener("submit", sendEvent);
}

async function start() {
  wire();
  try {
    enterSession(await api("GET", "/session"));
  } catch (error) {
    if (error.status !== 401) enterLogin(error.message);
  }
}

start();
