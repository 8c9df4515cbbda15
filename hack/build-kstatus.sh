#!/usr/bin/env bash
# Builds hack/kstatus (sigs.k8s.io/cli-utils' kstatus.Compute over JSON objects on stdin) into a cache outside the
# repo, once, and prints its path (TGI_KSTATUS_BIN: a built one; see hack/lib/go-tool.sh).
set -euo pipefail
source "$(dirname "$0")/lib/go-tool.sh"
build() { go build -trimpath -ldflags=-s -o "$1" .; }
go_tool kstatus TGI_KSTATUS_BIN sigs.k8s.io/cli-utils
