//go:build tools

// Package tools pins the Kubernetes control-plane commands Kiln's tests run (scripts/k8s.sh builds them).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
