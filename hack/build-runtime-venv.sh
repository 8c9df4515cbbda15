#!/usr/bin/env bash
# The operator's runtime packages as the image installs them: requirements/image.lock with --require-hashes, wheels
# only, no extras (so no `kubernetes`, which kopf would import when present). Built once into a venv cached outside
# the repo, keyed by the lock's hash; prints the venv's python. `make bench` runs the operator with it (the code
# comes from the checkout through PYTHONPATH), so its CPU and RSS are the image's, not the dev venv's.
#   - TGI_RUNTIME_PYTHON naming an executable: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
#   - PYTHON: the interpreter to base the venv on, and whose pip installs into it (default python3; 3.11, the image's).
set -euo pipefail
if [[ -n "${TGI_RUNTIME_PYTHON:-}" ]]; then
  [[ -x "$TGI_RUNTIME_PYTHON" ]] || { echo "TGI_RUNTIME_PYTHON=$TGI_RUNTIME_PYTHON is not an executable file" >&2; exit 1; }
  echo "$TGI_RUNTIME_PYTHON"; exit 0
fi
lock="$(cd "$(dirname "$0")/.." && pwd)/requirements/image.lock"
python=${PYTHON:-python3}
# Keyed by the interpreter (its real path and version: a reinstalled Python gets a new venv) and the lock.
key=$( { "$python" -c 'import os, sys; print(os.path.realpath(sys._base_executable), sys.version)'; cat "$lock"; } \
  | sha256sum | cut -c1-12)
venv="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/runtime-venv/$key"
if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  echo "installing requirements/image.lock into $venv ..." >&2
  "$python" -m venv --without-pip "$venv"
  # The base interpreter's pip, pointed at the venv, as the Dockerfile's build stage does: the venv gets no pip.
  "$python" -m pip --disable-pip-version-check --quiet --python "$venv/bin/python" install \
    --require-hashes --only-binary=:all: --no-deps -r "$lock" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
