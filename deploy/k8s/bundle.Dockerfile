# A bundle image: only a Sift artifact bundle (and busybox's `sh` and `cp` for the init container that
# copies it into the pod; deploy/k8s/deployment.yaml). Build it with the bundle directory as the context:
#
#   docker build -f deploy/k8s/bundle.Dockerfile \
#     -t sift-bundle:$(python3 -c 'import json; print(json.load(open("bundles/default/manifest.json"))["bundle_version"])') \
#     bundles/default
#
# BASE may be any image with `sh` and `cp` (without Docker Hub, e.g. the local python:3.11-slim that
# deploy/docker/local-base-image.sh makes, with buildah's --pull=never).
ARG BASE=busybox:1.36
FROM ${BASE}
COPY --chown=10001:10001 . /sift-bundle/
# Fail the build, not the rollout, when the context is not a bundle.
RUN test -f /sift-bundle/manifest.json
USER 10001
