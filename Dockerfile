# predictive-scaler container image.
#
#   docker build -t predictive-scaler:0.1.0 .
#   docker run --rm predictive-scaler:0.1.0 validate-config /config/config.yaml
#
# Two stages: the builder makes a wheel of this project and installs it with its dependencies
# into a virtual environment; the final stage copies only that environment onto a clean slim
# Python image (no compilers, no pip, no build files), and runs it as a numeric non-root user.
# Every dependency ships manylinux wheels for amd64 and arm64, so no compiler is needed in
# either stage; the only network use is PyPI, from the builder. Every version comes from
# constraints.txt (regenerate it with `bash .ci/lock`), so two builds install the same thing.
# No `# syntax=` line: BuildKit would pull a frontend image from a registry, which fails on an
# air-gapped builder; the built-in frontend understands everything used here.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the wheel needs (see .dockerignore): metadata and the lock first, then the two
# packages. (README.md* : the project's readme is optional for the build; the glob may match
# nothing.) Plotting (`[plot]`, matplotlib) is not installed: `backtest --plot` is for laptops.
COPY pyproject.toml constraints.txt LICENSE README.md* ./
COPY predictive_scaler/ ./predictive_scaler/
COPY models/ ./models/

# Build the wheel, install it and its dependencies (binary wheels only, versions from the lock)
# into the venv, drop the libraries' own test suites (numpy, scipy, pandas and statsmodels
# ship about 120 MB of them; nothing imports them at run time), check that the console script
# and the model stack import, then drop pip and setuptools from the venv: the final image
# never installs anything. Installed modules are byte-compiled by pip here, since the root
# filesystem is read-only at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/python -m pip install --only-binary :all: -c constraints.txt /wheels/*.whl \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && /opt/venv/bin/predictive-scaler --help > /dev/null \
 && /opt/venv/bin/python -c 'import models, statsmodels.tsa.api, predictive_scaler.runtime' \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="predictive-scaler" \
      org.opencontainers.image.description="Forecasts GPU LLM KV-cache demand and raises HPA minReplicas one warm-up ahead" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster.
# MPLCONFIGDIR / HOME: matplotlib (when someone adds the [plot] extra) and any library that
# wants a cache directory write under /tmp, the only writable path (an emptyDir in deploy/).
# BLAS/OpenMP threads: one by default, so numpy/scipy never start a thread per *node* CPU
# under a 2-CPU limit; deploy/base/deployment.yaml sets them from the container's CPU limit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/LICENSE /licenses/LICENSE

# 65532: the conventional "nonroot" uid/gid (distroless); no entry in /etc/passwd is needed.
USER 65532:65532
WORKDIR /tmp

# /metrics, /healthz, /readyz
EXPOSE 8080

ENTRYPOINT ["predictive-scaler"]
CMD ["run", "--config-map", "predictive-scaler/predictive-scaler-config"]
