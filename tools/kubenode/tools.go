//go:build tools

// Package tools pins a real node's Kubernetes commands, kubelet and kube-proxy (scripts/build_k8s.sh node;
// scripts/k8s.sh runs them). A module of its own so that the control plane's cached build keeps its key.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
