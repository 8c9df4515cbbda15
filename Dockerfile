# The operator image: the operator alone, its dependencies installed from requirements/image.lock (pinned, with
# hashes: `make lock`); the emulator, the dev control plane and the demo stay out (.dockerignore). `make image`.
# tests/integration/test_image_install.py does what this file does, without Docker, and runs the result.
#
# The base is python:3.11-slim pinned by the digest of its multi-platform index (linux/amd64 and linux/arm64 among
# others): Python 3.11.15 on Debian trixie, built 2026-08-05, as docker-library/repo-info lists it
# (repos/python/remote/3.11-slim.md at commit 2477d553d2fdfa57b4ec11f63c8376eca8b7a253). To refresh: take the
# "Digest:" of `docker buildx imagetools inspect python:3.11-slim` (or that file's newest `docker pull
# python@sha256:...` line), replace it here and in the comment, then `make image`.
ARG BASE_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

FROM ${BASE_IMAGE} AS build
# No pip cache in any layer; .pyc files that check their source's hash, not its mtime (same bytes on every build).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SOURCE_DATE_EPOCH=0
# A venv without pip: the base image's pip installs into it, so none is copied into the final image.
RUN python -m venv --without-pip /opt/tgi-operator
COPY requirements/image.lock /src/requirements/image.lock
# Wheels only (slim has no compiler); hashes checked; exactly the lock, nothing resolved here.
RUN pip --python /opt/tgi-operator/bin/python install --require-hashes --only-binary=:all: --no-deps \
      -r /src/requirements/image.lock
COPY pyproject.toml README.md /src/
COPY tgi_operator /src/tgi_operator
# The project itself, built with the base image's own setuptools (no unpinned build dependencies downloaded).
RUN pip wheel --no-build-isolation --no-deps --wheel-dir /tmp/wheels /src \
 && pip --python /opt/tgi-operator/bin/python install --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels

FROM ${BASE_IMAGE}
COPY --from=build /opt/tgi-operator /opt/tgi-operator
ENV PATH=/opt/tgi-operator/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric and with no passwd entry, like the arbitrary UID a cluster may impose: everything above is root-owned
# and world-readable, and the operator writes nothing to disk (readOnlyRootFilesystem in manifests/base).
USER 65532:65532
ENTRYPOINT ["tgi-operator"]
# As manifests/base/deployment.yaml passes them.
CMD ["run", "--all-namespaces", "--leader-elect", "--liveness-port=8080", "--metrics-port=9090", "--json-logs"]
