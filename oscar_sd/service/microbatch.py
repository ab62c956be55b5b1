"""Fixed-size micro-batches: a sample's pixels do not depend on who it was batched with.

Matrix and convolution kernels choose their algorithm (blocking, vector width,
split of the reduction) from the shape of the whole batch, so the same sample
computed in a batch of 6 and in a batch of 24 can differ in the last bits of a
float, and after 25 denoising steps in a few uint8 pixel values. Measured on
this project's CPU with the tiny model: ~1e-6 in the UNet's output, 2-3 pixels
per image set.

So every UNet forward of a pipeline runs in chunks of exactly ``size`` samples
(the last chunk padded with copies of its last sample, whose outputs are
dropped), and the VAE decodes one image at a time: every kernel then sees the
same shapes whether a request runs alone or batched with others, and a sample's
result cannot depend on its neighbours or its place in the chunk (the shape
fixes the kernel; kernels compute rows independently). Measured: with chunks of
1, 2, 4 or 8 the tiny UNet gives bit-identical outputs for a sample at every
position next to any neighbours; with 3 or 6 it does not (MKL computes a tail of
rows that is not a multiple of 4 differently). Hence the default of 4, which
also wastes nothing for the common 6-image request with guidance (12 samples)
and 2 slots of 8 without.

On a GPU this is not verified yet: cuBLAS and cuDNN also choose kernels by
shape, so fixed shapes should give the same property as long as autotuning
(``torch.backends.cudnn.benchmark``) stays off, as it is by default; run the
pixel test there before relying on it.

``OSCAR_SD_MICRO_BATCH`` sets the size; ``0`` runs every forward on the whole
batch (fastest on a big GPU, but batched images may then differ from the same
request run alone by a few pixel values).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DEFAULT_MICRO_BATCH = 4


def micro_batch_from_env() -> int:
    """``OSCAR_SD_MICRO_BATCH`` (samples per UNet forward; 0 = the whole batch), default 4."""
    text = os.environ.get("OSCAR_SD_MICRO_BATCH", "").strip()
    if not text:
        return DEFAULT_MICRO_BATCH
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 0:
        raise ValueError(
            f"OSCAR_SD_MICRO_BATCH={text!r} is not a whole number >= 0; "
            f"unset it for {DEFAULT_MICRO_BATCH}"
        )
    return size


_interrupts = threading.local()


@contextmanager
def interruptible(check: Callable[[], None] | None) -> Iterator[None]:
    """While the block runs in this thread, ``check`` is called before each micro-batch
    (of the UNet, and each image the VAE decodes): what it raises stops the call there,
    within a step rather than at its end (one step of 8 large images takes seconds)."""
    previous = getattr(_interrupts, "check", None)
    _interrupts.check = check
    try:
        yield
    finally:
        _interrupts.check = previous


def _checkpoint() -> None:
    check = getattr(_interrupts, "check", None)
    if check is not None:
        check()


def install_micro_batching(pipeline: Any, size: int) -> None:
    """Make ``pipeline`` run its UNet in chunks of ``size`` samples and decode image by image.

    Patches the two modules' instances (not their classes): the pipeline keeps
    calling ``self.unet(...)`` and ``self.vae.decode(...)`` as it always does.
    Calling it again replaces the earlier setting (``size`` 0 restores the UNet).
    """
    if hasattr(pipeline, "unet"):
        forward = _unwrapped(pipeline.unet.forward)
        pipeline.unet.forward = _chunked(forward, size, _unet_output) if size > 0 else forward
    if hasattr(pipeline, "vae"):
        pipeline.vae.decode = _chunked(_unwrapped(pipeline.vae.decode), 1, _decoder_output)


def _unwrapped(call: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(call, "unchunked", call)


def _chunked(call: Callable[..., Any], size: int, wrap: Callable[[Any, bool], Any]) -> Any:
    import torch

    def run(sample: torch.Tensor, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        batch = sample.shape[0]
        pieces = []
        for start in range(0, batch, size):
            _checkpoint()
            used = min(size, batch - start)
            chunk_args = [_slice(value, batch, start, used, size) for value in args]
            chunk_kwargs = {
                key: _slice(value, batch, start, used, size) for key, value in kwargs.items()
            }
            out = call(
                _slice(sample, batch, start, used, size),
                *chunk_args,
                return_dict=False,
                **chunk_kwargs,
            )[0]
            pieces.append(out[:used])
        return wrap(torch.cat(pieces), return_dict)

    run.unchunked = call  # type: ignore[attr-defined]
    return run


def _slice(value: Any, batch: int, start: int, used: int, size: int) -> Any:
    """Rows ``start:start+used`` of a per-sample tensor, padded to ``size`` rows."""
    import torch

    if isinstance(value, dict):
        return {key: _slice(item, batch, start, used, size) for key, item in value.items()}
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != batch:
        return value  # shared by every sample: the timestep, a scale, None
    rows = value[start : start + used]
    if used < size:
        rows = torch.cat([rows, rows[-1:].expand(size - used, *rows.shape[1:])])
    return rows


def _unet_output(sample: Any, return_dict: bool) -> Any:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample) if return_dict else (sample,)


def _decoder_output(sample: Any, return_dict: bool) -> Any:
    from diffusers.models.autoencoders.vae import DecoderOutput

    return DecoderOutput(sample=sample) if return_dict else (sample,)
