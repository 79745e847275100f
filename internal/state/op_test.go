package state_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/state"
)

// An Op prints as its verb and argument, for people, in text and JSON logs.
func TestOp_text(t *testing.T) {
	op := state.Op{Verb: "snapshot-create", Arg: "s1"}
	if got := op.String(); got != "snapshot-create s1" {
		t.Errorf("String = %q", got)
	}
	if got := (state.Op{Verb: "load"}).String(); got != "load" {
		t.Errorf("String without argument = %q", got)
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("m", "op", op)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("m", "op", op)
	if !strings.Contains(text.String(), `op="snapshot-create s1"`) || !strings.Contains(js.String(), `"op":"snapshot-create s1"`) {
		t.Errorf("logged as %q and %q, want the op's text", text.String(), js.String())
	}
}
