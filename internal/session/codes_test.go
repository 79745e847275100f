package session_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// TestMap_RefusalCodes: a map refused for an error of any class answers
// with the code the API gives that class, not "internal" (busy while the
// daemon stops, no space, a suspended device...).
func TestMap_RefusalCodes(t *testing.T) {
	classes := map[string]struct {
		err  error
		code string
	}{
		"busy":       {dm.ErrBusy, wire.CodeBusy},
		"nospace":    {dm.ErrNoSpace, wire.CodeNoSpace},
		"suspended":  {dm.ErrSuspended, wire.CodeSuspended},
		"exists":     {dm.ErrExists, wire.CodeExists},
		"io":         {dm.ErrIO, wire.CodeIO},
		"notfound":   {dm.ErrNotFound, wire.CodeNotFound},
		"readonly":   {dm.ErrReadOnly, wire.CodeReadOnly},
		"permission": {access.ErrPermission, wire.CodePermission},
		"other":      {errors.New("unexpected"), wire.CodeInternal},
	}
	lookup := func(name string) (*dm.Device, error) {
		return nil, fmt.Errorf("map %s: %w", name, classes[name].err)
	}
	noRemovals := func(func(*dm.Device)) func() { return func() {} } // Lookup makes no devices
	_, c := serveAndDial(t, session.Config{Lookup: lookup, OnRemove: noRemovals})
	for name, tc := range classes {
		_, err := c.Map(context.Background(), name, client.MapOptions{Length: 4096})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != tc.code {
			t.Errorf("map refused for %v: %v (%#v), want code %s", tc.err, err, ce, tc.code)
		}
	}
}
