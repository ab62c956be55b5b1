"""The web page (Gradio). The only part of oscar_sd that imports Gradio.

``oscar-sd serve`` (``make run``) calls :func:`serve`; programs and tests use
:func:`build_app`:

>>> from oscar_sd import Settings
>>> from oscar_sd.ui import build_app
>>> app = build_app(Settings())                       # doctest: +SKIP
>>> url = app.launch(server_name="127.0.0.1", server_port=7000, prevent_thread_lock=True)
>>> app.close()                                       # doctest: +SKIP

The generate event is an API too (``api_name="generate"``):

>>> from gradio_client import Client
>>> client = Client("http://127.0.0.1:7000/", auth=("alice", "..."))  # doctest: +SKIP
>>> images, seed, status = client.predict("a red fox", api_name="/generate")  # doctest: +SKIP
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
from functools import partial
from types import FrameType

from .._settings import Settings
from .app import IDLE_TIMEOUT, WebApp

__all__ = ["IDLE_TIMEOUT", "WebApp", "build_app", "serve"]


def build_app(settings: Settings | None = None, *, idle_timeout: float = IDLE_TIMEOUT) -> WebApp:
    """The web app for ``settings`` (default: from the environment), not yet serving.

    Each login opens its own :class:`~oscar_sd.OscarSD` when ``oscar_endpoint``
    is set, else the app runs the local backend.
    """
    return WebApp(settings or Settings(), idle_timeout=idle_timeout)


def serve(settings: Settings | None = None) -> None:
    """Serve the page on ``settings.host:settings.port`` until interrupted."""
    settings = settings or Settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if settings.results_dir:
        # The results live in Gradio's temp folder (see oscar_sd.ui.http).
        os.environ.setdefault("GRADIO_TEMP_DIR", settings.results_dir)
    app = build_app(settings)
    # Kubernetes stops a pod with SIGTERM: the runs in flight finish first (drain.py),
    # then the app ends like Ctrl-C. (Only the main thread may set handlers.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, partial(_drain_then_stop, app, settings.drain_seconds))
    app.launch()
    if app.drain.draining:
        # Gradio's wait catches the Ctrl-C the drain sends, unless it lands just before
        # the wait begins: the process ends as interrupted either way, not by luck.
        raise KeyboardInterrupt


def _drain_then_stop(app: WebApp, grace: float, signum: int, frame: FrameType | None) -> None:
    if app.drain.draining:  # a second SIGTERM: stop now
        raise KeyboardInterrupt
    app.drain.begin()
    logging.getLogger("oscar_sd.ui").info(
        "SIGTERM: finishing %d run(s) in flight (at most %g s)", app.drain.running, grace
    )

    def stop_when_drained() -> None:
        app.drain.wait(grace)
        _thread.interrupt_main()  # as Ctrl-C: Gradio closes, sessions close

    threading.Thread(target=stop_when_drained, name="drain", daemon=True).start()
