#!/usr/bin/env bash
# Builds the real helm CLI (helm.sh/helm/v3/cmd/helm, pinned by hack/helm/go.mod) into a cache outside the repo,
# once. Prints the path of the binary. The tests lint and render charts/tgi-operator with it.
#   - TGI_HELM_BIN naming an executable: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
modfile="$here/helm/go.mod"

if [[ -n "${TGI_HELM_BIN:-}" ]]; then
  if [[ -x "$TGI_HELM_BIN" ]]; then echo "$TGI_HELM_BIN"; exit 0; fi
  echo "TGI_HELM_BIN=$TGI_HELM_BIN is not an executable file" >&2
  exit 1
fi

version=$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3; exit} $1=="helm.sh/helm/v3" && $2 ~ /^v/ {print $2; exit}' "$modfile")
[[ -n "$version" ]] || { echo "no helm.sh/helm/v3 version in $modfile" >&2; exit 1; }
# The cache key also covers go.mod and go.sum (the dependencies it was built with), so an edit to either rebuilds.
stamp=$(cat "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -c1-12)
out="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/helm/$version/$stamp"

if [[ -x "$out/helm" ]]; then echo "$out/helm"; exit 0; fi

command -v go >/dev/null || { echo "go is not on PATH and $out lacks helm: install Go >= 1.26 to build it once, or set TGI_HELM_BIN to a built one" >&2; exit 1; }
mkdir -p "$out"
echo "building helm $version into $out ..." >&2
cd "$here/helm"
export GOFLAGS="${GOFLAGS:-} -mod=readonly" CGO_ENABLED=0
# What Helm's own Makefile stamps in: `helm version` names the release, and the Kubernetes version that
# `helm template`/`helm lint` assume (.Capabilities.KubeVersion, API deprecation checks) follows the client-go it
# is built with (v0.Y.Z is Kubernetes 1.Y) instead of the source's fallback of 1.20.
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
kube_minor=$(cut -d. -f2 <<<"$client_go")
ldflags="-s -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.metadata="
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$kube_minor"
done
tmp=$(mktemp "$out/.helm.XXXXXX")  # atomic: a half-written binary is never cached
trap 'rm -f "$tmp"' EXIT
go build -trimpath -ldflags="$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm
mv "$tmp" "$out/helm"
echo "$out/helm"
