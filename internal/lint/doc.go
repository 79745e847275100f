// Package lint holds tests that enforce the house rules no compiler checks.
//
// The import rule is an allow-list: the table in docs/architecture.md,
// section "Layers", puts every package of the module in a row that says
// what it may import, and every allowed import sits in a row below, so
// data flows down (doors → dm core → targets → stores and backing) and
// targets never import each other. A package that no row classifies
// fails until someone places it.
//
// It also keeps the README's commands true (the Go version, the test
// command as root and through sudo), and every Go file as gofmt writes it.
package lint
