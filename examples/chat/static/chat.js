// The page: stock pusher-js connected to the app's own port (Tidings runs inside it).
// Everything the server sends is shown with textContent, never innerHTML: messages and
// nicknames come from other people.
"use strict";

const TYPING_SEND_EVERY = 2000; // ms between two typing events this page sends
const TYPING_SHOWN_FOR = 3000; // ms "alice is typing…" stays without a new one

const $ = (selector) => document.querySelector(selector);
let rooms = [];
let room = null; // the presence channel of the room on screen
let lastTypingSent = 0;
const typing = new Map(); // nickname -> timer that clears it

async function main() {
  const session = await (await fetch("/api/session")).json();
  rooms = session.rooms;
  const pusher = new Pusher(session.key, {
    cluster: "local", // pusher-js wants one; the host options below decide where it goes
    wsHost: location.hostname,
    wsPort: Number(location.port) || 80,
    wssPort: Number(location.port) || 443,
    httpHost: location.hostname,
    httpPort: Number(location.port) || 80,
    httpsPort: Number(location.port) || 443,
    httpPath: "/pusher", // the HTTP fallback, where WebSocket is blocked
    forceTLS: location.protocol === "https:",
    channelAuthorization: { endpoint: "/pusher/auth" }, // same origin: the cookie goes along
  });

  // A public channel: no auth, so the clock ticks before a nickname is chosen.
  pusher.subscribe("clock").bind("tick", (data) => {
    $("[data-testid=clock]").textContent = data.time;
  });

  if (session.nickname) {
    enter(pusher, session.nickname);
  } else {
    askNickname(pusher);
  }
}

function askNickname(pusher) {
  const form = $("#nickname-form");
  form.hidden = false;
  $("#nickname").focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await postJSON("/api/nickname", { nickname: $("#nickname").value });
    if (answer.error) {
      $("[data-testid=nickname-error]").textContent = answer.error;
      return;
    }
    form.hidden = true;
    enter(pusher, answer.nickname);
  });
}

function enter(pusher, nickname) {
  $("#me").textContent = nickname;
  $("#chat").hidden = false;
  for (const name of rooms) {
    const link = Object.assign(document.createElement("a"), { href: `#${name}`, textContent: `#${name}` });
    link.dataset.testid = "room";
    const item = document.createElement("li");
    item.append(link);
    $("#rooms").append(item);
  }
  window.addEventListener("hashchange", () => join(pusher));
  join(pusher);

  $("#message-form").addEventListener("submit", async (event) => {
    event.preventDefault(); // a form with one input submits on Enter
    const input = $("#message");
    const answer = await postJSON(`/api/rooms/${roomName()}/messages`, { text: input.value });
    $("[data-testid=message-error]").textContent = answer.error || "";
    if (!answer.error) {
      input.value = "";
      lastTypingSent = 0; // the message clears our "typing…" elsewhere: the next key says it again
    }
  });
  $("#message").addEventListener("input", () => {
    // Client events go to the others straight through Tidings; the app's `before` hook
    // still sees each one, puts the real nickname in, and drops bursts.
    const now = Date.now();
    if (room && room.subscribed && $("#message").value && now - lastTypingSent > TYPING_SEND_EVERY) {
      lastTypingSent = now;
      room.trigger("client-typing", {});
    }
  });
}

function roomName() {
  const wanted = location.hash.slice(1);
  return rooms.includes(wanted) ? wanted : rooms[0];
}

// One room at a time: leaving a presence channel tells the others we left.
function join(pusher) {
  const name = roomName();
  if (room) pusher.unsubscribe(room.name);
  room = pusher.subscribe(`presence-room.${name}`);
  $("#room-name").textContent = `#${name}`;
  $("#messages").replaceChildren(); // no history: a room shows what is said while you are in it
  for (const timer of typing.values()) clearTimeout(timer);
  typing.clear();
  showTyping();
  for (const link of document.querySelectorAll("#rooms a")) {
    if (link.hash === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }

  room.bind("pusher:subscription_succeeded", () => showMembers(room));
  room.bind("pusher:member_added", () => showMembers(room));
  room.bind("pusher:member_removed", () => showMembers(room));
  room.bind("pusher:subscription_error", (error) => {
    $("[data-testid=message-error]").textContent = `could not join #${name} (${error.status})`;
  });
  room.bind("message", (message) => {
    stopTyping(message.from);
    const item = document.createElement("li");
    item.dataset.testid = "message";
    item.append(
      Object.assign(document.createElement("span"), { className: "at", textContent: message.time }),
      Object.assign(document.createElement("span"), { className: "from", textContent: message.from }),
      Object.assign(document.createElement("span"), { className: "text", textContent: message.text }),
    );
    $("#messages").append(item);
    item.scrollIntoView({ block: "nearest" });
  });
  room.bind("client-typing", (data) => {
    clearTimeout(typing.get(data.nickname));
    typing.set(data.nickname, setTimeout(() => stopTyping(data.nickname), TYPING_SHOWN_FOR));
    showTyping();
  });
}

function showMembers(channel) {
  const items = [];
  channel.members.each((member) => {
    const item = Object.assign(document.createElement("li"), { textContent: member.info.nickname });
    item.dataset.testid = "member";
    items.push(item);
  });
  items.sort((a, b) => a.textContent.localeCompare(b.textContent));
  $("#members").replaceChildren(...items);
}

function stopTyping(nickname) {
  clearTimeout(typing.get(nickname));
  typing.delete(nickname);
  showTyping();
}

function showTyping() {
  const names = [...typing.keys()];
  $("#typing").textContent =
    names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  // FastAPI's own refusals (a body that is not JSON) say "detail"; the app's say "error".
  if (!response.ok && !answer.error) answer.error = `refused (${response.status})`;
  return answer;
}

main();
