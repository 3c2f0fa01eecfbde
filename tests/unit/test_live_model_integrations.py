"""The live parts of the Flask and FastAPI integrations: ``X-Socket-ID`` into
``current_socket_id`` for the request, and the signed ``POST /pusher/live-snapshot``
(the Django ones run in tests/integration/test_live_django.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tidings import Realtime
from tidings.integrations import fastapi as tidings_fastapi
from tidings.integrations import flask as tidings_flask
from tidings.live import current_socket_id

CHANNEL = "private-live.note.board.7"
ROWS = [{"id": 1, "text": "hello", "board": 7, "version": 3, "secret": "not declared"}]


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]
    board: Mapped[int]
    version: Mapped[int]


def realtime() -> Realtime:
    rt = Realtime.client("http://app-key:app-secret@127.0.0.1:9/apps/12345")

    @rt.live(Note, fields=["id", "text", "board", "version"], filters=["board"])
    class NoteLive:
        def authorize(self, user: object, board: str) -> bool:
            return user == "ann"

        def snapshot(self, board: str) -> list[dict[str, Any]]:
            if board == "0":
                raise RuntimeError("the database is down")
            return [row for row in ROWS if str(row["board"]) == board]

    return rt


def signed(channel: str, secret: str = "app-secret") -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"channel": channel, "socket_id": "1.2"}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Pusher-Key": "app-key", "X-Pusher-Signature": signature}
    return body, {**headers, "Content-Type": "application/json"}


EXPECTED = [
    (CHANNEL, "app-secret", 200, {"rows": [{k: v for k, v in ROWS[0].items() if k != "secret"}],
                                  "version": 3}),
    (CHANNEL, "wrong", 401, {"error": "invalid snapshot request signature"}),
    ("private-live.note.text.7", "app-secret", 404,
     {"error": "no live model publishes to private-live.note.text.7"}),
    ("private-live.note.board.0", "app-secret", 500,
     {"error": "the snapshot failed: RuntimeError"}),
]  # fmt: skip


def flask_app() -> Flask:
    rt = realtime()
    app = Flask(__name__)
    app.register_blueprint(tidings_flask.blueprint(rt, user=lambda: "ann"))

    @app.post("/notes")
    def create() -> dict[str, Any]:
        return {"socket_id": current_socket_id.get()}

    return app


def fastapi_app() -> FastAPI:
    rt = realtime()
    app = FastAPI()
    app.add_middleware(tidings_fastapi.LiveMiddleware)
    app.include_router(tidings_fastapi.router(rt, user=None))

    @app.post("/notes")
    async def create() -> dict[str, Any]:
        return {"socket_id": current_socket_id.get()}

    @app.post("/notes/sync")
    def create_sync() -> dict[str, Any]:
        return {"socket_id": current_socket_id.get()}

    return app


@pytest.mark.parametrize(("channel", "secret", "status", "answer"), EXPECTED)
def test_flask_live_snapshot(channel: str, secret: str, status: int, answer: Any) -> None:
    body, headers = signed(channel, secret)
    response = flask_app().test_client().post("/pusher/live-snapshot", data=body, headers=headers)
    assert (response.status_code, response.get_json()) == (status, answer)


def fastapi_client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=fastapi_app())
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(("channel", "secret", "status", "answer"), EXPECTED)
async def test_fastapi_live_snapshot(channel: str, secret: str, status: int, answer: Any) -> None:
    body, headers = signed(channel, secret)
    async with fastapi_client() as client:
        response = await client.post("/pusher/live-snapshot", content=body, headers=headers)
    assert (response.status_code, response.json()) == (status, answer)


@pytest.mark.parametrize(("header", "seen"), [("123.456", "123.456"), ("nonsense", None)])
def test_flask_reads_x_socket_id(header: str, seen: str | None) -> None:
    client = flask_app().test_client()
    assert client.post("/notes", headers={"X-Socket-ID": header}).get_json() == {"socket_id": seen}
    assert client.post("/notes").get_json() == {"socket_id": None}


@pytest.mark.parametrize(("header", "seen"), [("123.456", "123.456"), ("nonsense", None)])
@pytest.mark.parametrize("path", ["/notes", "/notes/sync"])
async def test_fastapi_reads_x_socket_id(path: str, header: str, seen: str | None) -> None:
    async with fastapi_client() as client:
        answer = (await client.post(path, headers={"X-Socket-ID": header})).json()
        assert answer == {"socket_id": seen}
        assert (await client.post(path)).json() == {"socket_id": None}
