"""The server entry: `streamlit run serve.py`. It runs the app (app.py) with two additions Streamlit's
plain `streamlit run app.py` cannot make: the route that serves local storage files only through signed,
expiring links (core/file_links.py), and `X-Content-Type-Options: nosniff` on every HTTP response, so a
browser never runs an uploaded file as something other than its declared type.
"""

from __future__ import annotations

import mimetypes

import streamlit as st
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from streamlit import config
from streamlit.runtime.pages_manager import PagesManager

from core import file_links


async def storage_file(request: Request) -> Response:
    """A storage file for a link the app signed; 403 for any other link, 404 for a missing file."""
    from core.errors import InvalidInput
    from core.storage import get_storage

    key = request.path_params["key"]
    refused = file_links.check(key, request.query_params.get("exp"), request.query_params.get("sig"))
    if refused:
        return PlainTextResponse(refused, status_code=403)
    try:
        path = get_storage().local_path(key)
    except InvalidInput:  # a key climbing out of the storage root ('..', absolute)
        return PlainTextResponse("not found", status_code=404)
    if path is None or not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    # Stored files are immutable under their key (content-addressed), so the link may be cached until it expires.
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                        headers={"Cache-Control": "private, max-age=3600"})


class NoSniff:
    """ASGI middleware: `X-Content-Type-Options: nosniff` on every HTTP response (files included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                message = {**message, "headers": [*headers, (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def file_route_path() -> str:
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return (f"/{base}" if base else "") + "/files/{key:path}"


# Streamlit decides once per process, on the first session, whether the app is an old-style multipage
# app (a pages/ folder next to the main script). In that mode a fresh server whose first request is a
# deep link (`/datasets?...`) runs pages/datasets.py alone, skipping app.py's login and schema checks,
# until some run reaches st.navigation. The flag is class state that st.navigation itself sets to False;
# setting it here, before any session, means that mode never starts.
PagesManager.uses_pages_directory = False
file_links.route_mounted = True
app = st.App("app.py", routes=[Route(file_route_path(), storage_file, methods=["GET", "HEAD"])],
             middleware=[Middleware(NoSniff)])
