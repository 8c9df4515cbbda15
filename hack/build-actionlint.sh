#!/usr/bin/env bash
# Builds github.com/rhysd/actionlint/cmd/actionlint (pinned by hack/actionlint/go.mod) into a cache outside the
# repo, once, and prints its path (TGI_ACTIONLINT_BIN: a built one; see hack/lib/go-tool.sh).
set -euo pipefail
source "$(dirname "$0")/lib/go-tool.sh"
# -X: built as a dependency, actionlint cannot read its own version from the build info (it would say "(devel)").
build() { go build -trimpath -ldflags="-s -X github.com/rhysd/actionlint.version=${2#v}" -o "$1" github.com/rhysd/actionlint/cmd/actionlint; }
go_tool actionlint TGI_ACTIONLINT_BIN github.com/rhysd/actionlint
