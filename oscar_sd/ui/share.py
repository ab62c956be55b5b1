"""Share a run: a link that shows that run's images, without signing in, until it expires.

``Share`` on the page seals, in a token only this app can read or make
(``sealed.py``), where each image of the run can be read without the owner's
keys (``oscar_sd.history.share_locations``: presigned URLs of the owner's
bucket on a cluster, files of the data folder locally) and the link's expiry
(``OSCAR_SD_SHARE_DAYS``, 7 by default, at most 7 on a cluster: the longest
a presigned S3 URL lives). The routes:

- ``GET share/<token>``: a small page with the run's images and prompt;
- ``GET share/<token>/<name>.png``: one image, read through the app (the
  viewer needs no access to the cluster's storage).

They need no login and show that run only: the token names nothing else.
Past its expiry, or altered, a link answers a page that says so.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..history import History, read_shared, share_locations
from .sealed import Sealer, TokenExpired, TokenInvalid

#: The path below the app's root.
SHARE = "share"
DAY = 24 * 3600.0

EXPIRED = "This share link has expired{when}. Ask the person who shared it for a new one."
INVALID = "This share link is not valid. Check that it was copied whole."


class Shares:
    """Makes share links and serves them."""

    def __init__(self, sealer: Sealer, data_folder: Path, lifetime: float = 7 * DAY) -> None:
        self.sealer = sealer
        self.data_folder = data_folder
        self.lifetime = lifetime

    async def token_for(self, store: History, run_id: str) -> str | None:
        """A share token for a run of ``store``; None when the run is gone."""
        record = await store.record(run_id)
        if record is None:
            return None
        locations = await share_locations(store, record, self.lifetime)
        payload = {"run": record.run_id, "prompt": record.prompt, "seed": record.seed,
                   "images": locations}
        return self.sealer.seal(payload, self.lifetime)

    def routes(self) -> list[Route]:
        return [
            Route(f"/{SHARE}/{{token}}", self.page, methods=["GET"]),
            Route(f"/{SHARE}/{{token}}/{{name}}", self.image, methods=["GET"]),
        ]

    def _open(self, token: str) -> dict | Response:
        try:
            return self.sealer.open(token)
        except TokenExpired as expired:
            when = datetime.datetime.fromtimestamp(expired.expired_at, datetime.UTC)
            return _said(EXPIRED.format(when=f" (on {when:%Y-%m-%d %H:%M} UTC)"), 410)
        except TokenInvalid:
            return _said(INVALID, 404)

    async def page(self, request: Request) -> Response:
        token = request.path_params["token"]
        opened = self._open(token)
        if isinstance(opened, Response):
            return opened
        images = "".join(
            f'<a href="{html.escape(token)}/{html.escape(name)}">'
            f'<img src="{html.escape(token)}/{html.escape(name)}" alt="image {n}"></a>'
            for n, name in enumerate(opened.get("images") or {}, start=1)
        )
        prompt = html.escape(str(opened.get("prompt") or ""))
        seed = html.escape(str(opened.get("seed")))
        body = (
            f"<h1>{prompt}</h1><p>seed {seed} · made with oscar-sd</p>"
            f'<div class="images">{images}</div>'
        )
        return HTMLResponse(_page(prompt or "Shared images", body),
                            headers={"Cache-Control": "private, max-age=300"})

    async def image(self, request: Request) -> Response:
        opened = self._open(request.path_params["token"])
        if isinstance(opened, Response):
            return opened
        location = (opened.get("images") or {}).get(request.path_params["name"])
        if not isinstance(location, str):
            return _said("That image is not part of this shared run.", 404)
        try:
            data = await read_shared(location, self.data_folder)
        except (KeyError, OSError):
            return _said("This image is no longer there: its run was deleted.", 404)
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})


def _said(message: str, status: int) -> HTMLResponse:
    body = f"<p class=said>{html.escape(message)}</p>"
    return HTMLResponse(_page("oscar-sd", body), status_code=status,
                        headers={"Cache-Control": "no-store"})


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}"
        "h1{font-size:1.2rem}.images{display:grid;gap:.5rem;"
        "grid-template-columns:repeat(auto-fill,minmax(14rem,1fr))}"
        ".images img{width:100%;height:auto}.said{font-size:1.1rem}"
        f"</style></head><body>{body}</body></html>"
    )
