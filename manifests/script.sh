#!/bin/sh
# The command of each job of the stable-diffusion OSCAR service (stable-diffusion.yaml).
#
# OSCAR's supervisor has downloaded the input object to $INPUT_FILE_PATH and uploads
# whatever is left in $TMP_OUTPUT_DIR. The worker writes <job>.zip or <job>.error.json
# there; its exit code (0 success, 2 invalid request, 3 model load, 4 generation,
# 5 environment, 1 other) becomes the job's status.
set -eu

echo "oscar-sd: job input ${INPUT_FILE_PATH:-<unset>}, output folder ${TMP_OUTPUT_DIR:-<unset>}"
# exec: the worker's exit code is the job's, and it receives the pod's signals directly.
exec python -m oscar_sd.service
