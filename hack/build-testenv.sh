#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go modules pinned in hack/k8s into a
# cache outside the repo, once. Prints the folder that holds both binaries.
#   - KUBEBUILDER_ASSETS naming a folder with both binaries: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
modfile="$here/k8s/go.mod"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
    echo "$KUBEBUILDER_ASSETS"; exit 0
  fi
  echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS does not hold executable kube-apiserver and etcd" >&2
  exit 1
fi

k8s_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$modfile")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2; exit}' "$modfile")
out="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/testenv/${k8s_version}-etcd-${etcd_version}"

if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"; exit 0
fi

# Go is needed only here: to build what neither KUBEBUILDER_ASSETS nor the cache provides.
command -v go >/dev/null || { echo "go is not on PATH and $out lacks kube-apiserver and etcd: install Go >= 1.26 to build them once, or set KUBEBUILDER_ASSETS to a folder holding both" >&2; exit 1; }
mkdir -p "$out"
cd "$here/k8s"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0
build() {  # build <package> <binary> <ldflags>, atomically (a half-written binary is never cached)
  [[ -x "$out/$2" ]] && return 0
  echo "building $2 ($1) into $out ..." >&2
  go build -trimpath -ldflags="-s $3" -o "$out/.$2.tmp" "$1"
  mv "$out/.$2.tmp" "$out/$2"
}
# Stamp the release into the binary, as Kubernetes' own build does, so that
# `kubectl version` and the apiserver's compatibility version tell the truth.
minor=$(echo "$k8s_version" | cut -d. -f2)
kv="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
build go.etcd.io/etcd/server/v3 etcd ""
build k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kv"
echo "$out"
