//go:build tools

// Package tools pins OpenTofu's CLI (cmd/tofu) so `go build github.com/opentofu/opentofu/cmd/tofu`
// in this module resolves every dependency from this go.mod/go.sum.
package tools

import _ "github.com/opentofu/opentofu/cmd/tofu"
