"""The Tornado chat demo, on FastAPI with Tidings in the same process.

One uvicorn process serves everything on one port: this FastAPI app (the page, nicknames,
posting messages, pusher-js's auth endpoint) and, through ``rt.asgi(api)``, the Pusher
sockets the page's pusher-js connects to. What it shows:

- nicknames in a signed cookie, and rooms that are presence channels, authorized here;
- messages posted over HTTP, checked here, then published with ``rt.atrigger``;
- a typing indicator sent by the pages themselves (client events), filtered by a
  ``@rt.before`` hook;
- a server clock published every second by a periodic task tied to the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from tidings import ClientEvent, PublishError, Realtime
from tidings.integrations.fastapi import router

HERE = Path(__file__).resolve().parent
PUSHER_JS = HERE.parent / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"

APP_KEY = "chat-key"
ROOMS = ("lobby", "python", "random")
NICKNAME = re.compile(r"[A-Za-z0-9_-]{1,20}")  # ASCII: it travels in a cookie and a user_id
MAX_MESSAGE = 500  # characters; far below the 10 KB Pusher allows for an event
TYPING_EVERY = 1.0  # seconds: at most one typing event per user and room gets through
COOKIE = "chat_nickname"
# Signs the nickname cookie. A fresh key at each start means everybody picks a nickname
# again after a restart, which is fine for a demo and never leaves a guessable default.
COOKIE_KEY = secrets.token_bytes(32)

log = logging.getLogger("chat")

rt = Realtime(
    app_id="chat",
    key=APP_KEY,
    secret=secrets.token_hex(16),  # nothing outside this process signs with it
    # Nothing here (a load balancer) needs time to stop sending us traffic before the
    # drain on Ctrl-C: close the sockets at once.
    shutdown_ready_delay=0,
)


# -- nicknames: who is who, for the HTTP endpoints and for pusher-js's auth requests ----------


def _signature(nickname: str) -> str:
    return hmac.new(COOKIE_KEY, nickname.encode(), hashlib.sha256).hexdigest()


def current_nickname(chat_nickname: Annotated[str | None, Cookie()] = None) -> str | None:
    """The nickname of the signed cookie, or None (no cookie, or one the page made up)."""
    if chat_nickname is None:
        return None
    nickname, _, signature = chat_nickname.rpartition(".")
    if NICKNAME.fullmatch(nickname) and hmac.compare_digest(signature, _signature(nickname)):
        return nickname
    return None


Nickname = Annotated[str | None, Depends(current_nickname)]


def refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status)


# -- rooms: each one a presence channel -------------------------------------------------------


# A presence channel (rather than a private one) because the room lists who is in it:
# Tidings keeps the members and tells every page when one joins or leaves, and the
# user_id signed here is also what the `before` hook below trusts.
@rt.presence("presence-room.{room}")
def member(nickname: str, room: str) -> dict[str, Any] | None:
    if room not in ROOMS:
        return None  # refused: pusher-js gets a 403 for this subscription
    # The same nickname in two windows is one member with two sockets.
    return {"user_id": nickname, "user_info": {"nickname": nickname}}


# Client events go from one page to the others without a request to this app: cheap, but
# the data is whatever the sending page chose. The hook runs before Tidings publishes one.
last_typed: dict[tuple[str, str], float] = {}


# `async def`: it runs on the event loop (a plain def would run in a thread), so
# last_typed needs no lock.
@rt.before("client-typing", channel="presence-room.{room}")
async def typing(event: ClientEvent, room: str) -> dict[str, str] | None:
    # event.user_id is the member the app signed at /pusher/auth: replacing the data with
    # it means a page cannot say that somebody else is typing.
    if event.user_id is None:
        return None
    now, key = time.monotonic(), (room, event.user_id)
    if key in last_typed and now - last_typed[key] < TYPING_EVERY:
        return None  # a burst: the others already know, so drop it
    last_typed[key] = now
    if len(last_typed) > 10_000:  # keyed by who connects: keep it bounded
        for stale, then in list(last_typed.items()):
            if now - then >= TYPING_EVERY:
                del last_typed[stale]
    return {"nickname": event.user_id}


# -- the server clock -------------------------------------------------------------------------


async def broadcast_clock() -> None:
    """Tornado's ``PeriodicCallback`` classic: publish the time on the second, forever."""
    while True:
        await asyncio.sleep(1 - time.time() % 1)  # sleep to the next whole second: no drift
        try:
            await rt.atrigger("clock", "tick", {"time": time.strftime("%H:%M:%S")})
        except PublishError:
            log.exception("the clock could not publish")  # try again next second


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # rt.asgi() starts Tidings before this runs and stops it after it ends, so the task
    # can publish for as long as it lives.
    clock = asyncio.create_task(broadcast_clock())
    yield
    clock.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await clock


api = FastAPI(lifespan=lifespan)
# POST /pusher/auth: pusher-js asks it before joining a room, with the page's cookie.
api.include_router(router(rt, user=Depends(current_nickname)))
api.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


@api.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(HERE / "static" / "index.html")


@api.get("/pusher.min.js", include_in_schema=False)
async def pusher_js() -> FileResponse:
    return FileResponse(PUSHER_JS, media_type="application/javascript")


@api.get("/api/session")
async def session(nickname: Nickname) -> dict[str, Any]:
    return {"nickname": nickname, "rooms": ROOMS, "key": APP_KEY}


class NicknameForm(BaseModel):
    nickname: str


@api.post("/api/nickname")
async def choose_nickname(form: NicknameForm, request: Request) -> JSONResponse:
    nickname = form.nickname.strip()
    if not NICKNAME.fullmatch(nickname):
        return refuse(422, "a nickname is 1 to 20 letters, digits, - or _")
    answer = JSONResponse({"nickname": nickname})
    # HttpOnly: page scripts cannot read it. SameSite=Lax: another site cannot post
    # messages or join rooms with it (browsers leave it off cross-site POSTs). Secure
    # under HTTPS, so that it never travels in clear.
    answer.set_cookie(
        COOKIE,
        f"{nickname}.{_signature(nickname)}",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return answer


class Message(BaseModel):
    text: str


@api.post("/api/rooms/{room}/messages")
async def post_message(room: str, message: Message, nickname: Nickname) -> JSONResponse:
    # Checked here, over HTTP, and not in the page: a page can be changed by whoever runs it.
    if nickname is None:
        return refuse(401, "choose a nickname first")
    if room not in ROOMS:
        return refuse(404, f"no room {room!r}")
    text = message.text.strip()
    if not text:
        return refuse(422, "the message is empty")
    if len(text) > MAX_MESSAGE:
        return refuse(
            422, f"the message is {len(text)} characters long, the limit is {MAX_MESSAGE}"
        )
    # No socket_id, so the sender gets the event too: every page, the sender's included,
    # shows a message when Tidings delivers it, in the same order for everybody.
    event = {"from": nickname, "text": text, "time": time.strftime("%H:%M:%S")}
    await rt.atrigger(f"presence-room.{room}", "message", event)
    return JSONResponse({"sent": True})


# Tidings takes its own paths (/app/... for the sockets, /pusher/... for the HTTP fallback,
# /apps/... for the REST API) and hands everything else, lifespan included, to `api`.
app = rt.asgi(api)
