#!/bin/sh
# The command of each replica of the warm service (stable-diffusion-warm.yaml): an OSCAR
# exposed service runs this script as the container's command (expose.default_command
# false, grycap/oscar pkg/types/expose.go). `exec`, so Kubernetes' SIGTERM reaches the
# worker itself: it finishes the batch that runs, gives back what it claimed, and exits.
set -eu
echo "oscar-sd: warm replica on port ${OSCAR_SD_PORT:-8080}, reading ${OSCAR_SD_INPUT_PATH:-<unset>}"
exec python -m oscar_sd.service --warm
