# syntax=docker/dockerfile:1.7
#
# Raman identification service: four images from one file (pick one with --target).
#
#   api-cpu     FastAPI + onnxruntime (CPU), python:3.12-slim.                 No torch.
#   api-gpu     FastAPI + onnxruntime-gpu 1.31.1 on nvidia/cuda 13 + cuDNN 9.  No torch.
#   worker-gpu  fine-tune worker: torch 2.13.0 from PyPI (CUDA 13 wheels), python:3.12-slim.
#   worker-cpu  fine-tune worker: torch 2.13.0+cpu from the PyTorch CPU index.
#
#   docker build --target api-gpu    -t drcnn-raman/api:0.1.0-gpu .
#   docker build --target api-cpu    -t drcnn-raman/api:0.1.0-cpu .
#   docker build --target worker-gpu -t drcnn-raman/worker:0.1.0-gpu .
#   docker build --target worker-cpu -t drcnn-raman/worker:0.1.0-cpu .
#
# Python dependencies are exact pins in deploy/requirements/ (regenerate and check them with
# deploy/tools/pins.py); everything is installed from wheels only. All images run as uid 10001,
# keep models and fine-tune jobs on volumes (/data/models, /data/jobs) and contain no secrets:
# API keys come from RAMAN_API_KEYS at run time. See docs/deploy.md.

# Base images, pinned by tag. For byte-for-byte reproducible builds pass digests, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# onnxruntime-gpu 1.31.1 is built for CUDA 13.x and cuDNN 9.x (its wheel asks for
# nvidia-cuda-runtime ~=13.0, nvidia-cufft ~=12.0, nvidia-curand ~=10.0, nvidia-cudnn-cu13 ~=9.0):
# the cudnn "runtime" flavour of nvidia/cuda 13.0 carries exactly those libraries.
# Host requirement: an NVIDIA driver that supports CUDA 13 (R580 or newer).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
# Must equal the torch pin of deploy/requirements/worker.txt (deploy/validate.sh checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Empty: no kubectl in the API images. RAMAN_FINETUNE_WORKER=kubernetes (one Kubernetes Job per
# fine-tune, deploy/finetune) needs it: --build-arg KUBECTL_VERSION=v1.32.4 (checksum-verified).
ARG KUBECTL_VERSION=""

# ---------------------------------------------------------------------------------------------
# The project itself as a wheel (pure Python; the same wheel goes into every image).
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY deploy/requirements/build.txt /tmp/build.txt
RUN pip install --only-binary=:all: -r /tmp/build.txt
# .dockerignore lets only the sources through (no data, no models, no venvs, no .git).
COPY . /src
RUN pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
    && ls -l /wheels

# ---------------------------------------------------------------------------------------------
# CPU runtime base: Debian slim + tini + an unprivileged user that owns the data volumes.
FROM ${PYTHON_IMAGE} AS cpu-base
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 raman \
    && useradd --system --uid 10001 --gid raman --home-dir /home/raman --create-home \
       --shell /usr/sbin/nologin raman \
    && mkdir -p /data/models /data/jobs /opt/raman \
    && chown -R raman:raman /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# GPU runtime base: CUDA 13 + cuDNN 9 runtime libraries, Python 3.12 from Ubuntu 24.04.
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3.12 python3.12-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 raman \
    && useradd --system --uid 10001 --gid raman --home-dir /home/raman --create-home \
       --shell /usr/sbin/nologin raman \
    && mkdir -p /data/models /data/jobs /opt/raman \
    && chown -R raman:raman /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# ---------------------------------------------------------------------------------------------
# Virtual environments, built on the base whose Python they will run on.
FROM cpu-base AS venv-api-cpu
COPY deploy/requirements/api-cpu.txt /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && pip install --only-binary=:all: --no-deps -r /tmp/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && python -c "import service, spectra"

FROM gpu-base AS venv-api-gpu
COPY deploy/requirements/api-gpu.txt /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN python3.12 -m venv /opt/venv \
    && pip install --only-binary=:all: --no-deps -r /tmp/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && python -c "import service, spectra"

FROM cpu-base AS venv-worker-gpu
COPY deploy/requirements/worker.txt /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && pip install --only-binary=:all: --no-deps -r /tmp/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && pip check \
    && python -c "import finetune, training, torch"

FROM cpu-base AS venv-worker-cpu
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
COPY deploy/requirements/worker-cpu.txt /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && pip install --only-binary=:all: --no-deps --index-url "${TORCH_CPU_INDEX}" \
       "torch==${TORCH_VERSION}+cpu" \
    && pip install --only-binary=:all: --no-deps -r /tmp/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && pip check \
    && python -c "import finetune, training, torch; assert not torch.cuda.is_available()"

# Optional kubectl for the API images (see KUBECTL_VERSION); /out stays empty without it.
FROM cpu-base AS kubectl
ARG KUBECTL_VERSION
ARG TARGETARCH
RUN mkdir -p /out \
    && if [ -n "${KUBECTL_VERSION}" ]; then \
         python -c "import hashlib, sys, urllib.request as u; url = sys.argv[1]; \
data = u.urlopen(url, timeout=120).read(); \
want = u.urlopen(url + '.sha256', timeout=60).read().split()[0].decode(); \
assert hashlib.sha256(data).hexdigest() == want, 'kubectl checksum mismatch'; \
open('/out/kubectl', 'wb').write(data)" \
           "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH:-amd64}/kubectl" \
         && chmod 0755 /out/kubectl; \
       fi

# ---------------------------------------------------------------------------------------------
# Shared runtime pieces: the default model (seeded into the model-store volume on start when
# that version is not there yet), the entry point, the health check.
FROM scratch AS runtime-files
COPY models/ /opt/raman/default-models/
COPY deploy/docker/entrypoint.sh deploy/docker/seed_models.py deploy/docker/healthcheck.py \
     /opt/raman/bin/
COPY deploy/finetune/job.yaml /opt/raman/finetune/job.yaml

# ---------------------------------------------------------------------------------------------
FROM cpu-base AS api-cpu
COPY --from=venv-api-cpu /opt/venv /opt/venv
COPY --from=runtime-files /opt/raman /opt/raman
COPY --from=kubectl /out/ /usr/local/bin/
ENV RAMAN_MODEL_STORE=/data/models \
    RAMAN_JOB_STORE=/data/jobs \
    RAMAN_PROVIDERS=CPUExecutionProvider \
    RAMAN_HOST=0.0.0.0 \
    RAMAN_PORT=8000 \
    RAMAN_GRACEFUL_SHUTDOWN_S=20 \
    RAMAN_FINETUNE_WORKER=external \
    RAMAN_FINETUNE_K8S_TEMPLATE=/opt/raman/finetune/job.yaml \
    HOME=/tmp
VOLUME ["/data/models", "/data/jobs"]
USER 10001:10001
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/opt/raman/bin/healthcheck.py", "ready"]
ENTRYPOINT ["tini", "--", "sh", "/opt/raman/bin/entrypoint.sh"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]

FROM gpu-base AS api-gpu
COPY --from=venv-api-gpu /opt/venv /opt/venv
COPY --from=runtime-files /opt/raman /opt/raman
COPY --from=kubectl /out/ /usr/local/bin/
ENV RAMAN_MODEL_STORE=/data/models \
    RAMAN_JOB_STORE=/data/jobs \
    RAMAN_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider \
    RAMAN_HOST=0.0.0.0 \
    RAMAN_PORT=8000 \
    RAMAN_GRACEFUL_SHUTDOWN_S=20 \
    RAMAN_FINETUNE_WORKER=external \
    RAMAN_FINETUNE_K8S_TEMPLATE=/opt/raman/finetune/job.yaml \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp
VOLUME ["/data/models", "/data/jobs"]
USER 10001:10001
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/opt/raman/bin/healthcheck.py", "ready"]
ENTRYPOINT ["tini", "--", "sh", "/opt/raman/bin/entrypoint.sh"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]

FROM cpu-base AS worker-gpu
COPY --from=venv-worker-gpu /opt/venv /opt/venv
COPY --from=runtime-files /opt/raman /opt/raman
# torch's pip wheels bring CUDA 13 and cuDNN; the NVIDIA container runtime adds the driver.
ENV RAMAN_MODEL_STORE=/data/models \
    RAMAN_JOB_STORE=/data/jobs \
    RAMAN_PROVIDERS=CPUExecutionProvider \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg
VOLUME ["/data/models", "/data/jobs"]
USER 10001:10001
WORKDIR /data
# The worker serves no HTTP; the orchestrator restarts it when the process exits.
HEALTHCHECK NONE
ENTRYPOINT ["tini", "--", "sh", "/opt/raman/bin/entrypoint.sh"]
CMD ["python", "-m", "finetune.worker"]

FROM cpu-base AS worker-cpu
COPY --from=venv-worker-cpu /opt/venv /opt/venv
COPY --from=runtime-files /opt/raman /opt/raman
ENV RAMAN_MODEL_STORE=/data/models \
    RAMAN_JOB_STORE=/data/jobs \
    RAMAN_PROVIDERS=CPUExecutionProvider \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg
VOLUME ["/data/models", "/data/jobs"]
USER 10001:10001
WORKDIR /data
HEALTHCHECK NONE
ENTRYPOINT ["tini", "--", "sh", "/opt/raman/bin/entrypoint.sh"]
CMD ["python", "-m", "finetune.worker"]
