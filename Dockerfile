# Sift: multi-stage image. The runtime stage holds the server and a bundle only: no torch, no training code.
#
#   docker build -t sift .                                   # trains the tiny default bundle in the build stage
#   docker build --build-arg BUNDLE=bundles/default -t sift .  # ships a bundle from the build context instead
#
# Offline with buildah against a local python:3.11-slim (deploy/docker/README.md):
#   buildah bud --isolation chroot --pull=never --format docker --build-arg BUNDLE=bundles/default \
#     --secret id=pipcert,src=/etc/ssl/certs/ca-certificates.crt -t sift .
#
# pip's settings reach both stages as optional build secrets (`--secret` of docker buildx/BuildKit and of
# buildah), mounted under /run/secrets only while pip runs: never in a layer, the environment or the history.
#   --secret id=pipconf,src=FILE   a pip configuration file (index-url with credentials, timeout, ...)
#   --secret id=pipcert,src=FILE   a CA bundle for the index (a private CA, a TLS-intercepting proxy)
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS may be passed as build arguments for a private index or a
# local CPU torch wheel; they only affect the build's pip and are not kept in the image's environment (put
# credentials in the pipconf secret: build arguments may show in the image history).

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
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipcert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -f /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi; \
    if [ -n "$BUNDLE" ]; then \
        test -f "/src/$BUNDLE/manifest.json" \
            || { echo "BUNDLE=$BUNDLE: no manifest.json at that path in the build context" >&2; exit 1; }; \
        cp -r "/src/$BUNDLE" /bundle; \
    else \
        python -m venv /train && /train/bin/pip install ".[train]" \
        && /train/bin/python -m training --preset "$PRESET" --output /bundle; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
# HOME: user 10001 has no home directory; onnxruntime looks there for a cache at start.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    SIFT_BUNDLE=/bundle SIFT_HOST=0.0.0.0 SIFT_PORT=50051 SIFT_METRICS_PORT=9095
WORKDIR /app
# Only the server package: setuptools finds nothing else here, so no training or benchmark code is installed.
COPY pyproject.toml README.md /app/
COPY server /app/server
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
# The sources and pip's in-tree build leftovers (build/, *.egg-info) go: only the installed package stays.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipcert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -f /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi; \
    pip install /app && rm -rf /app/server /app/build /app/*.egg-info /root/.cache \
    && rm -f /usr/local/bin/sift-train /usr/local/bin/sift-bench \
    && useradd --system --uid 10001 --no-create-home sift
COPY --from=build --chown=10001:10001 /bundle /bundle
USER 10001
EXPOSE 50051 9095
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["python", "-m", "server.healthcheck"]
ENTRYPOINT ["python", "-m", "server"]
