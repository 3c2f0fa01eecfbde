"""A FastAPI app with Tidings embedded (``rt.asgi(api)``), served by uvicorn in
tests/e2e/test_frameworks.py.

The bearer token is the session: ``token-alice`` is alice. Alice may see order 42 and no
other; ``POST /orders/{id}/ship`` publishes ``shipped`` on ``private-orders.{id}`` and
``public-orders``.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Header

from tidings import Realtime
from tidings.integrations.fastapi import router

rt = Realtime(app_id="12345", key="app-key", secret="app-secret")
TOKENS = {"token-alice": "alice", "token-bob": "bob"}


def current_user(authorization: str = Header("")) -> str | None:
    return TOKENS.get(authorization.removeprefix("Bearer "))


@rt.authorize("private-orders.{order_id}")
def can_see_order(user: str, order_id: str) -> bool:
    return user == "alice" and order_id == "42"


api = FastAPI()
api.include_router(router(rt, user=Depends(current_user)))


@api.post("/orders/{order_id}/ship")
async def ship(order_id: str) -> dict[str, str]:
    data = {"id": order_id}
    await rt.atrigger([f"private-orders.{order_id}", "public-orders"], "shipped", data)
    return data


app = rt.asgi(api)
