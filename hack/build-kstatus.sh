#!/usr/bin/env bash
# Builds hack/kstatus (sigs.k8s.io/cli-utils' kstatus.Compute over JSON objects on stdin) into a cache outside
# the repo, once. Prints the path of the binary.
#   - TGI_KSTATUS_BIN naming an executable: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
modfile="$here/kstatus/go.mod"

if [[ -n "${TGI_KSTATUS_BIN:-}" ]]; then
  if [[ -x "$TGI_KSTATUS_BIN" ]]; then echo "$TGI_KSTATUS_BIN"; exit 0; fi
  echo "TGI_KSTATUS_BIN=$TGI_KSTATUS_BIN is not an executable file" >&2
  exit 1
fi

version=$(awk '$1=="sigs.k8s.io/cli-utils" && $2 ~ /^v/ {print $2; exit}' "$modfile")
[[ -n "$version" ]] || { echo "no sigs.k8s.io/cli-utils version in $modfile" >&2; exit 1; }
# The cache key also covers main.go and go.sum, so an edit to either rebuilds.
stamp=$(cat "$here/kstatus/main.go" "$here/kstatus/go.sum" | sha256sum | cut -c1-12)
out="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/kstatus/$version/$stamp"

if [[ -x "$out/kstatus" ]]; then echo "$out/kstatus"; exit 0; fi

command -v go >/dev/null || { echo "go is not on PATH and $out lacks kstatus: install Go >= 1.26 to build it once, or set TGI_KSTATUS_BIN to a built one" >&2; exit 1; }
mkdir -p "$out"
echo "building kstatus (sigs.k8s.io/cli-utils $version) into $out ..." >&2
cd "$here/kstatus"
tmp=$(mktemp "$out/.kstatus.XXXXXX")  # atomic: a half-written binary is never cached
trap 'rm -f "$tmp"' EXIT
GOFLAGS="${GOFLAGS:-} -mod=readonly" CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$tmp" .
mv "$tmp" "$out/kstatus"
echo "$out/kstatus"
