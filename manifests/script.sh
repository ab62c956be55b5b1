#!/bin/sh
# The command of each job of the stable-diffusion OSCAR service (stable-diffusion.yaml).
#
# OSCAR's supervisor has downloaded the input object to $INPUT_FILE_PATH and uploads
# whatever is left in $TMP_OUTPUT_DIR once this script ends. The worker writes <job>.zip
# or <job>.error.json there; its exit code (0 success, 2 invalid request, 3 model load,
# 4 generation, 5 environment, 1 other) becomes this script's.
#
# faas-supervisor never looks at that exit code: the job ends Succeeded whatever happens.
# So when the worker leaves neither file (python missing, a crash before it could write,
# killed for memory), this script writes <job>.error.json itself, and the app fails the
# request at once instead of at its deadline.
set -u

echo "oscar-sd: job input ${INPUT_FILE_PATH:-<unset>}, output folder ${TMP_OUTPUT_DIR:-<unset>}"
job=$(basename "${INPUT_FILE_PATH:-}")
job=${job%.*}

python -m oscar_sd.service &
worker=$!
# Not exec: this shell must outlive the worker to report its death. It passes the
# pod's stop signal on, so the worker still stops cleanly.
trap 'kill -TERM "$worker" 2>/dev/null' TERM INT
wait "$worker"
code=$?
# A trapped signal ends `wait` early: wait again for the worker's own exit status.
while kill -0 "$worker" 2>/dev/null; do
    wait "$worker"
    code=$?
done

out=${TMP_OUTPUT_DIR:-}
if [ -n "$job" ] && [ -n "$out" ] && [ -d "$out" ] \
    && [ ! -e "$out/$job.zip" ] && [ ! -e "$out/$job.error.json" ]; then
    case $code in
        126 | 127) reason="python could not be started (exit code $code): the service image lacks the worker" ;;
        137) reason="the worker was killed (signal 9: out of memory, or the pod was evicted)" ;;
        1[3-9][0-9] | 2[0-9][0-9]) reason="the worker was stopped by signal $((code - 128))" ;;
        *) reason="the worker exited with code $code without writing a result" ;;
    esac
    echo "oscar-sd: $reason; writing $job.error.json" >&2
    printf '{"error": "The job failed: %s. The job'"'"'s log in OSCAR has the details.", "type": "WorkerCrashed", "exit_code": %d}\n' \
        "$reason" "$code" > "$out/$job.error.json"
fi
exit "$code"
