//go:build tools

// Blank imports keep `go mod tidy` from dropping the modules whose main
// packages we build: kube-apiserver and the etcd server.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
