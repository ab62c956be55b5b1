"""Local mode: no cluster configured, the page generates in-process with LocalSD.

The tiny model (random weights) keeps this fast on a CPU; it makes noise, and
the page says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client.exceptions import AuthenticationError

from oscar_sd import Settings
from tests.ui_fixtures import client, png_metadata, running_app, wait_until

pytest.importorskip("diffusers", reason="the local backend needs the [local] extra")

SMALL = {"size": "64x64", "steps": 2}


def local_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"oscar_endpoint": "", "model": "tiny", "host": "127.0.0.1"}
    values.update(overrides)
    return Settings(**values)


def test_local_mode_makes_six_images_without_login(tmp_path: Path) -> None:
    with running_app(local_settings()) as app:
        assert app.login is None
        api = client(app, tmp_path)
        images, seed, status = api.predict(
            "a red fox", seed=7, randomize_seed=False, api_name="/generate", **SMALL
        )
        assert seed == "7"
        assert "6 images" in status and "tiny" in status
        assert app.local_backend is not None
        assert "noise" in app.local_backend.description
        for image in images:
            parameters, info = png_metadata(image["image"])
            assert parameters.startswith("a red fox")
            assert info["request"]["seed"] == 7 and info["request"]["width"] == 64


def test_oscar_sd_users_turns_login_on(tmp_path: Path) -> None:
    with running_app(local_settings(users="carol:carol-pw,dave:dave-pw")) as app:
        # The login page speaks to people: no environment variable names.
        login_page = httpx.get(f"{app.url}login")
        assert "Log in with the user name and password" in login_page.text
        assert "OSCAR_SD_USERS" not in login_page.text
        with pytest.raises(AuthenticationError):
            client(app, tmp_path)
        with pytest.raises(AuthenticationError):
            client(app, tmp_path, auth=("carol", "dave-pw"))
        api = client(app, tmp_path, auth=("carol", "carol-pw"))
        images, _, _ = api.predict("a blue whale", api_name="/generate", **SMALL)
        assert len(images) == 6
        (carol,) = app.sessions.of_account("carol")
        assert not carol.owns_backend  # the model is shared, not closed
        # Carol's images were moved into her own folder.
        assert all(Path(str(p)).name.endswith(".png") for p in carol.directory.rglob("*.png"))
        assert len(list(carol.directory.rglob("*.png"))) == 6


def test_progress_shows_steps_and_place_in_line_and_cancel_lets_the_next_go(tmp_path: Path) -> None:
    def descriptions(job: Any) -> list[str]:
        return [unit.desc or "" for unit in job.status().progress_data or []]

    with running_app(local_settings()) as app:
        first_tab, second_tab = client(app, tmp_path / "a"), client(app, tmp_path / "b")
        # Long enough to still be generating when the second request arrives.
        first = first_tab.submit("a slow fox", size="256x256", steps=150, api_name="/generate")
        wait_until(
            lambda: any(desc.startswith("Generating · step ") for desc in descriptions(first)),
            timeout=120,
            what="the first request's step progress",
        )
        step = next(
            unit for unit in first.status().progress_data
            if unit.desc.startswith("Generating · step")
        )
        assert step.length == 150 and step.index is not None
        second = second_tab.submit("a patient fox", api_name="/generate", **SMALL)
        wait_until(
            lambda: any("1 ahead of you" in desc for desc in descriptions(second)),
            timeout=60,
            what="the second request's place in line",
        )
        # Cancel stops the first at its next step; the second goes next.
        first.cancel()
        assert len(second.result(timeout=120)[0]) == 6
