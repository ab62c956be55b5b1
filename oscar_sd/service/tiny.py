"""A tiny, randomly initialised Stable Diffusion pipeline built from configs.

``OSCAR_SD_MODEL=tiny`` runs the whole worker (text encoder, UNet, scheduler,
VAE, PNGs, zip) in about a second on a CPU, with no download: tests and the
local backend on a machine without the real weights use it. Its weights are
random, so it makes noise, not pictures.

The shapes follow diffusers' own fast pipeline tests. The CLIP tokenizer is
built in memory from a byte-level vocabulary (every byte alone, and every byte
ending a word) with no merges, so any text tokenizes without vocabulary files.

>>> pipe = build_tiny_pipeline()
>>> pipe("a red fox", num_inference_steps=2, width=64, height=64).images[0].size
(64, 64)
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

#: The weights are drawn from this seed, so every process builds the same model.
TINY_INIT_SEED = 0

_START, _END = "<|startoftext|>", "<|endoftext|>"


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes: every string has a tokenization."""
    vocab = {_START: 0, _END: 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for char in alphabet:
        vocab[char] = len(vocab)
    for char in alphabet:
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_pipeline() -> StableDiffusionPipeline:
    """The tiny pipeline, on the CPU in float32, identical in every process."""
    tokenizer = build_tiny_tokenizer()
    # fork_rng: seeding must not disturb the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_INIT_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
        )
        # Four blocks, like the real VAE: 8x down-sampling, so a 512x512 image has
        # 64x64 latents (with fewer blocks its attention at 512x512 takes minutes).
        vae = AutoencoderKL(
            block_out_channels=[8, 16, 32, 32],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=5,
                vocab_size=len(tokenizer),
            )
        )
    # The scheduler sd-turbo ships with, so the tiny model exercises the same code.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
