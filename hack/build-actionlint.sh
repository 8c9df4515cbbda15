#!/usr/bin/env bash
# Builds github.com/rhysd/actionlint/cmd/actionlint (pinned by hack/actionlint/go.mod) into a cache outside the
# repo, once. Prints the path of the binary.
#   - TGI_ACTIONLINT_BIN naming an executable: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
modfile="$here/actionlint/go.mod"

if [[ -n "${TGI_ACTIONLINT_BIN:-}" ]]; then
  if [[ -x "$TGI_ACTIONLINT_BIN" ]]; then echo "$TGI_ACTIONLINT_BIN"; exit 0; fi
  echo "TGI_ACTIONLINT_BIN=$TGI_ACTIONLINT_BIN is not an executable file" >&2
  exit 1
fi

version=$(awk '$1=="github.com/rhysd/actionlint" && $2 ~ /^v/ {print $2; exit}' "$modfile")
[[ -n "$version" ]] || { echo "no github.com/rhysd/actionlint version in $modfile" >&2; exit 1; }
# The cache key also covers go.mod and go.sum, so an edit to either rebuilds.
stamp=$(cat "$modfile" "$here/actionlint/go.sum" | sha256sum | cut -c1-12)
out="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/actionlint/$version/$stamp"

if [[ -x "$out/actionlint" ]]; then echo "$out/actionlint"; exit 0; fi

command -v go >/dev/null || { echo "go is not on PATH and $out lacks actionlint: install Go >= 1.26 to build it once, or set TGI_ACTIONLINT_BIN to a built one" >&2; exit 1; }
mkdir -p "$out"
echo "building actionlint ($version) into $out ..." >&2
cd "$here/actionlint"
tmp=$(mktemp "$out/.actionlint.XXXXXX")  # atomic: a half-written binary is never cached
trap 'rm -f "$tmp"' EXIT
# -X: built as a dependency, actionlint cannot read its own version from the build info (it would say "(devel)").
GOFLAGS="${GOFLAGS:-} -mod=readonly" CGO_ENABLED=0 go build -trimpath -ldflags="-s -X github.com/rhysd/actionlint.version=${version#v}" \
  -o "$tmp" github.com/rhysd/actionlint/cmd/actionlint
mv "$tmp" "$out/actionlint"
echo "$out/actionlint"
