//go:build tools

// Package tools pins CoreDNS, the cluster DNS of Kiln's real node (Services' names for the MXNet roles,
// Ignite's discovery and the stage pods).
package tools

import _ "github.com/coredns/coredns"
