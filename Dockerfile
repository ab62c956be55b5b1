# syntax=docker/dockerfile:1
# The images of oscar-sd, one target each:
#
#   docker build --target app -t ghcr.io/oscar-sd/app:latest .
#       the web page and CLI, talking to a cluster (manifests/deploy_gradio.yaml);
#       no torch, no GPU stack.
#   docker build --target service -t ghcr.io/oscar-sd/stable-diffusion:latest .
#       the Stable Diffusion worker of each OSCAR job (manifests/stable-diffusion.yaml),
#       model weights included; build-arg OSCAR_SD_MODEL picks the hub model.
#
# Stages: base (Python, a virtualenv, the non-root user; shared by every target)
#   -> app (the project without its `local` extra)
#   -> service-deps (torch with CUDA, diffusers, the project with its `local` extra)
#   -> model (downloads the weights at build time) -> service (deps + weights).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- base: shared by every target ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && useradd --create-home --uid 1000 --user-group oscar
WORKDIR /opt/oscar-sd

# --- app: the web page in front of a cluster ---------------------------------------
FROM base AS app
COPY pyproject.toml README.md ./
COPY oscar_sd ./oscar_sd
# The base install has no torch: the page hands generation to the cluster. The
# user id matches the Deployment's runAsUser; its home is the writable /tmp.
# DL3013: the project's own pyproject.toml pins its dependencies.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir . \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp oscar-app
ENV port=7000 \
    HOME=/tmp \
    GRADIO_TEMP_DIR=/tmp/gradio \
    GRADIO_ANALYTICS_ENABLED=False
EXPOSE 7000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('port', '7000') + '/healthz', timeout=4)"]
USER 10001:10001
CMD ["oscar-sd", "serve"]

# --- service-deps: the generation stack -------------------------------------------
FROM base AS service-deps
# The CUDA build of torch. Its wheels carry the CUDA runtime, cuBLAS and cuDNN as
# pip packages, so no nvidia/cuda base image is needed: the GPU node supplies only
# the driver, through the NVIDIA container runtime.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY oscar_sd ./oscar_sd
# DL3013 takes ".[local]" for an unpinned package: the project's own pyproject.toml
# pins its dependencies (diffusers, transformers, ...).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[local]"

# --- model: the weights, fetched once at build time --------------------------------
FROM service-deps AS model
ARG OSCAR_SD_MODEL=stabilityai/sd-turbo
RUN python -m oscar_sd.service.download "${OSCAR_SD_MODEL}" "/opt/models/${OSCAR_SD_MODEL}"

# --- service: what each OSCAR job runs ---------------------------------------------
FROM service-deps AS service
ARG OSCAR_SD_MODEL=stabilityai/sd-turbo
COPY --from=model /opt/models /opt/models
COPY --chmod=755 manifests/script.sh /opt/oscar-sd/script.sh
# Jobs read the baked-in folder and never reach for the hub.
ENV OSCAR_SD_MODEL=/opt/models/${OSCAR_SD_MODEL} \
    OSCAR_SD_MODEL_NAME=${OSCAR_SD_MODEL} \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 1000:1000
# OSCAR runs the FDL's script in place of this; `docker run` with INPUT_FILE_PATH
# and TMP_OUTPUT_DIR set runs one job by hand.
CMD ["/opt/oscar-sd/script.sh"]
