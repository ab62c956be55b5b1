"""From sign-in to a history of N runs shown: the identity's history read from its storage.

Against the cluster double (in this process), with N runs of six 64x64 PNGs
already in the basic-auth account's history bucket (``oscar-sd-history``):

- ``library: records``: ``History.runs()`` on a new History (a new app process
  would do the same): one listing and N record reads;
- ``library: records + thumbnails``: the same and the first image of each run,
  which is what the page's strip needs;
- ``page: Log in click -> N thumbnails shown`` (Chromium): from the click on
  "Log in" to the strip holding all N thumbnails, the first one drawn (the
  gallery loads off-screen images lazily; all N files are in the app's cache
  by then).

Each library row runs with the history's own worker threads (8, the default)
and, as the baseline, with one thread (every storage call in a row); the
ratio is baseline / default. Times are the median of ``--repeat`` runs.

Run: .venv/bin/python bench/history.py [--runs 10 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, GenerationResult, OscarSD
from oscar_sd.history import History, MinioObjects, history_bucket
from oscar_sd.history._history import _READ_RECORDS
from tests.double import ClusterDouble, services

ADMIN = ("oscar", "oscar-pw")
SERVICE = "stable-diffusion"


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), ((seed * 37) % 256, (seed * 91) % 256, 128)).save(buffer, "PNG")
    return buffer.getvalue()


async def fill(sd: OscarSD, runs: int, folder: Path) -> None:
    history = await sd.history()
    for number in range(runs):
        run = folder / f"run-{number}"
        run.mkdir(parents=True)
        images = []
        for index in range(1, 7):
            path = run / f"{index}.png"
            path.write_bytes(png(number * 6 + index))
            images.append(path)
        request = GenerationRequest(prompt=f"history run {number}", seed=number)
        await history.add(GenerationResult(images=images, request=request, job_id=str(number),
                                           directory=run))


async def library_times(sd: OscarSD, threads: int, cache: Path) -> tuple[float, float]:
    objects = MinioObjects(sd._storage, history_bucket(None))
    # Cold, as the first sign-in of a fresh app process: no record read before it
    # (later logins of the same identity in a process find them read already).
    _READ_RECORDS.clear()
    started = time.perf_counter()
    records = await History(objects, threads=threads).runs()
    listed = time.perf_counter() - started

    _READ_RECORDS.clear()
    history = History(objects, threads=threads)
    started = time.perf_counter()
    records = await history.runs()
    async with anyio.create_task_group() as tasks:
        for record in records:
            tasks.start_soon(history.fetch, record, cache / f"{threads}-{record.run_id}",
                             record.images[:1])
    with_thumbnails = time.perf_counter() - started
    return listed, with_thumbnails


async def measure(
    double: ClusterDouble, runs: int, scratch: Path, repeat: int
) -> list[tuple[float, float, float, float]]:
    sd = await OscarSD.connect(double.oscar_endpoint, service=SERVICE,
                               user=ADMIN[0], password=ADMIN[1])
    await fill(sd, runs, scratch / "fill")
    out = []
    for attempt in range(repeat):
        cache = scratch / f"cache-{attempt}"
        many = await library_times(sd, 8, cache)
        one = await library_times(sd, 1, cache)
        out.append((*many, *one))
    await sd.aclose()
    return out


def page_time(url: str, runs: int) -> float:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.get_by_label("Username").fill(ADMIN[0])
            page.get_by_label("Password").fill(ADMIN[1])
            started = time.perf_counter()
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#history img")).to_have_count(runs, timeout=120_000)
            # The gallery loads off-screen thumbnails lazily: the first one loaded
            # stands for "shown"; every thumbnail's file is in the cache by then.
            page.wait_for_function(
                "(() => { const i = document.querySelector('#history img');"
                " return i && i.complete && i.naturalWidth > 0; })()", timeout=120_000)
            return time.perf_counter() - started
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-page", action="store_true", help="skip the browser row")
    options = parser.parse_args()

    rows: list[tuple[str, int, float, float | None]] = []
    for runs in options.runs:
        with ClusterDouble(admin=ADMIN) as double, tempfile.TemporaryDirectory() as scratch:
            double.add_service(SERVICE, input_path=f"{SERVICE}/in",
                               output_path=f"{SERVICE}/out", handler=services.fake_generator)

            measured = anyio.run(measure, double, runs, Path(scratch), options.repeat)
            median = [statistics.median(m[i] for m in measured) for i in range(4)]
            rows.append(("library: records", runs, median[0], median[2]))
            rows.append(("library: records + thumbnails", runs, median[1], median[3]))
            if not options.no_page:
                from oscar_sd.ui import build_app
                from tests.ui_fixtures import cluster_settings, free_port

                app = build_app(cluster_settings(double.oscar_endpoint))
                url = app.launch(server_name="127.0.0.1", server_port=free_port(),
                                 prevent_thread_lock=True)
                try:
                    times = [page_time(url, runs) for _ in range(options.repeat)]
                finally:
                    app.close()
                rows.append(("page: Log in click -> thumbnails shown", runs,
                             statistics.median(times), None))

    print("| what | runs | seconds (8 threads) | baseline (1 thread) | ratio |")
    print("|---|---|---|---|---|")
    for what, runs, seconds, baseline in rows:
        base = f"{baseline:.3f}" if baseline is not None else "-"
        ratio = f"{baseline / seconds:.2f}x" if baseline is not None else "-"
        print(f"| {what} | {runs} | {seconds:.3f} | {base} | {ratio} |")


if __name__ == "__main__":
    main()
