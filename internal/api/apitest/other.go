package apitest

import (
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// checkPmem: a region is created, listed, shown with the devices that
// use it, refused removal while one does, and removed.
func checkPmem(t testing.TB, svc api.Service) {
	p := region(t, svc, "r", 2*mib)
	if p.Name != "r" || p.Size != 2*mib || p.Path == "" || p.Mode != "0600" || len(p.UsedBy) != 0 {
		t.Errorf("created: %+v, want r of 2 MiB, mode 0600, with a path", p)
	}
	list, err := svc.PmemList(t.Context())
	must(t, "pmem list", err)
	if len(list) != 1 || list[0].Name != "r" || list[0].Path != p.Path {
		t.Errorf("pmem list %+v, want r at %s", list, p.Path)
	}
	create(t, svc, "v", linear(p.Path, 2*mib/512))
	got, err := svc.PmemGet(t.Context(), "r")
	must(t, "pmem get r", err)
	if got.Name != "r" || got.Path != p.Path || got.Size != p.Size || !slices.Equal(got.UsedBy, []string{"v"}) {
		t.Errorf("pmem get r = %+v, want it used by v", got)
	}
	wantCode(t, "pmem remove of a region in use", svc.PmemRemove(t.Context(), "r"), wire.CodeBusy)
	must(t, "remove v", svc.Remove(t.Context(), "v", wire.Remove{}))
	must(t, "pmem remove r", svc.PmemRemove(t.Context(), "r"))
	_, err = svc.PmemGet(t.Context(), "r")
	wantCode(t, "pmem get after remove", err, wire.CodeNotFound)
	if list, err := svc.PmemList(t.Context()); err != nil || len(list) != 0 {
		t.Errorf("pmem list after remove: %+v, %v", list, err)
	}
}

// checkSessions: a service nobody maps a device of lists no sessions.
func checkSessions(t testing.TB, svc api.Service) {
	vol(t, svc, "v", mib)
	list, err := svc.Sessions(t.Context())
	must(t, "sessions", err)
	if len(list) != 0 {
		t.Errorf("sessions = %+v, want none", list)
	}
}

// checkData: what is written is read back, at any byte offset and
// length up to the device's end, across table lines; a zero-length read
// is empty; I/O past the end is out of range.
func checkData(t testing.TB, svc api.Service) {
	p := region(t, svc, "d-mem", mib)
	create(t, svc, "d", linear(p.Path, 1024)+"\n1024 1024 zero")
	wantData(t, svc, "d", 512*1024, make([]byte, 512*1024))
	a := pattern(6, 100000)
	must(t, "write d at 12345", svc.WriteData(t.Context(), "d", 12345, a))
	wantData(t, svc, "d", 12345, a)
	wantData(t, svc, "d", 12345+777, a[777:777+4096])
	got, err := svc.ReadData(t.Context(), "d", 4096, 0)
	if err != nil || len(got) != 0 {
		t.Errorf("read of 0 bytes: %d bytes, %v", len(got), err)
	}
	end := int64(mib)
	wantData(t, svc, "d", end-512, make([]byte, 512))
	_, err = svc.ReadData(t.Context(), "d", end-512, 513)
	wantCode(t, "read across the end", err, wire.CodeOutOfRange)
	wantCode(t, "write across the end", svc.WriteData(t.Context(), "d", end-1, []byte("xy")), wire.CodeOutOfRange)
	wantData(t, svc, "d", 12345, a)
}

// checkBadInput: malformed arguments are refused with invalid_argument,
// and no call panics on them.
func checkBadInput(t testing.TB, svc api.Service) {
	vol(t, svc, "v", mib)
	long := strings.Repeat("n", dm.MaxNameLen+1)
	for _, c := range []struct {
		what string
		call func() error
	}{
		{"create without a name", func() error { _, err := svc.Create(t.Context(), wire.DeviceCreate{Table: "0 8 zero"}); return err }},
		{"create with a name too long", func() error {
			_, err := svc.Create(t.Context(), wire.DeviceCreate{Name: long, Table: "0 8 zero"})
			return err
		}},
		{"create without a table", func() error { _, err := svc.Create(t.Context(), wire.DeviceCreate{Name: "x"}); return err }},
		{"create with a table and no_table", func() error {
			_, err := svc.Create(t.Context(), wire.DeviceCreate{Name: "x", Table: "0 8 zero", NoTable: true})
			return err
		}},
		{"create with mode 999", func() error {
			_, err := svc.Create(t.Context(), wire.DeviceCreate{Name: "x", Table: "0 8 zero", Mode: "999"})
			return err
		}},
		{"load without a table", func() error { return svc.Load(t.Context(), "v", wire.Load{}) }},
		{"message beyond any device", func() error {
			_, err := svc.Message(t.Context(), "v", wire.Message{Sector: 1 << 62, Args: []string{"x"}})
			return err
		}},
		{"read at a negative offset", func() error { _, err := svc.ReadData(t.Context(), "v", -1, 1); return err }},
		{"read of a negative length", func() error { _, err := svc.ReadData(t.Context(), "v", 0, -1); return err }},
		{"read longer than MaxDataLength", func() error { _, err := svc.ReadData(t.Context(), "v", 0, api.MaxDataLength+1); return err }},
		{"write at a negative offset", func() error { return svc.WriteData(t.Context(), "v", -512, []byte("x")) }},
		{"write longer than MaxDataLength", func() error { return svc.WriteData(t.Context(), "v", 0, make([]byte, api.MaxDataLength+1)) }},
		{"pmem create of 1000 bytes", func() error {
			_, err := svc.PmemCreate(t.Context(), wire.PmemCreate{Name: "odd", Size: 1000})
			return err
		}},
		{"pmem create named ../x", func() error {
			_, err := svc.PmemCreate(t.Context(), wire.PmemCreate{Name: "../x", Size: 4096})
			return err
		}},
		{"snapshot create with a chunk of 3000 bytes", func() error {
			_, err := svc.SnapshotCreate(t.Context(), wire.SnapshotCreate{Origin: "v", Name: "s", ChunkSize: 3000})
			return err
		}},
		{"snapshot extend with add and size", func() error {
			_, err := svc.SnapshotExtend(t.Context(), "v", wire.SnapshotExtend{Add: 1, Size: 1})
			return err
		}},
	} {
		wantCode(t, c.what, noPanic(t, c.what, c.call), wire.CodeInvalidArgument)
	}
	wantDevices(t, svc, "v")
}

// noPanic runs call, turning a panic into a failure of t.
func noPanic(t testing.TB, what string, call func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
		}
	}()
	return call()
}
