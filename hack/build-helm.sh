#!/usr/bin/env bash
# Builds the real helm CLI (helm.sh/helm/v3/cmd/helm, pinned by hack/helm/go.mod) into a cache outside the repo,
# once, and prints its path (TGI_HELM_BIN: a built one; see hack/lib/go-tool.sh). The tests lint and render
# charts/tgi-operator with it.
set -euo pipefail
source "$(dirname "$0")/lib/go-tool.sh"
build() {
  # What Helm's own Makefile stamps in: `helm version` names the release, and the Kubernetes version that
  # `helm template`/`helm lint` assume (.Capabilities.KubeVersion, API deprecation checks) follows the client-go it
  # is built with (v0.Y.Z is Kubernetes 1.Y) instead of the source's fallback of 1.20.
  local client_go kube_minor ldflags pkg
  client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
  kube_minor=$(cut -d. -f2 <<<"$client_go")
  ldflags="-s -X helm.sh/helm/v3/internal/version.version=$2 -X helm.sh/helm/v3/internal/version.metadata="
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$kube_minor"
  done
  go build -trimpath -ldflags="$ldflags" -o "$1" helm.sh/helm/v3/cmd/helm
}
go_tool helm TGI_HELM_BIN helm.sh/helm/v3
