"""What the page does in the browser on its own, with no server work per click.

- **A run shows on the buttons**: while the results' progress shows (Gradio's
  status tracker in ``#results`` is not hidden), "From Text to Image" is
  disabled (a second click would be dropped by Gradio's ``trigger_mode="once"``,
  silently) and Cancel is enabled; when nothing runs, Cancel is disabled.
- **Keyboard**: Ctrl+Enter (Cmd+Enter) anywhere makes the images; Escape
  cancels a run (Enter in Seed, Steps and Guidance is wired in ``page.py``).
- **The prompt's length**: a counter under the prompt, "37 / 2,000", red past
  the limit, in the same number format as the server's error.
- **The button names the mode**: "From Image to Image" while a start image is
  loaded, "From Text to Image" otherwise.
- **A phone** scrolls to the progress once a run starts, and to the images when
  they come.
- **Screen readers**: Gradio's announcer of a finished run speaks the key
  ``common.complete``, which Gradio's English dictionary lacks: :data:`TRANSLATIONS`
  gives it words (``launch(i18n=...)``, merged into the frontend's dictionary).
"""

from __future__ import annotations

from .._models import MAX_PROMPT_CHARS

#: Keys Gradio's frontend uses without an English text of its own (``statustracker``).
TRANSLATIONS = {"en": {"common": {"complete": "Done", "error": "Error"}}}

#: Runs once when the page loads (``launch(js=...)``).
PAGE_SCRIPT = """
() => {
  const LIMIT = __LIMIT__;
  const PHONE = "(max-width: 640px)";
  const number = (n) => n.toLocaleString("en-US");
  const byId = (id) => document.getElementById(id);

  // A run is on while the results' progress shows (and is not an error).
  function running() {
    const tracker = document.querySelector('#results [data-testid="status-tracker"]');
    return !!tracker && !tracker.classList.contains("hide") && !tracker.querySelector(".error");
  }
  let wasRunning = null;
  function showRun() {
    const on = running();
    if (on === wasRunning) return;
    const generate = byId("generate"), cancel = byId("cancel");
    if (!generate || !cancel) return;
    wasRunning = on;
    generate.disabled = on;
    generate.setAttribute("aria-busy", String(on));
    cancel.disabled = !on;
    document.body.classList.toggle("oscar-running", on);
    // On a phone the results are below the button: show the progress when a run
    // starts (as far as the page can scroll then) and the images when they come.
    const results = byId("results");
    if (!results || !window.matchMedia(PHONE).matches) return;
    const show = () => results.scrollIntoView({ block: "start" });
    if (on) { show(); return; }
    const loading = [...results.querySelectorAll("img")].filter((image) => !image.complete);
    Promise.all(loading.map((image) => new Promise((loaded) => {
      image.addEventListener("load", loaded, { once: true });
      image.addEventListener("error", loaded, { once: true });
    }))).then(() => requestAnimationFrame(() => { if (results.querySelector("img")) show(); }));
  }

  // The prompt's counter, kept current as one types and when the page sets the text
  // (an example, a run from history): the field's value setter says so too.
  function count(field) {
    let counter = byId("prompt-count");
    if (!counter) {
      counter = document.createElement("div");
      counter.id = "prompt-count";
      field.closest("#prompt")?.appendChild(counter);
    }
    const used = [...field.value.trim()].length;
    const over = used > LIMIT;
    counter.textContent = over
      ? `${number(used)} / ${number(LIMIT)} characters: ${number(used - LIMIT)} too many`
      : `${number(used)} / ${number(LIMIT)}`;
    counter.classList.toggle("over", over);
  }
  function watchPrompt() {
    const field = document.querySelector("#prompt textarea, #prompt input");
    if (!field || field.dataset.counted) return;
    field.dataset.counted = "1";
    const own = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(field), "value");
    Object.defineProperty(field, "value", {
      configurable: true,
      get() { return own.get.call(this); },
      set(text) { own.set.call(this, text); count(this); },
    });
    field.addEventListener("input", () => count(field));
    count(field);
  }

  // The button says what a click makes: from the start image when one is loaded.
  function showMode() {
    const generate = byId("generate");
    if (!generate) return;
    const label = document.querySelector("#start-image img")
      ? "From Image to Image" : "From Text to Image";
    if (generate.textContent.trim() !== label) generate.textContent = label;
  }

  new MutationObserver(() => { showRun(); watchPrompt(); showMode(); }).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["class"],
  });
  showRun();
  watchPrompt();
  showMode();

  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      // Taken before the field sees it, so that the prompt does not submit it twice.
      event.preventDefault();
      event.stopPropagation();
      const generate = byId("generate");
      if (generate && !generate.disabled) generate.click();
    } else if (event.key === "Escape" && running()) {
      byId("cancel")?.click();
    }
  }, true);
}
""".replace("__LIMIT__", str(MAX_PROMPT_CHARS))

#: The seed field and its checkbox agree, as in AUTOMATIC1111 (where -1 is random):
#: typing a seed unticks "Randomize seed"; emptying it, or -1, ticks it again. In the
#: browser only (js-only events).
SEED_TYPED = "(seed) => { const s = String(seed ?? '').trim(); return s === '' || s === '-1'; }"
#: Ticking "Randomize seed" empties the seed field; unticking keeps what it holds.
RANDOMIZE_TICKED = "(randomize, seed) => randomize ? '' : seed"
