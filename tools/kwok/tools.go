//go:build tools

// Package tools pins kwok, which plays the Kubernetes nodes and moves pods through their phases.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
