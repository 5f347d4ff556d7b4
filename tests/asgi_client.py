"""A synchronous httpx client for an ASGI app, with the app's lifespan entered.

The lifespan and the requests run on one event loop in a background thread (an anyio blocking
portal); tests call plain methods. It plays the part of Starlette's TestClient with httpx itself.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp


class ASGIClient:
    def __init__(self, app: ASGIApp, startup_timeout_s: float = 120) -> None:
        self._app = app
        self._startup_timeout_s = startup_timeout_s
        self._portal_context: AbstractContextManager[BlockingPortal] | None = None

    def __enter__(self) -> ASGIClient:
        self._portal_context = start_blocking_portal()
        self.portal = self._portal_context.__enter__()
        try:
            self.manager = self.portal.call(self._enter_lifespan)
        except BaseException:
            self._portal_context.__exit__(None, None, None)
            raise
        transport = httpx.ASGITransport(app=self.manager.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        return self

    async def _enter_lifespan(self) -> LifespanManager:
        # The manager looks up the running event loop when it is made, so it is made on it.
        manager = LifespanManager(self._app, startup_timeout=self._startup_timeout_s)
        await manager.__aenter__()
        return manager

    def __exit__(self, *exc_info: object) -> None:
        assert self._portal_context is not None
        try:
            self.portal.call(self.client.aclose)
            self.portal.call(self.manager.__aexit__, None, None, None)
        finally:
            self._portal_context.__exit__(None, None, None)

    @property
    def state(self) -> dict[str, Any]:
        """What the lifespan yielded (the app's services)."""
        return self.manager._state

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)
