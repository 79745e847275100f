package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/errcode"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// values are the client's error values, each with its name for messages.
var values = map[string]error{
	"ErrBusy": client.ErrBusy, "ErrRetry": client.ErrRetry, "ErrNotFound": client.ErrNotFound,
	"ErrPermission": client.ErrPermission, "ErrNoSpace": client.ErrNoSpace, "ErrReadOnly": client.ErrReadOnly,
	"ErrNotSupported": client.ErrNotSupported, "ErrOutOfRange": client.ErrOutOfRange,
	"ErrInvalidArgument": client.ErrInvalidArgument, "ErrExists": client.ErrExists, "ErrNoTable": client.ErrNoTable,
	"ErrSuspended": client.ErrSuspended, "ErrIO": client.ErrIO, "ErrInternal": client.ErrInternal,
}

// TestError_Is: a map the daemon refuses for an error of each class
// matches, with errors.Is, the client's value for that class and no other.
func TestError_Is(t *testing.T) {
	classes := map[string]struct {
		err  error
		want string
	}{
		"busy":      {dm.ErrBusy, "ErrBusy"},
		"gone":      {dm.ErrNotFound, "ErrNotFound"},
		"private":   {access.ErrPermission, "ErrPermission"},
		"full":      {dm.ErrNoSpace, "ErrNoSpace"},
		"ro":        {dm.ErrReadOnly, "ErrReadOnly"},
		"zero":      {dm.ErrNotSupported, "ErrNotSupported"},
		"short":     {dm.ErrOutOfRange, "ErrOutOfRange"},
		"odd":       {dm.ErrInvalidArgument, "ErrInvalidArgument"},
		"twice":     {dm.ErrExists, "ErrExists"},
		"empty":     {dm.ErrNoTable, "ErrNoTable"},
		"suspended": {dm.ErrSuspended, "ErrSuspended"},
		"broken":    {dm.ErrIO, "ErrIO"},
		"bug":       {errors.New("unexpected"), "ErrInternal"},
	}
	socket, stop := standIn(func(name string) error { return fmt.Errorf("map %s: %w", name, classes[name].err) })
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, tc := range classes {
		_, err := c.Map(ctx, name, client.MapOptions{Length: 4096})
		for vname, v := range values {
			if got := errors.Is(err, v); got != (vname == tc.want) {
				t.Errorf("map refused for %v: errors.Is(%v, client.%s) = %v", tc.err, err, vname, got)
			}
		}
	}
	// Retry comes from a device being changed, which a stand-in cannot
	// show: the value by its code.
	if err := fmt.Errorf("x: %w", &client.Error{Code: wire.CodeRetry}); !errors.Is(err, client.ErrRetry) || errors.Is(err, client.ErrBusy) {
		t.Errorf("a retry refusal does not match ErrRetry alone")
	}
}

// TestError_everyCode: every code a session can answer has a value,
// except the API's table codes, which no map or adoption answers.
func TestError_everyCode(t *testing.T) {
	apiOnly := map[string]bool{wire.CodeDAXChange: true, wire.CodeInvalidTable: true, wire.CodeUnknownTarget: true}
	for _, code := range append(errcode.Codes(), wire.CodeRetry, wire.CodeInternal) {
		matched := 0
		for _, v := range values {
			if errors.Is(&client.Error{Code: code}, v) {
				matched++
			}
		}
		if matched != 1 && !apiOnly[code] {
			t.Errorf("code %s matches %d client error values, want 1", code, matched)
		}
	}
}
