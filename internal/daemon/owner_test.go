package daemon_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

func ids(uid, gid uint32) (*uint32, *uint32) { return &uid, &gid }

// createOwned creates device name with an owner and mode.
func (e *env) createOwned(name, table string, uid, gid uint32, mode string) wire.Info {
	e.t.Helper()
	u, g := ids(uid, gid)
	in, err := e.c.Create(bg, wire.DeviceCreate{Name: name, Table: table, UID: u, GID: g, Mode: mode})
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	return in
}

func wantOwner(t *testing.T, in wire.Info, uid, gid uint32, mode string) {
	t.Helper()
	if in.UID != uid || in.GID != gid || in.Mode != mode {
		t.Fatalf("%s: owner uid %d gid %d mode %s, want uid %d gid %d mode %s", in.Name, in.UID, in.GID, in.Mode, uid, gid, mode)
	}
}

// Ensure that a device's owner is dmsetup's default unless given, is
// checked, survives rename and restart, and that a record written before
// daxsnap kept owners comes back with the defaults.
func TestDaemon_owner(t *testing.T) {
	e := newEnv(t)
	wantOwner(t, e.create("plain", "0 8 zero"), 0, 6, "0600")
	wantOwner(t, e.createOwned("mine", "0 8 zero", 65534, 0, "0640"), 65534, 0, "0640")
	u, _ := ids(1000, 0)
	in, err := e.c.Create(bg, wire.DeviceCreate{Name: "uidonly", NoTable: true, UID: u})
	e.must("create uidonly", err)
	wantOwner(t, in, 1000, 6, "0600")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "bad", NoTable: true, Mode: "04755"})
	wantCode(t, err, wire.CodeInvalidArgument, "create bad", `mode "04755"`, "0777")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "bad", NoTable: true, Mode: "0x1ff"})
	wantCode(t, err, wire.CodeInvalidArgument, "not an octal number")
	if _, err := e.c.Info(bg, "bad"); err == nil {
		t.Fatal("a refused create made a device")
	}
	in, err = e.c.Rename(bg, "mine", wire.Rename{NewName: "ours"})
	e.must("rename", err)
	wantOwner(t, in, 65534, 0, "0640")

	e.restart()
	wantOwner(t, e.info("ours"), 65534, 0, "0640")
	wantOwner(t, e.info("uidonly"), 1000, 6, "0600")
	wantOwner(t, e.info("plain"), 0, 6, "0600")

	// Make "ours" look as an older daxsnap wrote it: no owner.
	e.stop()
	rewriteRecord(t, e.cfg.StateDir, "ours", func(rec map[string]any) {
		if _, ok := rec["owner"]; !ok {
			t.Fatalf("record of ours has no owner: %v", rec)
		}
		delete(rec, "owner")
	})
	e.start()
	wantOwner(t, e.info("ours"), 0, 6, "0600")
	if got := e.table("ours", false); got != "0 8 zero \n" {
		t.Fatalf("old record's table = %q", got)
	}
	// The next change records the default owner explicitly.
	e.must("suspend", e.c.Suspend(bg, "ours", wire.Suspend{}))
	e.stop()
	rewriteRecord(t, e.cfg.StateDir, "ours", func(rec map[string]any) {
		if o, ok := rec["owner"].(map[string]any); !ok || o["gid"] != 6.0 || o["mode"] != 384.0 {
			t.Errorf("record of ours after a change: %v, want owner gid 6 mode 0600", rec)
		}
	})
	e.start()
}

// rewriteRecord edits device name's JSON record in the state file of a
// stopped daemon.
func rewriteRecord(t *testing.T, dir, name string, fn func(map[string]any)) {
	t.Helper()
	rewriteIn(t, dir, "devices", name, fn)
}

// rewriteIn edits the JSON record stored under key in bucket ("devices",
// "regions") of a stopped daemon's state file.
func rewriteIn(t *testing.T, dir, bucket, key string, fn func(map[string]any)) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, state.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		var rec map[string]any
		if err := json.Unmarshal(b.Get([]byte(key)), &rec); err != nil {
			return err
		}
		fn(rec)
		js, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), js)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Ensure that a client running as another user (uid 65534) may map only
// what the device's owner, group and mode allow: refused a root-owned
// 0600 device with a message that says why and what to do, allowed its
// own device read-write, a 0644 device of another uid read-only but not
// read-write, and a 0660 device of a group it has only as a
// supplementary group read-write.
func TestDAXSession_perDeviceAuthorization(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	const nobody, group = 65534, 4242
	e := newEnv(t)
	// Let uid 65534 reach the session socket (t.TempDir is 0700).
	for dir := e.cfg.StateDir; dir != "/tmp" && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bin := copyTestBinary(t)
	sock := e.d.SessionSocketPath()
	e.pmemVol("root", size)
	// Each on a region with the device's owner: a map needs the right to
	// the whole region too (TestDAXSession_regionAuthorization).
	e.createOwned("mine", linear(e.regionOwned("mine-mem", size, nobody, nobody, "0600"), size/512), nobody, nobody, "0600")
	e.createOwned("shared", linear(e.regionOwned("shared-mem", size, 1000, 1000, "0644"), size/512), 1000, 1000, "0644")
	e.createOwned("grp", linear(e.regionOwned("grp-mem", size, 1000, group, "0660"), size/512), 1000, group, "0660")

	c := clienttest.StartAs(t, sock, clienttest.User{UID: nobody, GID: nobody, Bin: bin})
	refusedBoth(c, "root", size, "(code "+wire.CodePermission+")", "permission denied", "uid 65534", "map of root",
		"owned by uid 0, gid 6, mode 0600", "other bits (---)", "--uid", "ask root")
	c.Do("map mine 0 %d rw", size)
	c.Do("fill 7")
	if w := binary.LittleEndian.Uint64(e.read("mine", 3*4096, 8)); w != 7<<32|3 {
		t.Errorf("mine page 3 = %#x after uid 65534's fill, want %#x", w, 7<<32|3)
	}
	ans := refused(c, "map shared 0 %d rw", size)
	if !strings.Contains(ans, "(code "+wire.CodePermission+")") || !strings.Contains(ans, "other bits (r--)") ||
		!strings.Contains(ans, "do not allow read and write") {
		t.Errorf("write map of shared (0644, uid 1000) as uid 65534: %q, want refused for write", ans)
	}
	c.Do("map shared 0 %d ro", size)
	if ans := refused(c, "map grp 0 %d ro", size); !strings.Contains(ans, "other bits (---)") || !strings.Contains(ans, "(code "+wire.CodePermission+")") {
		t.Errorf("map of grp (0660, gid %d) by uid 65534 outside the group: %q, want refused by the other bits", group, ans)
	}
	c.Do("quit")

	// In the group only as a supplementary group (primary gid 65534).
	g := clienttest.StartAs(t, sock, clienttest.User{UID: nobody, GID: nobody, Groups: []uint32{100, group}, Bin: bin})
	g.Do("map grp 0 %d rw", size)
	g.Do("fill 9")
	if got := e.read("grp", 0, 8); !bytes.Equal(got, binary.LittleEndian.AppendUint64(nil, 9<<32)) {
		t.Errorf("grp page 0 = %x after the group member's fill", got)
	}
	g.Do("quit")

	// Root may map anything, whatever the mode.
	r := clienttest.Start(t, sock)
	r.Do("map mine 0 %d rw", size)
	r.Do("quit")
}

// regionOwned creates region name with an owner and mode.
func (e *env) regionOwned(name string, size int64, uid, gid uint32, mode string) string {
	e.t.Helper()
	u, g := ids(uid, gid)
	p, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: name, Size: size, UID: u, GID: g, Mode: mode})
	if err != nil {
		e.t.Fatalf("pmem create %s: %v", name, err)
	}
	if p.UID != uid || p.GID != gid || p.Mode != mode {
		e.t.Fatalf("pmem create %s: owner %d:%d mode %s, want %d:%d %s", name, p.UID, p.GID, p.Mode, uid, gid, mode)
	}
	return p.Path
}

// Ensure that a map hands out no more memory than the client may reach:
// volA (uid 65534) and volB (root, 0600) are two linear ranges of one
// root-owned region, and a map of volA would hand uid 65534 a descriptor
// of the whole region file, volB's range and the file's size included.
// So uid 65534 may not map volA, read-only or writable, and the refusal
// names the region and the fix; on a region of its own (pmem create
// --uid 65534) the map works; a region that gives it read only allows a
// read-only map only; the region's owner survives a restart.
func TestDAXSession_regionAuthorization(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	const nobody = 65534
	e := newEnv(t)
	for dir := e.cfg.StateDir; dir != "/tmp" && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bin := copyTestBinary(t)
	shared := e.region("shared", 2*size)
	if p, err := e.c.PmemGet(bg, "shared"); err != nil || p.UID != 0 || p.GID != 6 || p.Mode != "0600" {
		t.Fatalf("pmem shared: %+v, %v: want the default owner 0:6 0600", p, err)
	}
	e.createOwned("volA", linear(shared, size/512), nobody, nobody, "0600")
	e.create("volB", fmt.Sprintf("0 %d linear %s %d", size/512, shared, size/512))
	e.createOwned("own", linear(e.regionOwned("own-mem", size, nobody, nobody, "0600"), size/512), nobody, nobody, "0600")
	e.createOwned("peek", linear(e.regionOwned("peek-mem", size, 0, 0, "0644"), size/512), nobody, nobody, "0600")

	c := clienttest.StartAs(t, e.d.SessionSocketPath(), clienttest.User{UID: nobody, GID: nobody, Bin: bin})
	refusedBoth(c, "volA", size, "(code "+wire.CodePermission+")", "uid 65534", "volA", "region shared ("+shared+")",
		"owned by uid 0, gid 6, mode 0600", "other bits (---)", "whole region file", "pmem create NAME --size SIZE --uid 65534")
	c.Do("map own 0 %d rw", size)
	c.Do("fill 5")
	if w := binary.LittleEndian.Uint64(e.read("own", 2*4096, 8)); w != 5<<32|2 {
		t.Errorf("own page 2 = %#x after uid 65534's fill, want %#x", w, 5<<32|2)
	}
	c.Do("unmap")
	ans := refused(c, "map peek 0 %d rw", size)
	if !strings.Contains(ans, "region peek-mem") || !strings.Contains(ans, "other bits (r--)") || !strings.Contains(ans, "do not allow read and write") {
		t.Errorf("writable map of peek (region 0644) as uid 65534: %q, want refused by the region's other bits", ans)
	}
	c.Do("map peek 0 %d ro", size)
	c.Do("quit")
	if got := e.read("volB", 0, 8); !bytes.Equal(got, make([]byte, 8)) {
		t.Errorf("volB page 0 = %x, want untouched zeros", got)
	}

	// Root maps anything; the region's owner survives a restart.
	r := clienttest.Start(t, e.d.SessionSocketPath())
	r.Do("map volA 0 %d rw", size)
	r.Do("quit")
	e.restart()
	if p, err := e.c.PmemGet(bg, "own-mem"); err != nil || p.UID != nobody || p.GID != nobody || p.Mode != "0600" {
		t.Fatalf("pmem own-mem after a restart: %+v, %v: want owner %d:%d 0600", p, err, nobody, nobody)
	}
}

// refusedBoth maps size bytes of dev read-only, then writable, and
// checks that both are refused with answers containing each of want.
func refusedBoth(c *clienttest.Child, dev string, size int, want ...string) {
	c.T.Helper()
	for _, mode := range []string{"ro", "rw"} {
		ans := refused(c, "map %s 0 %d %s", dev, size, mode)
		for _, w := range want {
			if !strings.Contains(ans, w) {
				c.T.Errorf("map %s %s: %q, want a refusal containing %q", dev, mode, ans, w)
			}
		}
	}
}

// refused sends a map command that must fail and returns the answer.
func refused(c *clienttest.Child, format string, args ...any) string {
	c.T.Helper()
	ans, ok := c.Try(10*time.Second, format, args...)
	if !ok || !strings.HasPrefix(ans, "err ") {
		c.T.Fatalf("%s: %q (answered %v), want a refusal", fmt.Sprintf(format, args...), ans, ok)
	}
	return ans
}

// Ensure that a region truncated under its device (by root, or by a user
// its owner and mode let map it writable) is reported, not mapped: a map
// past its end is refused as out of range with what happened and what to
// do (it would fault with SIGBUS in the client), pmem list says the file
// was truncated, and the daemon goes on serving.
func TestDAXSession_shrunkRegion(t *testing.T) {
	const size = 1 << 20
	e := newEnv(t)
	path := e.pmemVol("vol", size)
	if err := os.Truncate(path, size/2); err != nil {
		t.Fatal(err)
	}
	r := clienttest.Start(t, e.d.SessionSocketPath())
	ans := refused(r, "map vol 0 %d rw", size)
	for _, want := range []string{"(code " + wire.CodeOutOfRange + ")", path, "truncated", "recreate the region"} {
		if !strings.Contains(ans, want) {
			t.Errorf("map of a device on a truncated region: %q, want a refusal containing %q", ans, want)
		}
	}
	r.Do("map vol 0 %d rw", size/2) // what is left maps
	r.Do("quit")
	p, err := e.c.PmemGet(bg, "vol-mem")
	if err != nil || !strings.Contains(p.Note, "truncated") || !strings.Contains(p.Note, "recreate the region") {
		t.Errorf("pmem vol-mem after a truncate: %+v, %v: want a note that it was truncated", p, err)
	}
}

// Ensure that what the daemon keeps of a device (owner, note) lives as
// long as the device: it follows a rename, and goes with the device
// however it is removed (a remove, a deferred removal at the last close
// of a table over it), so a device created again under a name starts
// afresh and the daemon pins no removed device.
func TestDaemon_deviceStateLifetime(t *testing.T) {
	e := newEnv(t)
	e.createOwned("low", "0 8 zero", 1000, 1000, "0640")
	if _, err := e.c.Rename(bg, "low", wire.Rename{NewName: "low2"}); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, e.info("low2"), 1000, 1000, "0640")
	e.create("high", "0 8 linear /dev/mapper/low2 0")
	e.must("remove --deferred", e.c.Remove(bg, "low2", wire.Remove{Deferred: true}))
	e.must("remove high", e.c.Remove(bg, "high", wire.Remove{}))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if _, err := e.c.Info(bg, "low2"); errors.Is(err, dm.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("low2 still there a minute after its last close")
		}
	}
	for i := range 4 {
		name := fmt.Sprintf("vol%d", i)
		e.createOwned(name, "0 8 zero", 1000, 1000, "0600")
		e.must("remove", e.c.Remove(bg, name, wire.Remove{}))
	}
	if n := daemon.DeviceStates(e.d); n != 0 {
		t.Errorf("the daemon keeps the state of %d devices with none left", n)
	}
	def := e.create("other", "0 8 zero") // dmsetup's default owner
	wantOwner(t, e.create("low2", "0 8 zero"), def.UID, def.GID, def.Mode)
}
