"""An APIRoute for the hot paths: documented like any FastAPI route, run like a Starlette one."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class DirectRoute(APIRoute):
    """The endpoint takes the Request and returns a Response itself.

    FastAPI then skips dependency solving and response validation on every request (a
    noticeable share of a small upload's CPU time in py-spy profiles), while the OpenAPI schema
    still comes from the decorator's `response_model`, `responses` and `openapi_extra`. The
    endpoint builds its response from the response model itself, so the contract still holds.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
