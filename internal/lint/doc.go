// Package lint holds tests that enforce the house rules no compiler checks:
// data flows down (exports → daemon → dm core → targets → stores/backing),
// the core never imports an export or the daemon, targets never import each
// other. See DESIGN.md "Layers and data flow" and STYLE.md "Allowed imports".
// It also keeps the README's commands true (the Go version, the test
// command as root and through sudo).
package lint
