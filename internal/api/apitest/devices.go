package apitest

import (
	"errors"
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// checkVersion: the version names the API the routes are under, and the
// target types are listed by name, each with a version.
func checkVersion(t testing.TB, svc api.Service) {
	v, err := svc.Version(t.Context())
	must(t, "version", err)
	if v.API != wire.APIVersion || v.Version == "" {
		t.Errorf("version = %+v, want API %s and a release", v, wire.APIVersion)
	}
	targets, err := svc.Targets(t.Context())
	must(t, "targets", err)
	var names []string
	for _, tt := range targets {
		names = append(names, tt.Name)
		if tt.Version[0] < 1 {
			t.Errorf("target %s has version %v", tt.Name, tt.Version)
		}
	}
	want := []string{"error", "linear", "snapshot", "snapshot-merge", "snapshot-origin", "striped", "zero"}
	if !slices.Equal(names, want) {
		t.Errorf("targets %q, want %q", names, want)
	}
}

// checkLifecycle: create with and without a table, load, clear, resume,
// rename and remove, as dmsetup does them, each seen by Info and Devices.
func checkLifecycle(t testing.TB, svc api.Service) {
	wantDevices(t, svc)
	in, err := svc.Create(t.Context(), wire.DeviceCreate{Name: "a", UUID: "uuid-a", Table: "0 8 zero"})
	must(t, "create a", err)
	want := wire.Info{Name: "a", UUID: "uuid-a", LiveTable: true, TargetCount: 1, Sectors: 8}
	wantInfo(t, "created a", in, want)
	in, err = svc.Info(t.Context(), "a")
	must(t, "info a", err)
	wantInfo(t, "info a", in, want)

	in, err = svc.Create(t.Context(), wire.DeviceCreate{Name: "b", NoTable: true})
	must(t, "create b without a table", err)
	wantInfo(t, "created b", in, wire.Info{Name: "b"})
	wantDevices(t, svc, "a", "b")
	txt, err := svc.Table(t.Context(), "b", false)
	wantText(t, "table of b without a table", txt, err, "b", false, "")

	must(t, "load b", svc.Load(t.Context(), "b", wire.Load{Table: "0 16 zero"}))
	wantInfo(t, "b loaded", info(t, svc, "b"), wire.Info{Name: "b", InactiveTable: true})
	must(t, "clear b", svc.Clear(t.Context(), "b"))
	wantInfo(t, "b cleared", info(t, svc, "b"), wire.Info{Name: "b"})
	must(t, "load b again", svc.Load(t.Context(), "b", wire.Load{Table: "0 16 zero"}))
	must(t, "resume b", svc.Resume(t.Context(), "b"))
	wantInfo(t, "b resumed", info(t, svc, "b"), wire.Info{Name: "b", LiveTable: true, TargetCount: 1, Sectors: 16})

	in, err = svc.Rename(t.Context(), "a", wire.Rename{NewName: "c"})
	must(t, "rename a c", err)
	wantInfo(t, "renamed a", in, wire.Info{Name: "c", UUID: "uuid-a", LiveTable: true, TargetCount: 1, Sectors: 8})
	_, err = svc.Info(t.Context(), "a")
	wantCode(t, "info a after the rename", err, wire.CodeNotFound)
	wantDevices(t, svc, "b", "c")

	must(t, "remove c", svc.Remove(t.Context(), "c", wire.Remove{}))
	must(t, "remove b", svc.Remove(t.Context(), "b", wire.Remove{}))
	wantDevices(t, svc)
	_, err = svc.Info(t.Context(), "c")
	wantCode(t, "info c after remove", err, wire.CodeNotFound)
}

func info(t testing.TB, svc api.Service, name string) wire.Info {
	t.Helper()
	in, err := svc.Info(t.Context(), name)
	must(t, "info "+name, err)
	return in
}

// wantInfo compares the fields of Info that describe the device's state
// (not its event counter, capabilities or holders).
func wantInfo(t testing.TB, what string, got, want wire.Info) {
	t.Helper()
	if got.Name != want.Name || got.UUID != want.UUID || got.Suspended != want.Suspended || got.ReadOnly != want.ReadOnly ||
		got.LiveTable != want.LiveTable || got.InactiveTable != want.InactiveTable || got.TargetCount != want.TargetCount ||
		got.Sectors != want.Sectors || got.OpenCount != 0 {
		t.Errorf("%s: info %+v, want %+v", what, got, want)
	}
}

// checkTableStatus: table and status print each line as dmsetup does,
// live and inactive, and wipe_table makes the live table error.
func checkTableStatus(t testing.TB, svc api.Service) {
	create(t, svc, "t", "0 16 zero\n16 8 error")
	two := "0 16 zero \n16 8 error \n"
	txt, err := svc.Table(t.Context(), "t", false)
	wantText(t, "table t", txt, err, "t", false, two)
	txt, err = svc.Status(t.Context(), "t", false)
	wantText(t, "status t", txt, err, "t", false, two)
	txt, err = svc.Table(t.Context(), "t", true)
	wantText(t, "inactive table of t, empty", txt, err, "t", true, "")

	must(t, "wipe_table t", svc.WipeTable(t.Context(), "t"))
	txt, err = svc.Table(t.Context(), "t", false)
	wantText(t, "table t after wipe_table", txt, err, "t", false, "0 24 error \n")

	must(t, "load t", svc.Load(t.Context(), "t", wire.Load{Table: "0 32 zero"}))
	txt, err = svc.Table(t.Context(), "t", true)
	wantText(t, "inactive table of t", txt, err, "t", true, "0 32 zero \n")
	txt, err = svc.Status(t.Context(), "t", true)
	wantText(t, "inactive status of t", txt, err, "t", true, "0 32 zero \n")
	txt, err = svc.Table(t.Context(), "t", false)
	wantText(t, "live table of t with one loaded", txt, err, "t", false, "0 24 error \n")
}

// checkSuspendResume: suspend holds a device, resume lets it go and
// swaps in a loaded table; both with and without flushing.
func checkSuspendResume(t testing.TB, svc api.Service) {
	create(t, svc, "s", "0 8 zero")
	must(t, "suspend s", svc.Suspend(t.Context(), "s", wire.Suspend{}))
	wantInfo(t, "s suspended", info(t, svc, "s"), wire.Info{Name: "s", Suspended: true, LiveTable: true, TargetCount: 1, Sectors: 8})
	must(t, "resume s", svc.Resume(t.Context(), "s"))
	wantInfo(t, "s resumed", info(t, svc, "s"), wire.Info{Name: "s", LiveTable: true, TargetCount: 1, Sectors: 8})

	must(t, "load s", svc.Load(t.Context(), "s", wire.Load{Table: "0 16 zero"}))
	wantInfo(t, "s loaded, still running", info(t, svc, "s"),
		wire.Info{Name: "s", LiveTable: true, InactiveTable: true, TargetCount: 1, Sectors: 8})
	must(t, "suspend s without flushing", svc.Suspend(t.Context(), "s", wire.Suspend{NoFlush: true}))
	wantInfo(t, "s suspended with a table loaded", info(t, svc, "s"),
		wire.Info{Name: "s", Suspended: true, LiveTable: true, InactiveTable: true, TargetCount: 1, Sectors: 8})
	must(t, "resume s with a table loaded", svc.Resume(t.Context(), "s"))
	wantInfo(t, "s resumed on the loaded table", info(t, svc, "s"), wire.Info{Name: "s", LiveTable: true, TargetCount: 1, Sectors: 16})
	wantData(t, svc, "s", 0, make([]byte, 16*512))
}

// checkErrorCodes: every class of error comes back with its code, and
// errors.Is matches dm's sentinel for it.
func checkErrorCodes(t testing.TB, svc api.Service) {
	r := region(t, svc, "r", 2*mib)
	create(t, svc, "dax", linear(r.Path, 4096))
	create(t, svc, "top", "0 4096 linear /dev/mapper/dax 0")
	_, err := svc.Create(t.Context(), wire.DeviceCreate{Name: "empty", NoTable: true})
	must(t, "create empty", err)
	_, err = svc.Create(t.Context(), wire.DeviceCreate{Name: "ro", Table: "0 8 zero", ReadOnly: true})
	must(t, "create ro", err)
	create(t, svc, "err", "0 8 error")

	_, err = svc.Info(t.Context(), "nope")
	wantCode(t, "info of a missing device", err, wire.CodeNotFound)
	if err != nil && !errors.Is(err, dm.ErrNotFound) {
		t.Errorf("errors.Is(%v, dm.ErrNotFound) = false", err)
	}
	_, err = svc.Create(t.Context(), wire.DeviceCreate{Name: "dax", Table: "0 8 zero"})
	wantCode(t, "create of a taken name", err, wire.CodeExists)
	_, err = svc.PmemCreate(t.Context(), wire.PmemCreate{Name: "r", Size: mib})
	wantCode(t, "pmem create of a taken name", err, wire.CodeExists)
	_, err = svc.Create(t.Context(), wire.DeviceCreate{Name: "x", Table: "0 8 linear"})
	wantCode(t, "create with a bad table", err, wire.CodeInvalidTable)
	_, err = svc.Create(t.Context(), wire.DeviceCreate{Name: "x", Table: "0 8 bogus"})
	wantCode(t, "create with an unknown target", err, wire.CodeUnknownTarget)
	err = svc.Load(t.Context(), "dax", wire.Load{Table: "0 4096 zero"})
	wantCode(t, "load of a table without dax on a dax device", err, wire.CodeDAXChange)
	if err != nil && !errors.Is(err, dm.ErrDAXChange) {
		t.Errorf("errors.Is(%v, dm.ErrDAXChange) = false", err)
	}
	err = svc.Remove(t.Context(), "dax", wire.Remove{})
	wantCode(t, "remove of a device another's table names", err, wire.CodeBusy)
	if err != nil && !errors.Is(err, dm.ErrBusy) {
		t.Errorf("errors.Is(%v, dm.ErrBusy) = false", err)
	}
	_, err = svc.Rename(t.Context(), "dax", wire.Rename{NewName: "ro"})
	wantCode(t, "rename onto a taken name", err, wire.CodeExists)
	err = svc.PmemRemove(t.Context(), "r")
	wantCode(t, "pmem remove of a region in use", err, wire.CodeBusy)
	_, err = svc.ReadData(t.Context(), "empty", 0, 512)
	wantCode(t, "read without a table", err, wire.CodeNoTable)
	err = svc.WriteData(t.Context(), "ro", 0, []byte("x"))
	wantCode(t, "write to a read-only device", err, wire.CodeReadOnly)
	_, err = svc.ReadData(t.Context(), "dax", 4096*512, 1)
	wantCode(t, "read past the end", err, wire.CodeOutOfRange)
	_, err = svc.ReadData(t.Context(), "err", 0, 512)
	wantCode(t, "read of the error target", err, wire.CodeIO)
	_, err = svc.PmemCreate(t.Context(), wire.PmemCreate{Name: "huge", Size: 1 << 50})
	wantCode(t, "pmem create larger than the filesystem", err, wire.CodeNoSpace)
	_, err = svc.Message(t.Context(), "top", wire.Message{Args: []string{"hello"}})
	wantCode(t, "message to a target that takes none", err, wire.CodeInvalidArgument)
	err = svc.PmemRemove(t.Context(), "nope")
	wantCode(t, "pmem remove of a missing region", err, wire.CodeNotFound)
}
