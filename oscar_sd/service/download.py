"""Fetch a model into a folder at image build time, so jobs never download it.

    python -m oscar_sd.service.download stabilityai/sd-turbo /opt/models/stabilityai/sd-turbo

The pipeline is saved in float16 (the dtype it runs in on the GPU; on a CPU the
worker loads it as float32), fetching the hub's fp16 variant when it has one,
which halves the download and the image. The Dockerfile's ``model`` stage runs
this; the service image then sets ``OSCAR_SD_MODEL`` to the folder.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

logger = logging.getLogger("oscar_sd.service")


def download_model(model: str, destination: Path) -> Path:
    """Save the diffusers pipeline ``model`` (a hub id) to ``destination`` in float16."""
    from diffusers import AutoPipelineForText2Image

    started = time.perf_counter()
    try:
        pipeline = AutoPipelineForText2Image.from_pretrained(
            model, dtype=torch.float16, variant="fp16"
        )
    except (OSError, ValueError):
        logger.info("%s has no fp16 variant; fetching the full weights", model)
        pipeline = AutoPipelineForText2Image.from_pretrained(model, dtype=torch.float16)
    destination.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(destination, safe_serialization=True)
    logger.info("Saved %s to %s in %.0f s", model, destination, time.perf_counter() - started)
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="hub id, e.g. stabilityai/sd-turbo")
    parser.add_argument("destination", type=Path, help="folder to save the pipeline in")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    download_model(arguments.model, arguments.destination)


if __name__ == "__main__":
    main()
