package errcode

import (
	"errors"
	"fmt"
	"testing"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// TestOf maps each class, wrapped as callers wrap it, to its code and
// back, and everything else to internal.
func TestOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("map vol: %w", dm.ErrBusy), wire.CodeBusy},
		{fmt.Errorf("load vol: %w", dm.ErrRestoring), wire.CodeBusy},
		{fmt.Errorf("%w: the COW is full", dm.ErrNoSpace), wire.CodeNoSpace},
		{fmt.Errorf("%w: uid 5 may not map vol", access.ErrPermission), wire.CodePermission},
		{&dm.TableError{Reason: "would take dax away", Err: dm.ErrDAXChange}, wire.CodeDAXChange},
		{&dm.TableError{Reason: "bad offset"}, wire.CodeInvalidTable},
		{errors.Join(errors.New("ctx"), dm.ErrSuspended), wire.CodeSuspended},
		{errors.New("something else"), wire.CodeInternal},
		{nil, wire.CodeInternal},
	} {
		if got := Of(tc.err); got != tc.code {
			t.Errorf("Of(%v) = %s, want %s", tc.err, got, tc.code)
		}
	}
	seen := map[string]bool{}
	for _, code := range Codes() {
		class := Class(code)
		if seen[code] || class == nil || Of(fmt.Errorf("x: %w", class)) != code {
			t.Errorf("code %s: class %v, seen twice %v", code, class, seen[code])
		}
		seen[code] = true
	}
	for _, code := range []string{wire.CodeInternal, wire.CodeRetry, wire.CodeMethod, "nonsense"} {
		if class := Class(code); class != nil {
			t.Errorf("Class(%s) = %v, want none", code, class)
		}
	}
}
