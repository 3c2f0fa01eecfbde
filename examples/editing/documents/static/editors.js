// Who else is on this document, live. Each document has a presence channel,
// presence-document-<id>: whoever is subscribed is on the page. Tidings sends the members
// when we join, then pusher:member_added and pusher:member_removed as others come and go.
"use strict";

(() => {
  const page = JSON.parse(document.getElementById("page").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const editors = document.querySelector('[data-testid="editors"]');
  const status = document.querySelector('[data-testid="presence-status"]');
  const refused = document.querySelector('[data-testid="refused"]');
  const body = document.querySelector('[data-testid="body"]');
  const saveButton = document.querySelector('[data-testid="save"]');
  const saved = document.querySelector('[data-testid="saved"]');

  // Tidings is served by the same uvicorn as the pages (rt.asgi in asgi.py): same host and
  // port for the WebSocket and for the HTTP fallback pusher-js uses when WebSocket is blocked.
  const secure = location.protocol === "https:";
  const port = Number(location.port) || (secure ? 443 : 80);
  const pusher = new Pusher(page.key, {
    cluster: "local", // pusher-js 8 requires one; unused once wsHost is set
    wsHost: location.hostname,
    wsPort: port,
    wssPort: port,
    httpHost: location.hostname,
    httpPort: port,
    httpsPort: port,
    forceTLS: secure,
    // Joining a presence channel makes pusher-js POST the socket id and channel name to
    // /pusher/auth, a Django view (tidings.integrations.django) under Django's CSRF
    // protection like any other POST: without the token Django answers 403 before the
    // @rt.presence rule is even asked. The token comes from the page (a <meta> tag), the
    // session cookie goes with the request by itself (same origin).
    channelAuthorization: { endpoint: "/pusher/auth", headers: { "X-CSRFToken": csrf } },
  });
  window.editing = { pusher }; // for the browser console (and the tests)

  const channel = pusher.subscribe(page.channel);

  // -- avatars ---------------------------------------------------------------------------

  function initials(name) {
    const words = name.trim().split(/\s+/).filter(Boolean);
    const letters = words.length > 1 ? words[0][0] + words[words.length - 1][0] : name.slice(0, 2);
    return letters.toUpperCase();
  }

  // member: {id, info} as pusher-js gives it; info is the user_info of the @rt.presence rule.
  function avatar(member) {
    const you = member.id === page.me.id;
    const circle = document.createElement("span");
    circle.className = you ? "editor you" : "editor";
    circle.dataset.testid = "editor";
    circle.dataset.userId = member.id;
    circle.style.background = member.info.colour;
    circle.title = you ? `${member.info.name} (you)` : member.info.name;
    circle.textContent = initials(member.info.name); // "you" under your own: CSS ::after
    return circle;
  }

  function add(member) {
    const circle = avatar(member);
    // You first, the others in the order they came.
    if (circle.classList.contains("you")) editors.prepend(circle);
    else editors.append(circle);
  }

  function remove(member) {
    editors.querySelector(`[data-user-id="${CSS.escape(member.id)}"]`)?.remove();
  }

  function count() {
    const others = channel.members.count - 1;
    status.textContent =
      others <= 0 ? "Only you are here." : `You and ${others} other${others > 1 ? "s" : ""} are here.`;
  }

  // Sent once joined, and again after every reconnection (pusher-js joins again by itself):
  // the full list each time, so the avatars are redrawn from it.
  channel.bind("pusher:subscription_succeeded", (members) => {
    refused.hidden = true;
    editors.replaceChildren();
    members.each(add);
    count();
  });

  // One event per user, not per tab: a user who opens the document in a second tab is a
  // second subscription with the same user_id, and presence counts users. They are added
  // when their first tab joins and removed when their last tab leaves.
  channel.bind("pusher:member_added", (member) => {
    add(member);
    count();
  });
  channel.bind("pusher:member_removed", (member) => {
    remove(member);
    count();
  });

  // The auth endpoint said no: signed out (in another tab, say), or no longer allowed on
  // this document. Say so, rather than show an empty list as if nobody were here.
  channel.bind("pusher:subscription_error", (error) => {
    editors.replaceChildren();
    status.textContent = "";
    refused.hidden = false;
    refused.textContent =
      error.status === 403
        ? "You cannot join the people on this document: you are signed out, or no longer " +
          "allowed to see it (the server answered 403). Reload the page to sign in again."
        : `Could not join the people on this document (status ${error.status}).`;
  });

  pusher.connection.bind("state_change", ({ current }) => {
    if (current !== "connected" && refused.hidden) {
      status.textContent = current === "connecting" ? "Connecting…" : "Offline: reconnecting…";
    }
  });

  // -- saving (optional: presence is the point) -----------------------------------------

  let baseline = body.value; // the text as last saved or loaded: unsaved edits are kept
  let lastSave = page.savedAt ? { by: page.savedBy, at: new Date(page.savedAt), note: "" } : null;

  function ago(when) {
    const seconds = Math.max(0, Math.round((Date.now() - when.getTime()) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    return when.toLocaleString();
  }

  function showSaved() {
    saved.textContent = lastSave ? `${lastSave.by} saved ${ago(lastSave.at)}${lastSave.note}` : "";
  }
  setInterval(showSaved, 1000);
  showSaved();

  saveButton.addEventListener("click", async () => {
    const text = body.value;
    const form = new URLSearchParams({ body: text, socket_id: pusher.connection.socket_id || "" });
    const response = await fetch(page.saveUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrf },
      body: form,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: `status ${response.status}` }));
      saved.textContent = `Not saved: ${problem.error}.`;
      return;
    }
    baseline = text;
    lastSave = { by: "you", at: new Date((await response.json()).at), note: "" };
    showSaved();
  });

  // Published with on_commit=True by the save view: only saves that committed arrive.
  channel.bind("saved", (news) => {
    const by = news.userId === page.me.id ? "you (in another tab)" : news.by;
    // Their text replaces ours only if we changed nothing since our last save or load.
    if ("body" in news && body.value === baseline) body.value = baseline = news.body;
    const note = body.value === news.body ? "" : " (your unsaved text is kept; reload for theirs)";
    lastSave = { by, at: new Date(news.at), note };
    showSaved();
  });
})();
