// The pins page: pusher-js brings new pins from the channel "pins"; GET /pins lists the ones
// dropped before this page was open; a click POSTs a new one.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const map = document.getElementById("map");
const layer = document.getElementById("pins");
const status = document.getElementById("status");
const message = document.getElementById("message");
const forceFallback = new URLSearchParams(location.search).get("transport") === "fallback";

// Tidings serves the sockets, and the HTTP fallback, on the page's own host and port.
const tls = location.protocol === "https:";
const port = Number(location.port) || (tls ? 443 : 80);
const options = {
  cluster: "local", // pusher-js requires one; wsHost and httpHost decide where it connects
  wsHost: location.hostname,
  wsPort: port,
  wssPort: port,
  // Without these, the fallback would go to Pusher's own servers (sockjs-local.pusher.com).
  httpHost: location.hostname,
  httpPort: port,
  httpsPort: port,
  forceTLS: tls,
  // enabledTransports is left alone: every transport, WebSocket first, then xhr_streaming
  // and xhr_polling. With WebSocket blocked or missing, pusher-js moves on by itself.
};
if (forceFallback) {
  // The knob to try the fallback with: as if the network blocked WebSocket.
  options.disabledTransports = ["ws", "wss"];
}
const pusher = new Pusher(document.body.dataset.appKey, options);

const pins = new Map(); // id -> pin, everything on the map
let maxPins = Infinity; // the store's limit, from GET /pins
let listed = false;

// One pin can arrive twice, from the list and from the channel (see below): the id decides.
function show(pin, fresh) {
  if (pins.has(pin.id)) return;
  const marker = document.createElementNS(SVG, "g");
  marker.setAttribute("class", fresh ? "pin new" : "pin");
  marker.setAttribute("data-testid", "pin");
  marker.setAttribute("data-id", pin.id);
  marker.setAttribute("data-lon", pin.lon);
  marker.setAttribute("data-lat", pin.lat);
  // The tip at the point; the viewBox is in degrees, with y = -lat.
  marker.setAttribute("transform", `translate(${pin.lon} ${-pin.lat}) scale(1.4)`);
  const body = document.createElementNS(SVG, "g");
  const title = document.createElementNS(SVG, "title");
  const when = new Date(pin.at * 1000).toLocaleTimeString();
  title.textContent = `pin ${pin.id}: ${pin.lon}, ${pin.lat} at ${when}`;
  const drop = document.createElementNS(SVG, "path");
  drop.setAttribute("d", "M0 0C-.6 -1.5 -1.8 -2.6 -1.8 -4.2A1.8 1.8 0 1 1 1.8 -4.2C1.8 -2.6 .6 -1.5 0 0Z");
  drop.setAttribute("fill", `hsl(${(pin.id * 137.5) % 360} 70% 50%)`); // golden angle: neighbours differ
  const head = document.createElementNS(SVG, "circle");
  head.setAttribute("cy", "-4.2");
  head.setAttribute("r", ".7");
  body.append(title, drop, head);
  marker.append(body);
  layer.append(marker);
  pins.set(pin.id, { pin, marker });
  // The store keeps the newest maxPins, dropping the oldest: so does the page.
  while (pins.size > maxPins) {
    const oldest = Math.min(...pins.keys());
    pins.get(oldest).marker.remove();
    pins.delete(oldest);
  }
  render();
}

function render() {
  const state = pusher.connection.state;
  const count = `${pins.size} pin${pins.size === 1 ? "" : "s"}`;
  const mode = forceFallback ? " (WebSocket off)" : "";
  status.textContent = state === "connected" && listed ? `live${mode}: ${count}` : `${state}${mode}: ${count}`;
  status.classList.toggle("live", state === "connected" && listed);
}

// The race people get wrong: fetch the list, then subscribe, and a pin dropped in between
// is in neither (the list was made before it, the subscription came after its event).
// So subscribe first, and fetch the list once the subscription is confirmed: every pin is
// then in the list, or arrives as an event, or both, and show() keeps one copy.
// pusher:subscription_succeeded fires again after each reconnect, so the list is fetched
// again then, which brings back the pins dropped while this page was offline.
const channel = pusher.subscribe("pins");
channel.bind("pin", (pin) => show(pin, true));
channel.bind("pusher:subscription_succeeded", loadPins);
pusher.connection.bind("state_change", render);

async function loadPins() {
  try {
    const response = await fetch("/pins", { cache: "no-store" });
    const answer = await response.json();
    maxPins = answer.max;
    for (const pin of answer.pins) show(pin, false);
    listed = true;
    map.dataset.live = "yes"; // for tests: subscribed, and the list is on the map
  } catch (error) {
    message.textContent = `could not load the pins: ${error}`;
  }
  render();
}

map.addEventListener("click", async (event) => {
  // From the click to the viewBox's coordinates, which are degrees.
  const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(
    map.getScreenCTM().inverse(),
  );
  const lon = Math.round(point.x * 100) / 100;
  const lat = Math.round(-point.y * 100) / 100;
  try {
    const response = await fetch("/pins", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ lon, lat }),
    });
    const answer = await response.json();
    if (!response.ok) {
      message.textContent = answer.error;
      return;
    }
    message.textContent = "";
    show(answer.pin, true); // at once; the channel's copy of it is then a duplicate
  } catch (error) {
    message.textContent = `could not drop the pin: ${error}`;
  }
});

render();
