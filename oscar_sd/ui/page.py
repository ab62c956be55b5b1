"""The page: a prompt, the "From Text to Image" button, six images, and the rest tucked away.

Phone first: the prompt and the button come first and the results right after
them; the advanced parameters sit in a closed accordion, history below.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from .form import DEFAULT_SIZE, SIZE_PRESETS
from .handlers import Handlers, history_gallery

# The gallery keeps 3 columns on wide screens and 2 on a phone, and grows to
# show all its images instead of scrolling inside a fixed box.
CSS = """
#header { align-items: center; }
#header h1 { margin: 0; font-size: 1.4rem; }
#backend-line p { margin: 0; font-size: 0.85rem; opacity: 0.8; }
#results .grid-wrap, #history .grid-wrap { max-height: none; height: auto; }
@media (max-width: 640px) {
  #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #history .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
}
"""


def build_page(
    handlers: Handlers,
    *,
    describe_backend: Callable[[gr.Request], str],
    login_enabled: bool,
    concurrency: int,
) -> gr.Blocks:
    """Lay out the page and wire its events to ``handlers``."""
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

        history = gr.State([])
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
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    negative_prompt = gr.Textbox(
                        label="Negative prompt",
                        value="",
                        placeholder="What the images should not show",
                        lines=1,
                    )
                    with gr.Row():
                        seed = gr.Number(
                            label="Seed",
                            value=None,
                            precision=0,
                            minimum=0,
                            placeholder="random",
                        )
                        randomize_seed = gr.Checkbox(label="Randomize seed", value=True)
                    with gr.Row():
                        steps = gr.Number(
                            label="Steps",
                            value=None,
                            precision=0,
                            minimum=0,
                            maximum=150,
                            placeholder="model default",
                        )
                        guidance_scale = gr.Number(
                            label="Guidance",
                            value=None,
                            minimum=0,
                            maximum=30,
                            step=0.5,
                            placeholder="model default",
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
                    buttons=["download", "download_all", "fullscreen"],
                    interactive=False,
                    elem_id="results",
                )
                with gr.Row(equal_height=True):
                    seed_used = gr.Number(
                        label="Seed used", precision=0, interactive=False, scale=0, min_width=160
                    )
                    status = gr.Markdown(elem_id="status")

        with gr.Accordion("History (this session)", open=True):
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
        making = gr.on(
            triggers=[generate.click, prompt.submit],
            fn=handlers.generate,
            inputs=[*form, history],
            outputs=[results, seed_used, status, history],
            api_name="generate",
            concurrency_limit=concurrency,
            show_progress_on=[results],
        )
        making.success(
            history_gallery, history, past_runs, api_visibility="private", show_progress="hidden"
        )
        cancel.click(None, cancels=[making], api_visibility="private")
        past_runs.select(
            handlers.choose_from_history,
            inputs=history,
            outputs=[*form, results, seed_used, status],
            api_visibility="private",
            show_progress="hidden",
        )
        page.load(describe_backend, None, backend_line, api_visibility="private")
        page.unload(handlers.forget_tab)
    return page
