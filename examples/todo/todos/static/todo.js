// One todo list, live. Its items are the rows of the channel private-live.todo.list_id.<id>:
// Tidings sends them all when we subscribe (tidings:snapshot), then created, updated and
// deleted as anyone's writes commit. Tidings.liveCollection (/tidings.js) keeps the rows,
// in order, and drops any event older than what it has: every event carries the row's version.
"use strict";

(() => {
  const page = JSON.parse(document.getElementById("page").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.querySelector('[data-testid="live-status"]');
  const refused = document.querySelector('[data-testid="refused"]');
  const problem = document.querySelector('[data-testid="error"]');
  const items = document.querySelector('[data-testid="todo-items"]');
  const addForm = document.querySelector('[data-testid="todo-add"]'); // members only
  const input = document.querySelector('[data-testid="todo-input"]');

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
    // A private channel: pusher-js POSTs to /pusher/auth, a Django view under CSRF
    // protection, where TodoLive.authorize (todo_site/realtime.py) lets members only.
    channelAuthorization: { endpoint: "/pusher/auth", headers: { "X-CSRFToken": csrf } },
  });

  const channel = pusher.subscribe(page.channel);
  const todos = Tidings.liveCollection(channel, {
    key: "id",
    version: "version",
    onChange: render,
    // No stale rows here: titles are at most 200 characters, far below the payload limit.
  });
  window.todo = { pusher, channel, todos }; // for the browser console (and the tests)

  let live = false;

  // Sent after every subscription, the first and each one after a reconnection (pusher-js
  // subscribes again by itself): whatever was missed while offline is in it.
  channel.bind("tidings:snapshot", () => {
    live = true;
    refused.hidden = true;
    if (addForm) input.disabled = false;
    render(todos.rows);
  });

  channel.bind("pusher:subscription_error", (error) => {
    live = false;
    items.replaceChildren();
    status.textContent = "";
    refused.hidden = false;
    refused.textContent =
      error.status === 403
        ? "You are not a member of this list: the server refused its channel (403), so " +
          "none of its items reach this page."
        : `Could not load this list (status ${error.status}${error.type ? `, ${error.type}` : ""}).`;
  });

  pusher.connection.bind("state_change", ({ current }) => {
    if (current === "connected" || !refused.hidden) return;
    live = false;
    status.dataset.state = current;
    status.textContent = current === "connecting" ? "Connecting…" : "Offline: reconnecting…";
  });

  // -- the items ---------------------------------------------------------------------------

  const elements = new Map(); // id -> <li>

  function itemElement(row) {
    const li = document.createElement("li");
    li.className = "item";
    li.dataset.testid = "todo-item";
    li.dataset.id = row.id;

    const done = document.createElement("input");
    done.type = "checkbox";
    done.dataset.testid = "todo-done";
    done.setAttribute("aria-label", "Done");
    done.addEventListener("change", () =>
      write(`/items/${row.id}/done`, { done: String(done.checked) }),
    );

    const title = document.createElement("input");
    title.className = "title";
    title.dataset.testid = "todo-title";
    title.maxLength = 200;
    title.setAttribute("aria-label", "Title");
    title.addEventListener("change", async () => {
      title.dataset.saving = "1"; // until the answer: keep showing the new title
      await write(`/items/${row.id}/rename`, { title: title.value });
      delete title.dataset.saving;
      render(todos.rows);
    });
    title.addEventListener("keydown", (event) => event.key === "Enter" && title.blur());
    // Changes that came while this field had the focus were not shown: show them now.
    title.addEventListener("blur", () => render(todos.rows));

    const move = document.createElement("select");
    move.dataset.testid = "todo-move";
    move.setAttribute("aria-label", "Move to list");
    move.append(new Option("Move to…", ""));
    for (const other of page.lists) {
      if (other.id !== page.listId) move.append(new Option(other.name, other.id));
    }
    move.addEventListener("change", () => move.value && write(`/items/${row.id}/move`, { list: move.value }));

    const remove = document.createElement("button");
    remove.type = "button";
    remove.dataset.testid = "todo-delete";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => write(`/items/${row.id}/delete`, {}));

    li.append(done, title, move, remove);
    return li;
  }

  // rows: the collection's, in snapshot order then in the order they were created. The
  // elements are kept and updated, not rebuilt, so a title being edited keeps the focus.
  function render(rows) {
    if (!live) return;
    const seen = new Set();
    let previous = null;
    for (const row of rows) {
      seen.add(String(row.id));
      let li = elements.get(String(row.id));
      if (!li) elements.set(String(row.id), (li = itemElement(row)));
      const [done, title, move] = li.children;
      li.classList.toggle("done", row.done);
      li.dataset.version = row.version;
      li.dataset.title = row.title;
      done.checked = row.done;
      if (document.activeElement !== title && !title.dataset.saving) title.value = row.title;
      move.value = "";
      const expected = previous ? previous.nextSibling : items.firstChild;
      if (expected !== li) items.insertBefore(li, expected);
      previous = li;
    }
    for (const [id, li] of elements) {
      if (!seen.has(id)) {
        li.remove();
        elements.delete(id);
      }
    }
    const done = rows.filter((row) => row.done).length;
    status.dataset.state = "live";
    status.textContent = rows.length
      ? `Live: ${done} of ${rows.length} done.`
      : "Live: nothing to do yet.";
  }

  // -- writes: plain POSTs to Django views -------------------------------------------------

  // X-Socket-ID (Tidings.socketHeaders, while connected): pusher-js does not send it by
  // itself. With it, LiveMiddleware leaves this tab out of the event its write causes
  // (everyone else, this user's other tabs too, gets it), and this tab applies the view's
  // answer instead: the same event and row, handed to todos.apply, so they pass the version
  // check the channel's events pass. We chose this over waiting for our own event (no
  // header) so that the tab that wrote does not depend on its socket: its change shows as
  // soon as the answer is back, even while pusher-js is reconnecting, and an answer that
  // arrives after a newer event is dropped by its version.
  async function write(url, fields) {
    problem.hidden = true;
    const headers = Tidings.socketHeaders(pusher, { "X-CSRFToken": csrf });
    let answer;
    try {
      const response = await fetch(url, { method: "POST", headers, body: new URLSearchParams(fields) });
      answer = await response.json().catch(() => ({ error: `status ${response.status}` }));
      if (!response.ok) throw new Error(answer.error || `status ${response.status}`);
    } catch (error) {
      problem.hidden = false;
      problem.textContent = `Not saved: ${error.message}.`;
      render(todos.rows); // undo what the control shows (a tick, a choice) from the rows
      return false;
    }
    todos.apply(answer.event, answer.row);
    return true;
  }

  if (addForm) {
    input.disabled = true; // until the snapshot: there is no list to add to before it
    addForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value;
      if (await write(page.createUrl, { title })) {
        if (input.value === title) input.value = "";
      }
      input.focus();
    });
  }
})();
