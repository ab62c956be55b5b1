"""The page: a prompt, the "From Text to Image" button, six images, and the rest tucked away.

Phone first: the prompt and the button come first and the results right after
them; the advanced parameters sit in a closed accordion, history below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from .form import DEFAULT_SIZE, SIZE_PRESETS
from .gallery import serving_results_as_they_are
from .handlers import Handlers
from .page_script import RANDOMIZE_TICKED, SEED_TYPED

EXAMPLE_PROMPTS = [
    ["a lighthouse on a cliff at dusk, oil painting"],
    ["a red fox in fresh snow, morning light, photograph"],
    ["a cosy reading nook with plants, watercolour"],
    ["an astronaut riding a horse on the moon, digital art"],
]

#: Runs in the browser after a run's images arrived: when the tab is in the background
#: its title says so (and changes back once the tab is seen again). Returns its input
#: unchanged, as a js= step before a Python function must.
NOTIFY_WHEN_HIDDEN = """
(run) => {
  if (document.hidden) {
    const title = document.title.replace(/^\\(✓\\) /, "");
    document.title = "(✓) " + title;
    document.addEventListener("visibilitychange", function back() {
      if (!document.hidden) {
        document.title = title;
        document.removeEventListener("visibilitychange", back);
      }
    });
  }
  return run;
}
"""

#: Copies the picked image's parameters text (already on the page) to the clipboard,
#: in the click itself: browsers allow clipboard writes only during a user's gesture.
COPY_PARAMETERS = """
async (parameters) => {
  if (parameters) { await navigator.clipboard.writeText(parameters); }
  return parameters ? "Parameters copied" : "Pick an image first";
}
"""

# The gallery keeps 3 columns on wide screens and 2 on a phone, and grows to
# show all its images instead of scrolling inside a fixed box.
CSS = """
#header { align-items: center; }
#header h1 { margin: 0; font-size: 1.4rem; }
#backend-line p { margin: 0; font-size: 0.85rem; opacity: 0.8; }
#results .grid-wrap, #history .grid-wrap { max-height: none; height: auto; }
#image-actions { align-items: center; }
/* Gradio's browser client marks a cancelled run's outputs "Error" (the server acknowledges
   the cancel as a success): the page says what happened in words on its status line
   ("Cancelled", or the error with advice), so the pill and its overlay stay hidden. */
#results [data-testid="status-tracker"]:has(span.error) { display: none !important; }
#download-all a { white-space: nowrap; }
/* As wide as its words: a Row gives an HTML block a share of the width, which cut
   "Download all (.zip)" off at the page's edge. */
#download-all { flex: 0 0 auto !important; min-width: max-content !important; }
#examples button { font-size: 0.8rem; text-align: left; padding: 2px 8px; }
/* Errors are said on the status line, beside the gallery: no toasts piling up over it. */
/* The buttons say what can be done now (page_script.py disables them): a disabled
   one looks it, and keyboard focus shows as a clear ring. */
#generate:disabled, #cancel:disabled { opacity: 0.45; cursor: not-allowed; }
#generate:disabled { cursor: progress; }
#generate:focus-visible, #cancel:focus-visible {
  outline: 3px solid #1e1b4b; outline-offset: 2px;
}
#prompt-count { font-size: 0.8rem; opacity: 0.75; text-align: right; margin-top: 4px; }
#prompt-count.over { color: #b91c1c; opacity: 1; font-weight: 600; }
/* An unticked box looks unticked, not disabled. */
#randomize-seed input[type="checkbox"]:not(:checked) {
  background: #fff; border: 1.5px solid #6b7280;
}
/* The history strip is as tall as its thumbnails, with their captions whole. */
#history .grid-wrap { min-height: 0 !important; }
#history { min-height: 0 !important; }
#history .caption-label {
  position: static; white-space: normal; overflow: visible; text-overflow: clip;
  max-width: none; margin-top: 4px; font-size: 0.75rem; line-height: 1.2;
}
#history .thumbnail-item { flex-direction: column; height: auto; aspect-ratio: auto; }
#image-actions { flex-wrap: wrap; gap: 8px; }
#image-actions button, #download-all a { white-space: nowrap; }
/* Gradio's Settings panel: its Screen Studio section is for Gradio developers. */
.banner-wrap:has(.record-button) { display: none; }
@media (max-width: 640px) {
  #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #history .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  #image-actions > * { min-width: 0 !important; flex: 0 1 auto !important; }
}
"""


def build_page(
    handlers: Handlers,
    *,
    describe_backend: Callable[[gr.Request], str],
    login_enabled: bool,
    concurrency: int,
    results_home: Path,
) -> gr.Blocks:
    """Lay out the page and wire its events to ``handlers``; the images come from
    ``results_home``."""
    # No telemetry: a cluster's front end has no business calling home.
    with gr.Blocks(
        title="oscar-sd: text to image", fill_width=True, analytics_enabled=False
    ) as page:
        with gr.Row(elem_id="header", equal_height=True):
            with gr.Column(scale=4, min_width=200):
                gr.Markdown("# oscar-sd")
                backend_line = gr.Markdown(elem_id="backend-line")
            if login_enabled:
                # Relative, so it works under an Ingress subpath too.
                gr.Button("Log out", link="logout", size="sm", scale=0, min_width=90)

        # Which run the gallery shows, and which of its images the buttons act on.
        run_shown = gr.State("")
        picked = gr.State(0)
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="What should the images show? (Enter makes them)",
                    # One line grows to six; with lines > 1, Gradio submits on Shift+Enter only.
                    lines=1,
                    max_lines=6,
                    autofocus=True,
                    elem_id="prompt",
                )
                # Shown where there is a choice: the cluster's services this login may
                # use (each named by its model), or the models this computer can load.
                model = gr.Dropdown(
                    label="Model", choices=[], value=None, visible=False, elem_id="model",
                )
                with gr.Row():
                    generate = gr.Button(
                        "From Text to Image",
                        variant="primary",
                        scale=3,
                        min_width=190,
                        elem_id="generate",
                    )
                    cancel = gr.Button(
                        "Cancel", variant="stop", scale=1, min_width=90, elem_id="cancel"
                    )
                # For a new user facing an empty box: a click fills the prompt. Below the
                # buttons, so that they never push the button down.
                gr.Examples(
                    examples=EXAMPLE_PROMPTS,
                    inputs=prompt,
                    label="Try one of these",
                    examples_per_page=len(EXAMPLE_PROMPTS),
                    elem_id="examples",
                )
                with gr.Accordion(
                    "Start from an image", open=False, elem_id="image-to-image"
                ) as start_box:
                    start_image = gr.Image(
                        label="Start image",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        format="png",
                        height=220,
                        elem_id="start-image",
                    )
                    strength = gr.Slider(
                        label="Strength (how much of the start image is redrawn)",
                        minimum=0.05, maximum=1.0, step=0.05, value=0.6,
                        elem_id="strength",
                    )
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    negative_prompt = gr.Textbox(
                        label="Negative prompt",
                        value="",
                        placeholder="What the images should not show",
                        lines=1,
                    )
                    with gr.Row():
                        # Text fields, not gr.Number: Gradio's Number shows "0" for an
                        # empty value (which reads as guidance off) and checks ranges
                        # itself without naming the field ("Value 200 is greater than
                        # maximum value 150."); build_request checks them, by name.
                        seed = gr.Textbox(
                            label="Seed", value="", placeholder="random", elem_id="seed"
                        )
                        randomize_seed = gr.Checkbox(
                            label="Randomize seed", value=True, elem_id="randomize-seed"
                        )
                    with gr.Row():
                        steps = gr.Textbox(
                            label="Steps", value="", placeholder="model default (1–150)",
                            elem_id="steps",
                        )
                        guidance_scale = gr.Textbox(
                            label="Guidance", value="", placeholder="model default (0–30)",
                            elem_id="guidance",
                        )
                    size = gr.Dropdown(
                        label="Size (width × height)",
                        choices=SIZE_PRESETS,
                        value=DEFAULT_SIZE,
                        allow_custom_value=True,
                    )
                    num_images = gr.Slider(
                        label="Number of images", minimum=1, maximum=8, step=1, value=6
                    )
            with gr.Column(scale=3, min_width=300):
                results = gr.Gallery(
                    label="Images",
                    columns=3,
                    height="auto",
                    object_fit="contain",
                    # PNG files as made: their generation parameters stay inside.
                    format="png",
                    # "download" saves the picked image as served: the PNG as made, with
                    # its parameters inside. The whole set is the zip link below.
                    buttons=["download", "fullscreen"],
                    interactive=False,
                    elem_id="results",
                )
                # Per image (the one clicked; the first until then) and for the whole set.
                with gr.Row(equal_height=True, visible=False, elem_id="image-actions") as actions:
                    use_seed = gr.Button(
                        "Use this image's seed", size="sm", scale=0, min_width=170,
                        elem_id="use-seed",
                    )
                    use_start = gr.Button(
                        "Use this image as a start", size="sm", scale=0, min_width=190,
                        elem_id="use-start",
                    )
                    copy = gr.Button(
                        "Copy parameters", size="sm", scale=0, min_width=150, elem_id="copy"
                    )
                    share = gr.Button(
                        "Share", size="sm", scale=0, min_width=80, elem_id="share-run"
                    )
                    delete = gr.Button(
                        "Delete this run", size="sm", scale=0, min_width=130,
                        elem_id="delete-run",
                    )
                    download_all = gr.HTML(elem_id="download-all", padding=False)
                with gr.Row(equal_height=True):
                    # Shown with a run's images only: no empty box before the first.
                    with gr.Column(scale=0, min_width=160, visible=False) as seed_box:
                        seed_used = gr.Textbox(label="Seed used", value="", interactive=False)
                    status = gr.Markdown(elem_id="status")
                share_link = gr.Textbox(
                    label="Share link (no sign-in needed to open it)", interactive=False,
                    buttons=["copy"], visible=False, elem_id="share-link",
                )
                parameters = gr.Textbox(
                    label="Parameters of the picked image",
                    lines=1,
                    # Long enough for a long prompt on a phone: the box grows, never clips.
                    max_lines=20,
                    interactive=False,
                    buttons=["copy"],
                    visible=False,
                    elem_id="parameters",
                )

        with gr.Accordion("History (this login)", open=True, visible=False) as history_box:
            past_runs = gr.Gallery(
                columns=6,
                fit_columns=False,  # one earlier run is a thumbnail, not a banner
                height="auto",
                allow_preview=False,
                show_label=False,
                interactive=False,
                format="png",
                buttons=[],
                elem_id="history",
            )

        for gallery in (results, past_runs):
            serving_results_as_they_are(gallery, results_home)

        form = [
            prompt,
            negative_prompt,
            seed,
            randomize_seed,
            steps,
            guidance_scale,
            size,
            num_images,
        ]
        # Typing a seed means that seed (A1111's way): in the browser, no server work.
        seed.input(None, seed, randomize_seed, js=SEED_TYPED, api_visibility="private")
        randomize_seed.input(
            None, [randomize_seed, seed], seed, js=RANDOMIZE_TICKED, api_visibility="private"
        )
        # A new run's progress never sits beside the last run's "Cancelled" or error.
        # Registered before the run's event: of two events that write the status on
        # one click, the browser keeps what the later-registered one writes.
        gr.on(
            triggers=[generate.click, prompt.submit, seed.submit, steps.submit,
                      guidance_scale.submit],
            fn=None, js="() => ''", outputs=status,
            api_visibility="private", show_progress="hidden",
        )
        making = gr.on(
            # Enter in the prompt, the seed, steps or guidance makes the images too.
            triggers=[generate.click, prompt.submit, seed.submit, steps.submit,
                      guidance_scale.submit],
            fn=handlers.generate,
            inputs=[*form, start_image, strength, model],
            outputs=[results, seed_used, status, run_shown],
            api_name="generate",
            concurrency_limit=concurrency,
            show_progress_on=[results],
            # build_request checks the values as sent, and the handler returns them as
            # shown: Gradio's own passes cost a worker-thread trip per component and,
            # for the gallery, a thread pool and a second round of path checks per click.
            preprocess=False,
            postprocess=False,
        )
        making.success(
            handlers.show_run,
            run_shown,
            [past_runs, history_box, picked, parameters, actions, download_all, seed_box],
            api_visibility="private",
            show_progress="hidden",
            # Heard when the tab is in the background: the title says the images are ready.
            js=NOTIFY_WHEN_HIDDEN,
            postprocess=False,  # the history strip comes as shown (gallery.py)
        )
        # The status line shows the error of a failed run, in place of the last success,
        # whose images, seed and buttons go: they are not what this click made.
        making.failure(
            handlers.last_error, None,
            [status, results, seed_used, seed_box, actions, parameters, run_shown],
            api_visibility="private", show_progress="hidden",
        )
        # In the browser, at once: the server's part (stopping the run) follows.
        cancel.click(
            None, None, status, js="() => 'Cancelled'", cancels=[making], api_visibility="private"
        )
        use_start.click(
            handlers.use_as_start, [run_shown, picked], [start_image, start_box, status],
            api_visibility="private", show_progress="hidden",
        )
        results.select(
            handlers.pick_image, run_shown, [picked, parameters],
            api_visibility="private", show_progress="hidden",
        )
        use_seed.click(
            handlers.use_seed, [run_shown, picked], [seed, randomize_seed, status],
            api_visibility="private", show_progress="hidden",
        )
        copy.click(None, parameters, status, js=COPY_PARAMETERS, api_visibility="private")
        share.click(
            handlers.share_run, run_shown, [share_link, status],
            api_visibility="private", show_progress="hidden",
        )
        # A new run shown: the last run's link goes.
        run_shown.change(
            lambda: gr.update(value="", visible=False), None, share_link,
            api_visibility="private", show_progress="hidden", queue=False,
        )
        delete.click(
            handlers.delete_run, run_shown,
            [results, run_shown, past_runs, history_box, actions, status],
            api_visibility="private", show_progress="hidden", postprocess=False,
        )
        past_runs.select(
            handlers.choose_from_history,
            inputs=None,
            outputs=[*form, results, seed_used, parameters, status, run_shown],
            api_visibility="private",
            show_progress="hidden",
            postprocess=False,  # the values come as shown: the gallery's from gallery.py
        ).success(
            handlers.show_run,
            run_shown,
            [past_runs, history_box, picked, parameters, actions, download_all, seed_box],
            api_visibility="private",
            show_progress="hidden",
            postprocess=False,
        )
        # The login's history is kept on the server: a reload of the tab shows it again.
        page.load(
            handlers.history, None, [past_runs, history_box],
            api_visibility="private", show_progress="hidden", postprocess=False,
        )
        page.load(describe_backend, None, backend_line, api_visibility="private")
        page.load(handlers.models, None, model, api_visibility="private", show_progress="hidden")
        page.unload(handlers.forget_tab)
    return page
