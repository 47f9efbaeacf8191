# One image for every service of the project; the command picks which one runs:
#   docker run IMAGE                                  -> entitlement-sidecar (the default)
#   docker run IMAGE entitlement-upstream             (also entitlement-persistent-cache, entitlement-demo)
# Build, run and port-80 notes: docs/image.md. Classic instructions only (no BuildKit syntax),
# so the legacy builder and any BuildKit build it the same way.

# ---------------------------------------------------------------- builder: the locked venv
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1

# /opt/build: pip + setuptools (from the lock) to build our wheel and to install.
# /opt/venv: what ships; made without pip, so the final stage has no installer at all.
RUN python -m venv /opt/build \
 && python -m venv --without-pip /opt/venv

WORKDIR /src
COPY requirements/build.txt requirements/runtime.txt requirements/
# Third-party packages first (their own layer: it only changes with the lock), hash-checked,
# nothing resolved. The builder's pip installs into the runtime venv through --python.
RUN /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.txt \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
        -r requirements/runtime.txt

COPY pyproject.toml README.md ./
COPY entitlements entitlements
COPY sidecar sidecar
COPY upstream upstream
COPY persistent_cache persistent_cache
COPY demo demo
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /wheels/*.whl \
 && test ! -e /opt/venv/bin/pip \
 && /opt/venv/bin/python -c "import sidecar.main, upstream.main, persistent_cache.main, demo.main"

# ---------------------------------------------------------------- final: runtime only
FROM python:3.11-slim

ARG VERSION=0+unknown
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="entitlement-sidecar" \
      org.opencontainers.image.description="Stigg-compatible entitlement sidecar, its persistent cache and reference upstream (the command picks the service)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/entitlement-sidecar/entitlement-sidecar" \
      org.opencontainers.image.url="https://github.com/entitlement-sidecar/entitlement-sidecar" \
      org.opencontainers.image.documentation="https://github.com/entitlement-sidecar/entitlement-sidecar/blob/main/docs/image.md" \
      org.opencontainers.image.vendor="entitlement-sidecar contributors"

# The real python:3.11-slim ships pip, setuptools and wheel in its system Python: take them out
# too, so the image holds no installer at all (the venv never had one).
RUN if python -m pip --version > /dev/null 2>&1; then \
      python -m pip uninstall --yes pip setuptools wheel; \
    fi

ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Owned by root and read-only to the service: nothing in the image is writable at run time.
COPY --from=builder /opt/venv /opt/venv

# The only writable place the services need is /tmp (mount a tmpfs with a read-only root).
WORKDIR /tmp
USER 65532:65532

# 80: the sidecar's gRPC port (see docs/image.md for binding it without root);
# 8080: the sidecar's HTTP side port (/livez, /readyz, /metrics).
EXPOSE 80 8080

# Probes whichever of our services runs as PID 1 (its own side port, its own env settings).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["entitlement-sidecar", "healthcheck", "--service", "auto"]

CMD ["entitlement-sidecar"]
