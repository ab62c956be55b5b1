"""The web app through its API (gradio_client) and plain HTTP, against the cluster double.

Everything goes through the real OscarSD client and the double's OSCAR,
MinIO and jobs; only the browser is left out (tests/test_browser.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble, services
from tests.ui_fixtures import (
    browser_session,
    client,
    cluster_settings,
    png_metadata,
    running_app,
    session_file_urls,
    wait_until,
)

PROMPT = "a lighthouse at dusk"


@pytest.fixture
def web(cluster: ClusterDouble) -> Iterator[WebApp]:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        yield app


def generate(api: Client, prompt: str, **parameters: object) -> tuple[list[dict], int, str]:
    images, seed, status = api.predict(prompt, api_name="/generate", **parameters)
    return images, seed, status


def file_urls(app: WebApp, user: str, password: str, prompt: str) -> list[str]:
    """Generate as ``user`` without downloading; the server URLs of the images."""
    assert app.url is not None
    api = Client(app.url, auth=(user, password), verbose=False, download_files=False)
    images, _, _ = generate(api, prompt)
    return [image["image"]["url"] for image in images]


def assert_own_images(paths: list[Path], prompt: str, seed: int) -> None:
    """Each image's pixels are those the service makes for exactly this prompt and seed."""
    for index, path in enumerate(paths, 1):
        assert services.png_fingerprint(path.read_bytes()) == services.expected_png_fingerprint(
            prompt, seed, index
        ), f"image {index} is not the one made for {prompt!r}, seed {seed}"


# -- login ----------------------------------------------------------------------


def test_login_is_required(web: WebApp, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError):
        client(web, tmp_path)
    # Nor can the queue or a file be reached around the login.
    assert web.url is not None
    with httpx.Client(base_url=web.url) as anonymous:
        joined = anonymous.post(
            "/gradio_api/queue/join",
            json={"data": [PROMPT], "fn_index": 0, "session_hash": "x"},
        )
        assert joined.status_code == 401
        assert anonymous.get("/gradio_api/info").status_code == 401


def test_wrong_password_is_refused(web: WebApp, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError):
        client(web, tmp_path, auth=("oscar", "bob-pw"))
    with pytest.raises(AuthenticationError):  # the one admin account: no other name
        client(web, tmp_path, auth=("mallory", "oscar-pw"))
    assert len(web.sessions) == 0, "a refused login must open no session"


def test_a_refused_login_touches_no_other_session(web: WebApp, tmp_path: Path) -> None:
    urls = file_urls(web, *ADMIN, PROMPT)
    (session,) = web.sessions.of_account("oscar")
    with pytest.raises(AuthenticationError):
        client(web, tmp_path, auth=("oscar", "a-wrong-password"))
    assert web.sessions.of_account("oscar") == [session]
    assert all(Path(url.split("file=", 1)[1]).exists() for url in urls)


def test_health_probe_needs_no_login(web: WebApp) -> None:
    assert web.url is not None
    response = httpx.get(web.url + "healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# -- generating -------------------------------------------------------------------


def test_generate_returns_six_pngs_with_their_metadata(web: WebApp, tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    images, seed, status = generate(api, PROMPT, negative_prompt="fog", seed=1234,
                                    randomize_seed=False, steps=12, guidance_scale=5.5,
                                    size="768x512")

    assert seed == "1234"
    assert "6 images" in status
    paths = [Path(image["image"]) for image in images]
    assert len(paths) == 6
    assert [path.suffix for path in paths] == [".png"] * 6
    for index, path in enumerate(paths, 1):
        parameters, info = png_metadata(path)
        assert parameters.startswith(PROMPT + "\nNegative prompt: fog\n")
        assert "Seed: 1234" in parameters and "Size: 768x512" in parameters
        assert info["prompt"] == PROMPT and info["seed"] == 1234 and info["index"] == index
        assert info["steps"] == 12 and info["guidance_scale"] == 5.5
    assert_own_images(paths, PROMPT, 1234)


def test_random_seed_is_reported(web: WebApp, tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    images, seed, status = generate(api, PROMPT, num_images=2)
    assert seed.isdigit() and f"seed {seed}" in status
    assert len(images) == 2
    assert_own_images([Path(image["image"]) for image in images], PROMPT, int(seed))


def test_two_users_at_once_each_get_their_own_images(
    cluster: ClusterDouble, web: WebApp, tmp_path: Path
) -> None:
    # Two people, both with the cluster's one account: two logins, two sessions.
    users = {"alice": (ADMIN[1], "a red fox in snow"), "bob": (ADMIN[1], "a blue whale")}
    apis = {user: client(web, tmp_path / user, auth=ADMIN) for user in users}
    # Both requests are in flight at the same time: the jobs wait until both exist.
    cluster.hold_jobs()
    try:
        jobs = {
            user: apis[user].submit(prompt, api_name="/generate")
            for user, (_, prompt) in users.items()
        }
        wait_until(lambda: len(cluster.jobs(SERVICE)) == 2, what="both jobs on the cluster")
    finally:
        cluster.release_jobs()

    for user, (_, prompt) in users.items():
        images, seed, _ = jobs[user].result(timeout=30)
        paths = [Path(image["image"]) for image in images]
        assert len(paths) == 6
        assert_own_images(paths, prompt, int(seed))
        assert all(png_metadata(path)[1]["prompt"] == prompt for path in paths)


def test_one_user_cannot_fetch_another_users_files(web: WebApp, tmp_path: Path) -> None:
    # Two logins with the same (the only) account: still two people, kept apart.
    with (
        browser_session(web, *ADMIN) as alice,
        browser_session(web, *ADMIN) as bob,
    ):
        alice_urls = session_file_urls(alice, "alice's secret garden")
        session_file_urls(bob, "bob's boat")  # bob has files of his own
        for url in alice_urls:
            mine = alice.get(url)
            assert mine.status_code == 200
            assert mine.headers["content-type"] == "image/png"
            assert bob.get(url).status_code == 404
        # Nor by walking up to alice's folder, or guessing around it.
        folder = alice_urls[0].split("file=", 1)[1].rsplit("/", 2)[0]
        assert bob.get(f"/gradio_api/file={folder}").status_code in (403, 404)
        assert bob.get(f"/gradio_api/file={quote(folder)}/..%2F..%2Fx").status_code in (403, 404)
        # Nor through another spelling of the same folder (a symlink, like macOS's /tmp).
        alias = tmp_path / "alias"
        alias.symlink_to(web.sessions.root)
        path = alice_urls[0].split("file=", 1)[1]
        via_alias = path.replace(str(web.sessions.root), str(alias))
        assert via_alias != path
        assert bob.get(f"/gradio_api/file={via_alias}").status_code in (403, 404)
        assert alice.get(f"/gradio_api/file={via_alias}").status_code == 200
    with httpx.Client(base_url=web.url or "") as anonymous:
        assert anonymous.get(alice_urls[0]).status_code in (401, 403, 404)


def test_logout_closes_only_its_own_session_and_deletes_its_files(web: WebApp) -> None:
    with browser_session(web, *ADMIN) as alice, browser_session(web, *ADMIN) as bob:
        urls = session_file_urls(alice, PROMPT)
        bobs = session_file_urls(bob, "bob's")
        assert alice.get(urls[0]).status_code == 200
        session = web.sessions.owner_of(Path(urls[0].split("file=", 1)[1]))
        assert session is not None
        folder = session.directory

        assert alice.get("/logout").status_code == 302

        assert web.sessions.get(session.key) is None
        assert not folder.exists()
        assert alice.get(urls[0]).status_code in (401, 403, 404)
        # The other login with the same account goes on as before.
        assert len(web.sessions.of_account("oscar")) == 1
        assert bob.get(bobs[0]).status_code == 200


def test_the_page_says_which_backend_runs(web: WebApp) -> None:
    with browser_session(web, *ADMIN) as alice:
        config = alice.get("/config").json()
    assert "From Text to Image" in str(config)
    assert config["components"], "the page has components"


# -- errors, each as a sentence a person can act on ---------------------------------


def test_empty_prompt(web: WebApp, tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    with pytest.raises(AppError, match="Prompt is empty: type what the images should show"):
        generate(api, "   ")


def test_job_failed_shows_the_services_message(
    cluster: ClusterDouble, web: WebApp, tmp_path: Path
) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    cluster.fail_next_job("CUDA out of memory")
    with pytest.raises(AppError) as failure:
        generate(api, PROMPT)
    said = str(failure.value)
    assert "CUDA out of memory. It ran out of memory: ask for fewer or smaller images." in said
    # The next request works again.
    images, _, _ = generate(api, PROMPT, num_images=1)
    assert len(images) == 1


def test_timeout(cluster: ClusterDouble, tmp_path: Path) -> None:
    settings = cluster_settings(cluster.oscar_endpoint, timeout=1.5)
    with running_app(settings) as app:
        api = client(app, tmp_path, auth=ADMIN)
        cluster.hold_jobs()
        try:
            with pytest.raises(AppError, match=r"No result from service 'stable-diffusion' after"):
                generate(api, PROMPT)
        finally:
            cluster.release_jobs()


def test_service_missing(
    cluster: ClusterDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = cluster_settings(cluster.oscar_endpoint, service="no-such-service")
    with running_app(settings) as app:
        # The credentials are good, so the login works; the page says what is wrong at
        # once, in words a page user can act on; the operator's detail is in the log.
        with caplog.at_level(logging.WARNING, logger="oscar_sd.ui"):
            api = client(app, tmp_path, auth=ADMIN)
        assert "no service named 'no-such-service'" in caplog.text
        (session,) = app.sessions.of_account(ADMIN[0])
        top_line = app._describe_backend(SimpleNamespace(username=session.key))  # type: ignore[arg-type]
        assert "Signed in as" in top_line and "cannot make images yet" in top_line
        with pytest.raises(AppError) as failure:
            generate(api, PROMPT)
        said = str(failure.value)
        assert "the person who runs this app" in said
        assert "`" not in said and "oscar-sd deploy" not in said and "no-such-service" not in said
        # Once the service is deployed ...
        cluster.add_service("no-such-service", input_path="nss/in", output_path="nss/out",
                            handler=services.fake_generator)
        # The password was not kept, so the page asks to log in again; then it works.
        with pytest.raises(AppError, match="log out and log in again") as failure:
            generate(api, PROMPT)
        assert "`" not in str(failure.value)
        api = client(app, tmp_path, auth=ADMIN)
        images, _, _ = generate(api, PROMPT, num_images=1)
        assert len(images) == 1


def test_cluster_unreachable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    double = ClusterDouble(admin=ADMIN).start()
    stopped = False
    try:
        double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                           handler=services.fake_generator)
        # The outage grace is the app's setting: 2 s, not the minute a restart may take.
        settings = cluster_settings(double.oscar_endpoint, timeout=10, outage_timeout=2)
        with running_app(settings) as app:
            api = client(app, tmp_path, auth=ADMIN)
            double.stop()
            stopped = True
            with caplog.at_level(logging.WARNING, logger="oscar_sd.ui"):
                with pytest.raises(AppError) as failure:
                    generate(api, PROMPT)
    finally:
        if not stopped:
            double.stop()
    logged = [r.getMessage() for r in caplog.records if "ClusterUnreachableError" in r.getMessage()]
    assert logged, "the library raised ClusterUnreachableError"
    library_message = logged[0].split("ClusterUnreachableError: ", 1)[1]
    assert str(failure.value) == library_message


def test_login_while_the_cluster_is_unreachable_says_so(tmp_path: Path) -> None:
    with running_app(cluster_settings("http://127.0.0.1:9")) as app:  # nothing listens there
        assert app.url is not None
        with pytest.raises(ValueError, match="Could not login"):  # 503, not 401
            client(app, tmp_path, auth=ADMIN)
        page = httpx.post(app.url + "login", data={"username": "oscar", "password": "x"},
                          headers={"Accept": "text/html"})
        assert page.status_code == 503
        assert "The cluster cannot be reached right now" in page.text
        assert "Incorrect" not in page.text
        assert len(app.sessions) == 0


def test_session_expired(cluster: ClusterDouble, tmp_path: Path) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint), idle_timeout=0.5) as app:
        api = client(app, tmp_path, auth=ADMIN)
        wait_until(lambda: len(app.sessions) == 0, what="the idle session to expire")
        expired = r"Your session has expired\. Log out .* and log in again"
        with pytest.raises(AppError, match=expired):
            generate(api, PROMPT)


def test_many_users_wait_at_once_without_blocking_each_other(
    cluster: ClusterDouble, web: WebApp, tmp_path: Path
) -> None:
    """Gradio's default concurrency of one would keep all but one request queued."""
    apis = [client(web, tmp_path / f"login{i}", auth=ADMIN) for i in range(6)]
    cluster.hold_jobs()
    try:
        jobs = [api.submit(f"{PROMPT} {i}", api_name="/generate") for i, api in enumerate(apis)]
        wait_until(lambda: len(cluster.jobs(SERVICE)) == len(apis), what="all jobs started")
    finally:
        cluster.release_jobs()
    results = [job.result(timeout=30) for job in jobs]
    assert all(len(images) == 6 for images, _, _ in results)


def test_cancel_stops_the_wait_and_cleans_up(cluster: ClusterDouble, web: WebApp,
                                             tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    cluster.hold_jobs()
    try:
        job = api.submit(PROMPT, api_name="/generate")
        wait_until(lambda: len(cluster.jobs(SERVICE)) == 1, what="the job on the cluster")
        job.cancel()
        input_keys = lambda: cluster.list_keys(SERVICE, "in/")  # noqa: E731
        wait_until(lambda: not input_keys(), what="the input object to be deleted")
    finally:
        cluster.release_jobs()
    (session,) = web.sessions.of_account("oscar")
    assert not session.busy
    # The session goes on working.
    images, _, _ = generate(api, PROMPT, num_images=1)
    assert len(images) == 1


def test_progress_reports_the_stage(cluster: ClusterDouble, web: WebApp, tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    cluster.hold_jobs()
    try:
        job = api.submit(PROMPT, api_name="/generate")

        def waiting_is_shown() -> bool:
            progress = job.status().progress_data or []
            return any("Waiting for a GPU" in (unit.desc or "") for unit in progress)

        wait_until(waiting_is_shown, what="the waiting stage in the progress")
        (unit,) = job.status().progress_data
        # A level goes with the words: without one Gradio's page shows the timer only.
        assert (unit.index, unit.length, unit.unit) == (2, 4, "stages")
    finally:
        cluster.release_jobs()
    images, _, _ = job.result(timeout=30)
    assert len(images) == 6


def test_many_logins_share_nothing_but_the_hub(web: WebApp, tmp_path: Path) -> None:
    """Each login gets a backend of its own (DESIGN.md mistake 1)."""
    errors: list[BaseException] = []

    def log_in(user: str, password: str) -> None:
        try:
            client(web, tmp_path / user, auth=(user, password))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=log_in, args=ADMIN) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    alice, bob = web.sessions.of_account("oscar")
    assert alice.key != bob.key and "oscar" not in (alice.key, bob.key)
    assert alice.backend is not bob.backend
    assert alice.directory != bob.directory


def test_sessions_hold_no_password(web: WebApp, tmp_path: Path) -> None:
    generate(client(web, tmp_path, auth=ADMIN), PROMPT, num_images=1)
    (session,) = web.sessions.of_account("oscar")
    seen: set[int] = set()

    def strings(value: object, depth: int = 0) -> Iterator[str]:
        if id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item, depth + 1)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                yield from strings(item, depth + 1)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            yield from strings(vars(value), depth + 1)
        cells = getattr(value, "__closure__", None) or ()
        for cell in cells:
            yield from strings(cell.cell_contents, depth + 1)

    held = list(strings(session)) + list(strings(web.login))
    assert held, "the walk found the session's strings"
    assert ADMIN[1] not in held


def test_a_parameter_out_of_range_is_named(web: WebApp, tmp_path: Path) -> None:
    api = client(web, tmp_path, auth=ADMIN)
    with pytest.raises(AppError, match="Seed must be between 0 and 4294967295"):
        generate(api, PROMPT, seed=2**33, randomize_seed=False)
    with pytest.raises(AppError, match="Size must be width x height"):
        generate(api, PROMPT, size="huge")


def test_values_of_the_wrong_type_are_named(web: WebApp, tmp_path: Path) -> None:
    # Gradio hands the values over as sent (no preprocessing, see page.py): an API
    # caller's wrong types get the same named errors as the page's own mistakes.
    api = client(web, tmp_path, auth=ADMIN)
    wrong = [
        ({"num_images": "six"}, "Number of images must be a whole number from 1 to 8"),
        ({"num_images": 2.5}, "Number of images must be a whole number from 1 to 8"),
        ({"num_images": 20}, "Number of images must be between 1 and 8"),
        ({"seed": [1], "randomize_seed": False}, "Seed must be a number"),
        ({"randomize_seed": "no"}, "Randomize seed must be true or false"),
        ({"size": 512}, "Size must be width x height"),
        ({"steps": {"many": 1}}, "Steps must be a number"),
    ]
    for parameters, said in wrong:
        with pytest.raises(AppError, match=said):
            generate(api, PROMPT, **parameters)
    with pytest.raises(AppError, match="Prompt must be text"):
        generate(api, 42)  # type: ignore[arg-type]
    images, _, _ = generate(api, PROMPT, num_images=2.0)  # a whole number, as the slider sends
    assert len(images) == 2
