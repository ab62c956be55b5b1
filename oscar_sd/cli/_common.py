"""What every command shares: exit codes, the usage error, option names."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2  # also argparse's own code for a bad command line
EXIT_FAILURE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 done, 2 usage or credentials, 3 cluster or job failure, "
    "130 interrupted (Ctrl-C)"
)


DEFAULT_FDL = Path("manifests") / "stable-diffusion.yaml"
#: ``deploy --pair``: the per-job service, then the warm service that spills over to it.
PAIR_FDLS = (DEFAULT_FDL, Path("manifests") / "stable-diffusion-warm.yaml")

#: The command-line option behind each field of a generation request, for error messages.
REQUEST_OPTIONS = {
    "prompt": "the prompt",
    "negative_prompt": "--negative",
    "seed": "--seed",
    "steps": "--steps",
    "guidance_scale": "--guidance",
    "width": "--size",
    "height": "--size",
    "num_images": "-n",
}


class UsageError(Exception):
    """The command line or the environment is missing something; exit code 2."""
