#!/usr/bin/env bash
# Regenerates requirements/image.lock: the runtime dependencies of pyproject.toml (no extras), pinned with the
# sha256 of every file PyPI has for each pinned version, resolved for CPython 3.11 on Linux (the image's base);
# then checks that the lock installs with --require-hashes on linux x86_64 and aarch64 (wheels only).
#   - uv (a pinned version) is installed once into a cache outside the repo.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
#   - LOCK_ARGS: extra `uv pip compile` arguments, e.g. LOCK_ARGS=--upgrade-package=kopf (default: keep the pins).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PYTHON_VERSION=3.11
lock=requirements/image.lock
tools="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/uv-$UV_VERSION"

if [[ ! -x "$tools/bin/uv" ]]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet "uv==$UV_VERSION"
fi
mkdir -p requirements
# Resolved for one Linux platform: none of these dependencies carries a platform_machine marker, so x86_64 and
# aarch64 resolve alike; the hashes cover every file of each pinned version (checked below for both).
# --upgrade is not the default: an existing lock's pins are kept unless pyproject.toml no longer allows them.
# shellcheck disable=SC2086
"$tools/bin/uv" pip compile pyproject.toml --quiet --generate-hashes --python-version "$PYTHON_VERSION" \
  --python-platform x86_64-manylinux_2_28 --no-header --output-file "$lock" ${LOCK_ARGS:-}
{ echo "# The image's runtime dependencies (pyproject.toml, no extras), pinned with hashes: regenerate with \`make lock\`"
  echo "# (hack/lock.sh: uv $UV_VERSION, CPython $PYTHON_VERSION, Linux; installs on x86_64 and aarch64 with --require-hashes)."
  cat "$lock"; } > "$lock.tmp" && mv "$lock.tmp" "$lock"

# pip takes --platform literally (no older manylinux tags implied): list every glibc up to the base image's (2.41).
for arch in x86_64 aarch64; do
  platforms=(--platform "manylinux2014_$arch")
  for glibc in $(seq 17 41); do platforms+=(--platform "manylinux_2_${glibc}_$arch"); done
  scratch=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp "${platforms[@]}" -r "$lock" -d "$scratch" \
    || { rm -rf "$scratch"; echo "$lock does not install on linux $arch" >&2; exit 1; }
  rm -rf "$scratch"
done
echo "wrote $lock ($(grep -c '^[a-z0-9]' "$lock") packages; installs on linux x86_64 and aarch64)" >&2
