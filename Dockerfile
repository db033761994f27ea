# Sift: multi-stage image. The runtime stage holds the server and a bundle only: no torch, no training code.
#
#   docker build -t sift .                                   # trains the tiny default bundle in the build stage
#   docker build --build-arg BUNDLE=bundles/default -t sift .  # ships a bundle from the build context instead
#
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS may be passed as build arguments for a private index or a
# local CPU torch wheel; they only affect the build stage's pip and are not kept in the image.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG BUNDLE=""
ARG PRESET=tiny
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /src
COPY . /src
RUN if [ -n "$BUNDLE" ] && [ -f "/src/$BUNDLE/manifest.json" ]; then \
        cp -r "/src/$BUNDLE" /bundle; \
    else \
        python -m venv /train && /train/bin/pip install ".[train]" \
        && /train/bin/python -m training --preset "$PRESET" --output /bundle; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    SIFT_BUNDLE=/bundle SIFT_HOST=0.0.0.0 SIFT_PORT=50051 SIFT_METRICS_PORT=9095
WORKDIR /app
# Only the server package: setuptools finds nothing else here, so no training or benchmark code is installed.
COPY pyproject.toml README.md /app/
COPY server /app/server
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
RUN pip install /app && rm -rf /app/server /root/.cache \
    && rm -f /usr/local/bin/sift-train /usr/local/bin/sift-bench \
    && useradd --system --uid 10001 --no-create-home sift
COPY --from=build --chown=10001:10001 /bundle /bundle
USER 10001
EXPOSE 50051 9095
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["python", "-m", "server.healthcheck"]
ENTRYPOINT ["python", "-m", "server"]
