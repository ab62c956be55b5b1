"""Click-to-six-images time of the web app, with browser-like clients and with gradio_client.

The app runs on loopback against the cluster double, whose service answers
at once (the fake generator, no job delay). The double, the app and the
clients each run in a process of their own, as on three machines (here they
share two cores). Measured is the app: Gradio's queue, the OSCAR client,
MinIO upload, the notification, the download and unpacking, and the six PNGs
fetched by the client. Each user is a login of its own (all with the
cluster's one basic-auth account, as OSCAR has one, so each login its own
session); all users click at the same time, round after round.

Two kinds of client click, one after the other, each against a fresh app:

- ``browser``: what a browser tab sends (Gradio 6's protocol: ``queue/join``,
  the ``queue/data`` event stream, then the six images at once over at most
  six kept-alive connections, and the page's follow-up event that shows the
  run in the history), all users in one asyncio process (aiohttp);
- ``browser-img2img``: the same tabs, image to image: each tab uploads a
  512x512 start image once (as a person does), then every click sends it with
  a strength; the app reads it, carries it base64 inside the input object
  (about 0.5 MB here), and the double's service reads it back;
- ``gradio_client``: ``Client.predict`` in a thread per user. It opens a new
  connection for every request and a thread per event stream, and its CPU
  per click is about the app's own: on two shared cores that is time taken
  from the app, so it is the baseline, not the measure. It runs no follow-up
  event, so the app does less per click for it.

The app runs as ``manifests/deploy_gradio.yaml`` ships it (its
``OSCAR_SD_CONCURRENCY``: that many runs at once, the rest wait in Gradio's
queue), unless ``--concurrency`` says otherwise.

Then, as the baseline, stop 13's app (``b0ae285``) runs its own bench with
the same users, rounds and concurrency, from a git worktree (``ui_baseline.py``):
the speed the issue holds the page to, measured on the same machine in the same
run, with the ratio of the two p50s.

    .venv/bin/python bench/ui.py [--rounds 10] [--users 1 50]
        [--clients browser browser-img2img gradio_client] [--baseline b0ae285|none]

Target: p50 at 50 users at or under the baseline's (0.927 s on stop 13's day).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ui_baseline import BASELINE, BaselineRow, measure_baseline
from tests.double import ClusterDouble, services
from tests.ui_fixtures import cluster_settings, running_app

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "stable-diffusion"
ADMIN = ("oscar", "oscar-pw")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def shipped_concurrency() -> int:
    """``OSCAR_SD_CONCURRENCY`` of the app's Deployment in manifests/deploy_gradio.yaml."""
    for document in yaml.safe_load_all((ROOT / "manifests" / "deploy_gradio.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                for variable in container.get("env", []):
                    if variable["name"] == "OSCAR_SD_CONCURRENCY":
                        return int(variable["value"])
    raise LookupError("manifests/deploy_gradio.yaml sets no OSCAR_SD_CONCURRENCY")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def accounts_for(users: int) -> dict[str, tuple[str, str]]:
    """One login per user, each with the cluster's only basic-auth account."""
    return {f"user{index:02d}": ADMIN for index in range(users)}


def serve_cluster(ready: Connection, stop: Event) -> None:
    """In a process of its own, as a real cluster is: the double, until ``stop``."""
    with ClusterDouble(admin=ADMIN) as double:
        double.add_service(
            SERVICE,
            input_path=f"{SERVICE}/in",
            output_path=f"{SERVICE}/out",
            handler=services.fake_generator,
        )
        ready.send(double.oscar_endpoint)
        stop.wait()


def serve_app(endpoint: str, concurrency: int, ready: Connection, stop: Event) -> None:
    """In a process of its own: the web app, until ``stop``."""
    settings = cluster_settings(endpoint, concurrency=concurrency)
    with running_app(settings) as app:
        ready.send(app.url)
        stop.wait()


def start(target: Callable[..., None], *args: object) -> tuple[Any, BaseProcess, Event]:
    """Run ``target(*args, ready, stop)`` in a fresh process; returns what it sends when ready."""
    processes = multiprocessing.get_context("spawn")
    ready, ready_in_child = processes.Pipe(duplex=False)
    stop = processes.Event()
    process = processes.Process(target=target, args=(*args, ready_in_child, stop), daemon=True)
    process.start()
    return ready.recv(), process, stop


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process: this one, or a child by its pid (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BrowserTab:
    """A logged-in browser tab, clicking Generate as the page's JavaScript does.

    A click joins the queue with the form's values, reads the event stream
    until the run completes, fetches the six images at once (a browser keeps
    up to six connections per host) and, as the page does after a success,
    runs the follow-up event that shows the run in the history strip.
    """

    def __init__(
        self, url: str, account: tuple[str, str], start_image: bytes | None = None
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.account = account
        #: Image to image: the PNG this tab uploads once and starts every click from.
        self.start_image = start_image
        self.tab = secrets.token_hex(6)  # Gradio's session_hash: one per tab
        self.generate_id = self.follow_up_id = -1
        self.form: list[object] = []
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "open() first"
        return self._http

    async def open(self) -> None:
        """Log in, then read the page: the Generate event's inputs and their first values."""
        self._http = aiohttp.ClientSession(
            base_url=self.url,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # the login cookie of 127.0.0.1
            connector=aiohttp.TCPConnector(limit=6),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        user, password = self.account
        async with self.http.post("login", data={"username": user, "password": password}) as answer:
            answer.raise_for_status()
        async with self.http.get("config") as answer:
            config = await answer.json()
        values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
        generate = next(d for d in config["dependencies"] if d.get("api_name") == "generate")
        follow_up = next(d for d in config["dependencies"]
                         if d.get("trigger_after") == generate["id"]
                         and d.get("trigger_only_on_success"))
        self.generate_id, self.follow_up_id = generate["id"], follow_up["id"]
        self.form = [values.get(component) for component in generate["inputs"]]
        if self.start_image is not None:
            kinds = {c["id"]: c.get("type") for c in config["components"]}
            uploaded = await self._upload(self.start_image)
            for index, component in enumerate(generate["inputs"]):
                if kinds.get(component) == "image":
                    self.form[index] = {"path": uploaded, "orig_name": "start.png",
                                        "meta": {"_type": "gradio.FileData"}}

    async def _upload(self, png: bytes) -> str:
        """The page's upload of a file to Gradio: its path on the server."""
        form = aiohttp.FormData()
        form.add_field("files", png, filename="start.png", content_type="image/png")
        async with self.http.post("gradio_api/upload", data=form) as answer:
            answer.raise_for_status()
            return str((await answer.json())[0])

    async def click(self, prompt: str) -> tuple[list[bytes], Awaitable[object]]:
        """Generate with ``prompt`` and the form's other values.

        Returns the six PNGs, as bytes, once they are in hand, and the page's
        follow-up event, which runs on meanwhile.
        """
        event = await self._join(self.generate_id, [prompt, *self.form[1:]])
        output = await self._completion(event)
        urls = [item["image"]["url"] for item in output["data"][0]]
        follow_up = asyncio.ensure_future(self._follow_up())
        images = await asyncio.gather(*(self._image(url) for url in urls))
        return images, follow_up

    async def _follow_up(self) -> object:
        # The run shown lives in the session's state on the server: the page sends null.
        return await self._completion(await self._join(self.follow_up_id, [None]))

    async def _join(self, event: int, data: list[object]) -> str:
        body = {"data": data, "fn_index": event, "trigger_id": None,
                "session_hash": self.tab, "event_data": None}
        for attempt in (1, 2):
            try:
                async with self.http.post("gradio_api/queue/join", json=body) as answer:
                    answer.raise_for_status()
                    return (await answer.json())["event_id"]
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # The server closed a kept-alive connection as this request went out
                # (its keep-alive timeout, on a loaded machine): sent again, as browsers do.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _completion(self, event: str) -> dict[str, Any]:
        """The output of ``event``, read from the tab's event stream (opened again when
        Gradio closes it between events, as the page's client does)."""
        while True:
            async with await self._open_stream() as stream:
                async for line in stream.content:
                    if not line.startswith(b"data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("event_id") != event or message["msg"] != "process_completed":
                        continue
                    if not message.get("success"):
                        raise RuntimeError(f"the event failed: {message.get('output')}")
                    return message["output"]

    async def _open_stream(self) -> aiohttp.ClientResponse:
        """The tab's event stream, asked again when the server closed the kept-alive
        connection as the request went out (nothing was answered on it), as browsers do."""
        for attempt in (1, 2):
            try:
                return await self.http.get("gradio_api/queue/data",
                                           params={"session_hash": self.tab})
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _image(self, url: str) -> bytes:
        async with self.http.get(url) as answer:
            answer.raise_for_status()
            image = await answer.read()
        if not image.startswith(PNG_SIGNATURE):
            raise RuntimeError(f"not a PNG: {url}")
        return image


def click_in_browsers(url: str, users: int, rounds: int, begin: Callable[[], None],
                      start_image: bytes | None = None) -> list[float]:
    """Every user's clicks, all users clicking together each round; seconds per click.

    ``begin`` is called once everyone is logged in and warmed up, as the timed rounds start.
    With ``start_image`` every click is image to image, from that PNG.
    """

    async def run() -> list[float]:
        tabs = [BrowserTab(url, account, start_image) for account in accounts_for(users).values()]
        for tab in tabs:
            await tab.open()
        for _, follow_up in await asyncio.gather(*(tab.click("warm-up") for tab in tabs)):
            await follow_up  # first connections made, the hub's stream open
        begin()
        timings: list[float] = []
        together = asyncio.Barrier(users)

        async def one_user(index: int, tab: BrowserTab) -> None:
            for round_ in range(rounds):
                await together.wait()
                started = time.perf_counter()
                images, follow_up = await tab.click(f"user {index} round {round_}")
                timings.append(time.perf_counter() - started)
                assert len(images) == 6, len(images)
                await follow_up  # the next click comes after the page has settled

        try:
            await asyncio.gather(*(one_user(index, tab) for index, tab in enumerate(tabs)))
        finally:
            for tab in tabs:
                await tab.http.close()
        return timings

    return asyncio.run(run())


def click_in_gradio_clients(
    url: str, users: int, rounds: int, begin: Callable[[], None], downloads: Path
) -> list[float]:
    """The same clicks through gradio_client, a thread per user."""
    # gradio_client opens a new HTTP client for every file it downloads; left
    # alone, each one reads the system's CA bundle anew. One TLS context, as a
    # browser has, gives it its best chance.
    tls = ssl.create_default_context()
    apis = [
        Client(url, auth=account, verbose=False, download_files=str(downloads / name),
               ssl_verify=tls)  # type: ignore[arg-type]
        for name, account in accounts_for(users).items()
    ]
    for api in apis:  # warm up: first connection, hub stream open
        api.predict("warm-up", api_name="/generate")
    timings: list[float] = []
    lock = threading.Lock()
    together = threading.Barrier(users)

    def one_user(index: int) -> None:
        for round_ in range(rounds):
            together.wait()
            started = time.perf_counter()
            images = apis[index].predict(f"user {index} round {round_}", api_name="/generate")[0]
            took = time.perf_counter() - started
            assert len(images) == 6, images
            with lock:
                timings.append(took)

    threads = [threading.Thread(target=one_user, args=(i,)) for i in range(users)]
    begin()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def start_png() -> bytes:
    """A 512x512 start image with some texture, as PNG (about 0.4 MB, like a photo's PNG)."""
    import io

    from PIL import Image, ImageFilter

    noise = Image.effect_noise((512, 512), 48).filter(ImageFilter.GaussianBlur(1))
    picture = Image.merge("RGB", (noise, Image.linear_gradient("L").resize((512, 512)),
                                  noise.rotate(90)))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Run:
    """One measured run: every click's seconds, and the CPU each process spent on them."""

    client: str
    users: int
    timings: list[float]
    cpu: dict[str, float]  # seconds, per process, while the timed rounds ran


def measure(client: str, users: int, rounds: int, concurrency: int, downloads: Path) -> Run:
    """Seconds from click to six images in hand, for every click of every user."""
    endpoint, cluster, stop_cluster = start(serve_cluster)
    url, app, stop_app = start(serve_app, endpoint, concurrency)
    processes = {"app": app.pid, "cluster double": cluster.pid, "clients": None}
    cpu_before: dict[str, float] = {}

    def begin() -> None:
        cpu_before.update({name: cpu_seconds(pid) for name, pid in processes.items()})

    try:
        if client == "browser":
            timings = click_in_browsers(url, users, rounds, begin)
        elif client == "browser-img2img":
            timings = click_in_browsers(url, users, rounds, begin, start_png())
        else:
            timings = click_in_gradio_clients(url, users, rounds, begin, downloads)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
        return Run(client, users, timings, cpu)
    finally:
        for stop, process in ((stop_app, app), (stop_cluster, cluster)):
            stop.set()
            process.join(timeout=30)


def report(runs: list[Run], concurrency: int, baseline: list[BaselineRow],
           commit: str) -> None:
    print()
    print(f"click-to-six-images (cluster double, service answers at once; app concurrency "
          f"{concurrency}; {os.cpu_count()} cores shared by app, double and clients)")
    print(f"{'client':<16} {'users':>5} {'clicks':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"
          f"  {'CPU ms per click: app':>21} {'double':>7} {'clients':>8}")
    for run in runs:
        timings = run.timings
        app, double, clients = (1000 * run.cpu[name] / len(timings)
                                for name in ("app", "cluster double", "clients"))
        print(f"{run.client:<16} {run.users:>5} {len(timings):>6}"
              f" {statistics.median(timings):>7.3f} {percentile(timings, 0.95):>7.3f}"
              f" {max(timings):>7.3f}"
              f"  {app:>21.1f} {double:>7.1f} {clients:>8.1f}")
    by_kind = {(run.client, run.users): statistics.median(run.timings) for run in runs}
    for users in sorted({run.users for run in runs}):
        if ("browser", users) in by_kind and ("gradio_client", users) in by_kind:
            ratio = by_kind[("gradio_client", users)] / by_kind[("browser", users)]
            print(f"{users} users: p50 through gradio_client is {ratio:.2f}x the browser's")
        if ("browser", users) in by_kind and ("browser-img2img", users) in by_kind:
            ratio = by_kind[("browser-img2img", users)] / by_kind[("browser", users)]
            print(f"{users} users: p50 of image to image is {ratio:.2f}x text to image's")
    for row in baseline:
        app, double, clients = row.cpu_ms
        print(f"{'browser @' + commit:<16} {row.users:>5} {row.clicks:>6} {row.p50:>7.3f}"
              f" {row.p95:>7.3f} {row.slowest:>7.3f}  {app:>21.1f} {double:>7.1f} {clients:>8.1f}"
              "   <- baseline: its own bench, same machine, this run")
        if ("browser", row.users) in by_kind:
            ratio = by_kind[("browser", row.users)] / row.p50
            print(f"{row.users} users: p50 of this app is {ratio:.2f}x the baseline's "
                  f"({commit}, stop 13)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="clicks per user (default 10)")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--clients", nargs="+",
                        default=["browser", "browser-img2img", "gradio_client"],
                        choices=["browser", "browser-img2img", "gradio_client"])
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the app's concurrency (default: manifests/deploy_gradio.yaml's)")
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"the commit whose own bench runs after, as the baseline (default "
                             f"{BASELINE}, stop 13's app); 'none' to skip")
    args = parser.parse_args()
    concurrency = args.concurrency or shipped_concurrency()

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="oscar-sd-bench-") as downloads:
        for client in args.clients:
            for users in args.users:
                place = Path(downloads) / f"{client}-{users}"
                runs.append(measure(client, users, args.rounds, concurrency, place))
    baseline = [] if args.baseline == "none" else measure_baseline(
        args.baseline, args.users, args.rounds, concurrency)
    report(runs, concurrency, baseline, args.baseline)


if __name__ == "__main__":
    main()
