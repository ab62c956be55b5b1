"""How fast does the service worker make a prompt's six images?

Default: the tiny random model on the CPU through the service's own code path
(``load_pipeline`` + ``generate_images``: PNG encoding included), so it runs
anywhere in seconds, followed by two more tables (issue 9):

- images per second with and without cross-request batching: 4 requests of 6
  images run one after another (``generate_images`` each) and as one batch
  (``generate_batch``: one pipeline call, pixel-identical to the lone runs),
  and the same batch without fixed micro-batches (``OSCAR_SD_MICRO_BATCH=0``:
  faster where big batches pay, but no longer pixel-identical);
- one OSCAR job's start-up, split: ``python -m oscar_sd.service`` in a
  subprocess with the tiny model saved to a folder (so its weights are read
  from disk as a real model's are), timed by the worker's own log line.

    .venv/bin/python bench/service.py

On a GPU, full-size models built from configs with random weights (the same
FLOPs as the real ones; no download), eager and with ``torch.compile``:

    python bench/service.py --device cuda --config sd15 --dtype fp16 --compile
    python bench/service.py --device cuda --config sd-turbo --dtype fp16 --compile

- ``sd15``: the SD 1.5 UNet, VAE and CLIP ViT-L text encoder; 512x512, 6 images,
  25 steps, classifier-free guidance (each UNet pass runs 12 samples).
- ``sd-turbo``: the SD 2.1 architecture sd-turbo uses (UNet of about the same
  FLOPs as SD 1.5, OpenCLIP ViT-H text encoder); 512x512, 6 images, 1 step, no
  guidance.

Work per prompt, counted as in the issue: one SD 1.5 UNet pass at 64x64 latents
is ~0.86 TFLOP per sample, one VAE decode ~2.5 TFLOP per image (text encoding
is negligible). "of peak" divides the achieved TFLOP/s by the GPU's bf16 dense
peak (H100 SXM and H200: 989 TFLOP/s). The GPU configs time the pipeline up to
image tensors (``output_type="pt"``): PNG encoding is CPU work, measured by the
tiny row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest
from oscar_sd.service import generate_batch, generate_images, load_pipeline
from oscar_sd.service.microbatch import install_micro_batching
from oscar_sd.service.pipeline import forget_pipelines

REPO = Path(__file__).resolve().parents[1]

UNET_TFLOP_PER_SAMPLE = 0.86  # one SD 1.5 UNet pass, 64x64 latents
VAE_TFLOP_PER_IMAGE = 2.5  # one VAE decode to 512x512
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}
NUM_IMAGES = 6
PROMPT = "a lighthouse on a cliff at dusk, oil painting"


@dataclass(frozen=True)
class Workload:
    """What one prompt of a config asks of the model."""

    width: int
    height: int
    steps: int
    guidance: float

    @property
    def samples_per_unet_pass(self) -> int:
        # Guidance above 1 runs the UNet on the prompt and the negative prompt.
        return NUM_IMAGES * (2 if self.guidance > 1.0 else 1)

    def tflop_per_prompt(self) -> float:
        unet = self.steps * self.samples_per_unet_pass * UNET_TFLOP_PER_SAMPLE
        return unet + NUM_IMAGES * VAE_TFLOP_PER_IMAGE


WORKLOADS = {
    "tiny": Workload(width=512, height=512, steps=2, guidance=0.0),  # the page's default size
    "sd15": Workload(width=512, height=512, steps=25, guidance=7.5),
    "sd-turbo": Workload(width=512, height=512, steps=1, guidance=0.0),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Row:
    config: str
    device: str
    dtype: str
    mode: str
    load_seconds: float
    seconds_per_prompt: float
    iterations_per_second: float
    peak_memory_gib: float
    tflop: float | None
    peak_fraction: float | None


class StepClock:
    """Times denoising steps through the pipeline's step callback."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.started = 0.0
        self.ends: list[float] = []

    def start(self) -> None:
        self.ends.clear()
        self.started = time.perf_counter()

    def step(self, *args: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()  # the GPU runs ahead of Python
        self.ends.append(time.perf_counter())

    def iterations_per_second(self) -> float:
        if len(self.ends) >= 2:
            return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])
        return len(self.ends) / (self.ends[-1] - self.started)


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is in KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gpu_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_DENSE_PEAK_TFLOPS.items() if key in name), None)


# --- the tiny model, through the service's own code ---------------------------------


def bench_tiny(device: str, repeats: int) -> list[Row]:
    import diffusers  # noqa: F401  (imported before the clock starts: load, not import)

    forget_pipelines()
    loaded = load_pipeline("tiny", device)
    workload = WORKLOADS["tiny"]
    request = GenerationRequest(
        prompt=PROMPT,
        seed=0,
        width=workload.width,
        height=workload.height,
        steps=workload.steps,
        guidance_scale=workload.guidance,
        num_images=NUM_IMAGES,
    )
    clock = StepClock(device)
    generate_images(request, model="tiny", device=device)  # warm-up
    seconds, rates = [], []
    for _ in range(repeats):
        clock.start()
        generate_images(request, model="tiny", device=device, on_step=clock.step)
        seconds.append(time.perf_counter() - clock.started)
        rates.append(clock.iterations_per_second())
    dtype = next(name for name, value in DTYPES.items() if value == loaded.dtype)
    return [
        Row("tiny", device, dtype, "eager", loaded.load_seconds, statistics.median(seconds),
            statistics.median(rates), peak_memory_gib(device), None, None)
    ]


# --- cross-request batching (tiny model) ------------------------------------------


BATCH_REQUESTS = 4


def batching_requests(size: int) -> list[GenerationRequest]:
    workload = WORKLOADS["tiny"]
    return [
        GenerationRequest(prompt=f"{PROMPT}, take {i}", seed=1000 * i, width=size, height=size,
                          steps=workload.steps, guidance_scale=workload.guidance,
                          num_images=NUM_IMAGES)
        for i in range(BATCH_REQUESTS)
    ]


def run_round(mode: str, requests: list[GenerationRequest], device: str) -> None:
    if mode == "sequential":
        for request in requests:
            generate_images(request, model="tiny", device=device)
    else:
        outcomes = generate_batch(requests, model="tiny", device=device)
        assert all(outcome.error is None for outcome in outcomes)


def bench_batching(device: str, repeats: int, sizes: tuple[int, ...]) -> list[tuple[str, ...]]:
    """Rows of (size, mode, s per round, images/s, ratio, CPU ms per image, CPU ratio).

    The modes take turns round by round on one loaded model (the micro-batch is
    switched in place), so a noisy neighbour slows them all alike.
    """
    loaded = load_pipeline("tiny", device)
    modes: list[tuple[str, int]] = [("sequential", loaded.micro_batch), ("one batch",
                                    loaded.micro_batch), ("one batch, micro-batch off", 0)]
    rows = []
    for size in sizes:
        requests = batching_requests(size)
        images = BATCH_REQUESTS * NUM_IMAGES
        timed: dict[str, list[float]] = {mode: [] for mode, _ in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode, _ in modes}
        for round_number in range(repeats + 1):  # round 0 warms up
            for mode, micro in modes:
                install_micro_batching(loaded.pipeline, micro)
                started, cpu_started = time.perf_counter(), time.process_time()
                run_round(mode, requests, device)
                if round_number:
                    timed[mode].append(time.perf_counter() - started)
                    cpu[mode].append(time.process_time() - cpu_started)
        install_micro_batching(loaded.pipeline, loaded.micro_batch)
        seconds = {mode: statistics.median(values) for mode, values in timed.items()}
        cpu_seconds = {mode: statistics.median(values) for mode, values in cpu.items()}
        for mode, _ in modes:
            rows.append((f"{size}x{size}", mode, f"{seconds[mode]:.3f}",
                         f"{images / seconds[mode]:.1f}",
                         f"{seconds['sequential'] / seconds[mode]:.2f}x",
                         f"{1000 * cpu_seconds[mode] / images:.1f}",
                         f"{cpu_seconds['sequential'] / cpu_seconds[mode]:.2f}x"))
    return rows


def print_batching(rows: list[tuple[str, ...]], device: str) -> None:
    print(f"\nCross-request batching: tiny model on {device}, {BATCH_REQUESTS} requests x "
          f"{NUM_IMAGES} images, {WORKLOADS['tiny'].steps} steps, PNGs included")
    header = (f"{'size':<9} {'mode':<28} {'s/round':>8} {'images/s':>9} {'vs seq':>7} "
              f"{'CPU ms/img':>10} {'CPU vs seq':>10}")
    print(header)
    print("-" * len(header))
    for size, mode, per_round, rate, ratio, cpu_ms, cpu_ratio in rows:
        print(f"{size:<9} {mode:<28} {per_round:>8} {rate:>9} {ratio:>7} {cpu_ms:>10} "
              f"{cpu_ratio:>10}")
    print("sequential: generate_images per request; one batch: generate_batch, one pipeline "
          "call, each image identical to its lone run (UNet micro-batch 4, VAE per image); "
          "micro-batch off: one forward for the whole batch, not pixel-identical. "
          "Wall: median of interleaved rounds; CPU: process time (all threads), steadier "
          "on a shared machine.")


# --- one job's start-up, split --------------------------------------------------------


def bench_startup(repeats: int) -> list[tuple[str, float]]:
    """Median seconds of each phase of ``python -m oscar_sd.service`` (tiny, from disk)."""
    from oscar_sd.service.tiny import build_tiny_pipeline

    env = {**os.environ, "PYTHONPATH": str(REPO), "OSCAR_SD_DEVICE": "cpu",
           "OSCAR_SD_MODEL_NAME": "tiny"}
    env.pop("OSCAR_SD_MICRO_BATCH", None)
    phases: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="oscar-sd-bench-") as work:
        folder = Path(work) / "tiny-model"
        build_tiny_pipeline().save_pretrained(folder)
        env["OSCAR_SD_MODEL"] = str(folder)
        request = GenerationRequest(prompt=PROMPT, seed=1, width=64, height=64, steps=2,
                                    guidance_scale=0.0, num_images=NUM_IMAGES)
        (Path(work) / "in").mkdir()
        input_file = Path(work) / "in" / "bench.json"
        input_file.write_text(json.dumps(request.to_payload()))

        def wall(command: list[str], extra: dict[str, str] | None = None) -> tuple[float, str]:
            started = time.perf_counter()
            done = subprocess.run(command, env={**env, **(extra or {})}, capture_output=True,
                                  text=True, check=True, cwd=work)
            return time.perf_counter() - started, done.stderr

        for _ in range(repeats):
            bare, _ = wall([sys.executable, "-c", "pass"])
            imported, _ = wall([sys.executable, "-c", "import oscar_sd.service"])
            out = Path(work) / "out"
            out.mkdir(exist_ok=True)
            total, log = wall([sys.executable, "-m", "oscar_sd.service"],
                              {"INPUT_FILE_PATH": str(input_file), "TMP_OUTPUT_DIR": str(out)})
            line = next(x for x in log.splitlines() if "Job timings (s):" in x)
            inside = json.loads(line.split("Job timings (s):", 1)[1])
            accounted = bare + (imported - bare) + sum(inside.values())
            for name, value in (
                ("interpreter start and exit (python -c pass)", bare),
                ("import oscar_sd.service", imported - bare),
                ("imports for generation (torch, diffusers)", inside["imports"]),
                ("weights from disk", inside["weights"]),
                ("move to the device", inside["to_device"]),
                ("generation (6 images, PNGs, zip)", inside["generate"]),
                ("the rest (marker, input, torch teardown)", total - accounted),
                ("total: python -m oscar_sd.service", total),
            ):
                phases.setdefault(name, []).append(value)
    return [(name, statistics.median(values)) for name, values in phases.items()]


def print_startup(rows: list[tuple[str, float]]) -> None:
    total = rows[-1][1]
    print("\nOne job's start-up: python -m oscar_sd.service, tiny model saved to a folder, cpu")
    header = f"{'phase':<46} {'seconds':>8} {'share':>6}"
    print(header)
    print("-" * len(header))
    for name, seconds in rows:
        print(f"{name:<46} {seconds:>8.3f} {seconds / total:>6.0%}")
    print("Medians of the runs; the worker reports its own phases (log line 'Job timings').")


# --- full-size models from configs, random weights ----------------------------------


def build_full_size(config: str, device: str, dtype: torch.dtype) -> Any:
    """An SD 1.5 or SD 2.1 (sd-turbo) pipeline with random weights, built on ``device``."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from oscar_sd.service.tiny import build_tiny_tokenizer

    if config == "sd15":
        unet_extra: dict[str, Any] = {"cross_attention_dim": 768, "attention_head_dim": 8}
        text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                              num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768)
        spacing = "leading"
    else:  # sd-turbo: the SD 2.1 architecture
        unet_extra = {"cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
                      "use_linear_projection": True}
        text = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                              num_hidden_layers=23, hidden_act="gelu", projection_dim=1024)
        spacing = "trailing"
    # Creating the weights on the device is much faster than on the CPU and moving them.
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            **unet_extra,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(text)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear",
                                       timestep_spacing=spacing, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tiny_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline = pipeline.to(device, dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def compile_pipeline(pipeline: Any) -> None:
    """torch.compile the UNet and the VAE decoder, the two that hold the FLOPs."""
    pipeline.unet.to(memory_format=torch.channels_last)
    pipeline.vae.to(memory_format=torch.channels_last)
    pipeline.unet = torch.compile(pipeline.unet, fullgraph=True)
    pipeline.vae.decode = torch.compile(pipeline.vae.decode)


def bench_full_size(config: str, device: str, dtype_name: str, compiled: bool,
                    repeats: int) -> list[Row]:
    dtype = DTYPES[dtype_name]
    workload = WORKLOADS[config]
    started = time.perf_counter()
    pipeline = build_full_size(config, device, dtype)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    build_seconds = time.perf_counter() - started
    peak = gpu_peak_tflops()
    clock = StepClock(device)

    def one_prompt() -> None:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(NUM_IMAGES)]
        with torch.inference_mode():
            pipeline(PROMPT, num_inference_steps=workload.steps,
                     guidance_scale=workload.guidance, width=workload.width,
                     height=workload.height, num_images_per_prompt=NUM_IMAGES,
                     generator=generators, output_type="pt", callback_on_step_end=step_end)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        clock.step()
        return tensors

    rows = []
    for mode in ("eager", "compiled") if compiled else ("eager",):
        if mode == "compiled":
            compile_pipeline(pipeline)
        warm_started = time.perf_counter()
        one_prompt()  # warm-up: cuDNN autotuning, and the compilation itself
        warm_seconds = time.perf_counter() - warm_started
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds, rates = [], []
        for _ in range(repeats):
            clock.start()
            one_prompt()
            seconds.append(time.perf_counter() - clock.started)
            rates.append(clock.iterations_per_second())
        per_prompt = statistics.median(seconds)
        tflop = workload.tflop_per_prompt()
        fraction = tflop / per_prompt / peak if peak else None
        load = build_seconds if mode == "eager" else warm_seconds
        rows.append(Row(config, device, dtype_name, mode, load, per_prompt,
                        statistics.median(rates), peak_memory_gib(device), tflop, fraction))
    return rows


# --- the table -------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = (f"{'config':<9} {'device':<6} {'dtype':<8} {'mode':<9} {'load s':>7} "
              f"{'s/prompt':>9} {'it/s':>8} {'peak GiB':>9} {'TFLOP':>7} {'of peak':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        tflop = f"{row.tflop:.1f}" if row.tflop is not None else "-"
        fraction = f"{row.peak_fraction:.1%}" if row.peak_fraction is not None else "-"
        print(f"{row.config:<9} {row.device:<6} {row.dtype:<8} {row.mode:<9} "
              f"{row.load_seconds:>7.2f} {row.seconds_per_prompt:>9.3f} "
              f"{row.iterations_per_second:>8.2f} {row.peak_memory_gib:>9.2f} "
              f"{tflop:>7} {fraction:>8}")
    print(f"\n{NUM_IMAGES} images per prompt; s/prompt and it/s: median of the timed runs.")
    print("load s: tiny = the service's load_pipeline; full-size = building random weights "
          "(eager row) or the warm-up run that compiles (compiled row).")
    print("peak GiB: CUDA max allocated on a GPU, else the process's peak RSS.")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}, bf16 dense peak "
              f"{gpu_peak_tflops() or 'unknown'} TFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--config", choices=sorted(WORKLOADS), default="tiny")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: fp16 on cuda, fp32 on cpu (tiny: the service's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="full-size configs: also time with torch.compile")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row (median)")
    parser.add_argument("--batch-sizes", default="64,256",
                        help="tiny: image sizes of the batching table (comma-separated)")
    arguments = parser.parse_args()

    torch.manual_seed(0)
    if arguments.config == "tiny":
        rows = bench_tiny(arguments.device, arguments.repeats)
        print_table(rows)
        sizes = tuple(int(size) for size in arguments.batch_sizes.split(",") if size)
        print_batching(bench_batching(arguments.device, max(arguments.repeats, 5), sizes),
                       arguments.device)
        print_startup(bench_startup(arguments.repeats))
        return
    dtype = arguments.dtype or ("fp16" if arguments.device.startswith("cuda") else "fp32")
    rows = bench_full_size(arguments.config, arguments.device, dtype, arguments.compile,
                           arguments.repeats)
    print_table(rows)


if __name__ == "__main__":
    main()
