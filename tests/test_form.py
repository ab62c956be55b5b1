"""The form's values as the page sends them: the seed as A1111 reads it, prompts shown safely."""

from __future__ import annotations

from oscar_sd.ui.form import build_request, without_bidi_controls


def form(seed: object, randomize: bool) -> int | None:
    return build_request("a fox", "", seed, randomize, None, None, "64x64", 1).seed  # type: ignore[arg-type]


def test_a_typed_seed_is_used_and_minus_one_or_empty_is_random() -> None:
    assert form("42", False) == 42
    assert form(" 7 ", False) == 7
    # -1 means random, as in AUTOMATIC1111; so does an empty field.
    assert form("-1", False) is None
    assert form("", False) is None
    # The page unticks "Randomize seed" when a seed is typed (page_script.py); an API
    # caller that leaves it ticked asks for a random seed.
    assert form("42", True) is None


def test_bidi_controls_are_shown_not_obeyed() -> None:
    assert without_bidi_controls("plain text") == "plain text"
    shown = without_bidi_controls("a fox \u202etxt.exe\u2066x\u2069")
    assert shown == "a fox <U+202E>txt.exe<U+2066>x<U+2069>"
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in shown)
