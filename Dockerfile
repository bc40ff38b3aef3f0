# The codec server on a PyTorch CUDA runtime image, with the bundled model baked in.
#
#   docker build -t codec-server .
#   docker run --gpus all -p 8000:8000 codec-server
#
# One process per GPU: on a machine with several, run one container per GPU
# (`--gpus device=0`, `--gpus device=1`, ...) behind a load balancer. To serve another checkpoint,
# mount it and point the server at it:
#   docker run --gpus all -p 8000:8000 -v "$PWD/run:/models:ro" \
#       -e CODEC_CHECKPOINT=/models/best.safetensors codec-server
# Settings are CODEC_* environment variables (server/settings.py), e.g. CODEC_HALF=true,
# CODEC_API_KEY=..., CODEC_MAX_BATCH_SIZE=32.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CODEC_DEVICE=auto

WORKDIR /app
COPY pyproject.toml README.md ./
COPY codec/ codec/
COPY server/ server/
# Keep the image's CUDA build of torch: pin it (and torchaudio, if the image has it) while
# installing the package with its server extra.
RUN pip list --format=freeze | grep -E '^(torch|torchaudio)==' > /tmp/constraints.txt \
    && pip install --no-cache-dir --constraint /tmp/constraints.txt ".[server]" \
    && rm /tmp/constraints.txt \
    && python -c "import codec.api as c; assert c.BUNDLED_CHECKPOINT.exists(), 'no bundled model in codec/assets'"

RUN groupadd --gid 10001 codec && useradd --create-home --uid 10001 --gid 10001 codec
USER 10001:10001

EXPOSE 8000
# Ready once the model is loaded and warmed up; the start period covers that load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

# The same command as `make serve`. On SIGTERM (docker stop) readiness fails, requests in flight
# finish, then the process exits; give it time with `docker stop -t 60`.
CMD ["uvicorn", "--factory", "server.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
