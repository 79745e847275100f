// Package apitest is the conformance suite of the control API: what an
// api.Service does, checked through the interface alone, so that the
// daemon in process and apiclient.Client across a served daemon's socket
// run the same checks and must give the same answers. It covers the
// device lifecycle (create, load, resume, clear, rename, remove), table
// and status text, suspend and resume, every error class with its wire
// code (api.CodeOf), snapshots (create, list, extend, merge, remove),
// memory regions, the session list, data reads and writes, and bad input,
// which is refused with invalid_argument and never panics.
//
// Run calls its factory once per check, so each check starts on a
// service without devices, regions or snapshots, whose regions are on a
// tmpfs. The suite's own tests run it on deliberately broken services
// and expect it to fail, so a check that cannot fail is noticed.
package apitest

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Check is one conformance check. Fn reports through t only, so it can
// be run against a recording testing.TB to see that it fails on a broken
// service.
type Check struct {
	Name string
	Fn   func(t testing.TB, svc api.Service)
}

// Checks lists the conformance checks in the order Run runs them.
func Checks() []Check {
	return []Check{
		{"Version", checkVersion},
		{"DeviceLifecycle", checkLifecycle},
		{"TableStatus", checkTableStatus},
		{"SuspendResume", checkSuspendResume},
		{"ErrorCodes", checkErrorCodes},
		{"Snapshots", checkSnapshots},
		{"SnapshotMerge", checkMerge},
		{"Pmem", checkPmem},
		{"Sessions", checkSessions},
		{"Data", checkData},
		{"BadInput", checkBadInput},
		{"Checkpoints", checkCheckpoints},
	}
}

// Run runs every check as a subtest of t, each on a new service from
// newService.
func Run(t *testing.T, newService func() api.Service) {
	for _, c := range Checks() {
		t.Run(c.Name, func(t *testing.T) { c.Fn(t, newService()) })
	}
}

const mib = 1 << 20

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantCode checks that err is of the class whose wire code is code.
func wantCode(t testing.TB, what string, err error, code string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want %s", what, code)
	case api.CodeOf(err) != code:
		t.Errorf("%s: %v: code %s, want %s", what, err, api.CodeOf(err), code)
	}
}

func create(t testing.TB, svc api.Service, name, table string) wire.Info {
	t.Helper()
	in, err := svc.Create(t.Context(), wire.DeviceCreate{Name: name, Table: table})
	must(t, "create "+name, err)
	return in
}

// region creates a memory region of size bytes.
func region(t testing.TB, svc api.Service, name string, size int64) wire.Pmem {
	t.Helper()
	p, err := svc.PmemCreate(t.Context(), wire.PmemCreate{Name: name, Size: size})
	must(t, "pmem create "+name, err)
	return p
}

// vol creates device name as a linear map of a new region of size bytes.
func vol(t testing.TB, svc api.Service, name string, size int64) wire.Pmem {
	t.Helper()
	p := region(t, svc, name+"-mem", size)
	create(t, svc, name, linear(p.Path, size/512))
	return p
}

func linear(path string, sectors int64) string {
	return fmt.Sprintf("0 %d linear %s 0", sectors, path)
}

// wantDevices checks that the service has exactly the devices names, in
// order.
func wantDevices(t testing.TB, svc api.Service, names ...string) {
	t.Helper()
	list, err := svc.Devices(t.Context())
	must(t, "devices", err)
	var got []string
	for _, in := range list {
		got = append(got, in.Name)
	}
	if !slices.Equal(got, names) {
		t.Errorf("devices %q, want %q", got, names)
	}
}

// wantText checks a device's table or status text.
func wantText(t testing.TB, what string, txt wire.Text, err error, name string, inactive bool, want string) {
	t.Helper()
	switch {
	case err != nil:
		t.Errorf("%s: %v", what, err)
	case txt.Name != name || txt.Inactive != inactive || txt.Text != want:
		t.Errorf("%s = %+v, want name %s, inactive %v, text %q", what, txt, name, inactive, want)
	}
}

// pattern is n bytes that differ from those of any other seed.
func pattern(seed byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed ^ byte(i*7+i/251)
	}
	return p
}

// wantData checks that device name reads as want at off.
func wantData(t testing.TB, svc api.Service, name string, off int64, want []byte) {
	t.Helper()
	got, err := svc.ReadData(t.Context(), name, off, int64(len(want)))
	if err != nil {
		t.Errorf("read %s: %v", name, err)
		return
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("read %d bytes of %s at %d: got %d bytes, first difference at byte %d", len(want), name, off, len(got), i)
	}
}
