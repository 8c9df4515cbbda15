#!/usr/bin/env bash
# The release workflow's gate, runnable locally: every version a release publishes must agree before anything is
# built. Checks that the image tag in manifests/base/deployment.yaml, the example overlay's newTag and (once the
# chart exists) charts/tgi-operator/Chart.yaml's appVersion all equal pyproject.toml's version, and, given a
# git tag (release.yml passes the pushed one), that the tag is v<version>. Prints the version.
#   bash hack/check-release.sh [vX.Y.Z]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-}

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
problems=()
[[ -z "$tag" || "$tag" == "v$version" ]] || problems+=("tag $tag is not v$version (pyproject.toml's version)")

# The first image: line of the base Deployment, e.g. ghcr.io/tgi-operator/tgi-operator:0.1.0.
image=$(awk '$1 == "image:" {print $2; exit}' manifests/base/deployment.yaml | tr -d "\"'")
[[ "$image" == *:"$version" ]] || problems+=("manifests/base/deployment.yaml names $image, not tag $version")

overlay=manifests/overlays/example/kustomization.yaml
if [[ -f "$overlay" ]]; then
  new_tag=$(awk '$1 == "newTag:" {print $2; exit}' "$overlay" | tr -d "\"'")
  [[ -z "$new_tag" || "$new_tag" == "$version" ]] || problems+=("$overlay sets newTag $new_tag, not $version")
fi

chart=charts/tgi-operator/Chart.yaml
if [[ -f "$chart" ]]; then
  app_version=$(awk '$1 == "appVersion:" {print $2; exit}' "$chart" | tr -d "\"'")
  [[ "$app_version" == "$version" ]] || problems+=("$chart has appVersion '$app_version', not $version")
fi

if (( ${#problems[@]} )); then
  # ::error:: annotates the workflow run; locally it is just a prefix.
  printf '::error::%s\n' "${problems[@]}" >&2
  exit 1
fi
echo "$version"
