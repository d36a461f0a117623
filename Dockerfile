# syntax=docker/dockerfile:1
#
# predictive-scaler container image.
#
#   docker build -t predictive-scaler:0.1.0 .
#   docker run --rm predictive-scaler:0.1.0 validate-config /config/config.yaml
#
# Two stages: the builder makes a wheel of this project and installs it with its dependencies
# into a virtual environment; the final stage copies only that environment onto a clean slim
# Python image (no compilers, no pip, no build files), and runs it as a numeric non-root user.
# Every dependency ships manylinux wheels for amd64 and arm64, so no compiler is needed in
# either stage; the only network use is PyPI, from the builder.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the wheel needs (see .dockerignore): metadata first, then the two packages.
# (README.md* : the project's readme is optional for the build; the glob may match nothing.)
COPY pyproject.toml README.md* ./
COPY predictive_scaler/ ./predictive_scaler/
COPY models/ ./models/

# Build the wheel, install it and its dependencies (binary wheels preferred) into the venv,
# check that the console script starts, then drop pip and setuptools from the venv: the final
# image never installs anything. Installed modules are byte-compiled by pip here, since the
# root filesystem is read-only at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/python -m pip install --prefer-binary /wheels/*.whl \
 && /opt/venv/bin/predictive-scaler --help > /dev/null \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="predictive-scaler" \
      org.opencontainers.image.description="Forecasts GPU LLM KV-cache demand and raises HPA minReplicas one warm-up ahead" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster.
# MPLCONFIGDIR / HOME: matplotlib (used by `backtest --plot`) and any library that wants a
# cache directory write under /tmp, the only writable path (an emptyDir in deploy/).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp

COPY --from=builder /opt/venv /opt/venv

# 65532: the conventional "nonroot" uid/gid (distroless); no entry in /etc/passwd is needed.
USER 65532:65532
WORKDIR /tmp

# /metrics, /healthz, /readyz
EXPOSE 8080

ENTRYPOINT ["predictive-scaler"]
CMD ["run", "--config-map", "predictive-scaler/predictive-scaler-config"]
