//go:build tools

// A blank import keeps `go mod tidy` from dropping the module whose main
// package we build: the helm CLI.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
