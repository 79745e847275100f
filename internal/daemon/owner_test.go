package daemon_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

func ids(uid, gid uint32) (*uint32, *uint32) { return &uid, &gid }

// createOwned creates device name with an owner and mode.
func (e *env) createOwned(name, table string, uid, gid uint32, mode string) wire.Info {
	e.t.Helper()
	u, g := ids(uid, gid)
	in, err := e.c.Create(wire.DeviceCreate{Name: name, Table: table, UID: u, GID: g, Mode: mode})
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
	in, err := e.c.Create(wire.DeviceCreate{Name: "uidonly", NoTable: true, UID: u})
	e.must("create uidonly", err)
	wantOwner(t, in, 1000, 6, "0600")
	_, err = e.c.Create(wire.DeviceCreate{Name: "bad", NoTable: true, Mode: "04755"})
	wantCode(t, err, wire.CodeInvalidArgument, "create bad", `mode "04755"`, "0777")
	_, err = e.c.Create(wire.DeviceCreate{Name: "bad", NoTable: true, Mode: "0x1ff"})
	wantCode(t, err, wire.CodeInvalidArgument, "not an octal number")
	if _, err := e.c.Info("bad"); err == nil {
		t.Fatal("a refused create made a device")
	}
	in, err = e.c.Rename("mine", wire.Rename{NewName: "ours"})
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
	e.must("suspend", e.c.Suspend("ours", wire.Suspend{}))
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
	e.createOwned("mine", linear(e.region("mine-mem", size), size/512), nobody, nobody, "0600")
	e.createOwned("shared", linear(e.region("shared-mem", size), size/512), 1000, 1000, "0644")
	e.createOwned("grp", linear(e.region("grp-mem", size), size/512), 1000, group, "0660")

	c := clienttest.StartAs(t, sock, clienttest.User{UID: nobody, GID: nobody, Bin: bin})
	for _, mode := range []string{"ro", "rw"} {
		ans := refused(c, "map root 0 %d %s", size, mode)
		for _, want := range []string{"(code " + wire.CodePermission + ")", "permission denied", "uid 65534", "map of root",
			"owned by uid 0, gid 6, mode 0600", "other bits (---)", "--uid", "ask root"} {
			if !strings.Contains(ans, want) {
				t.Errorf("map root %s as uid 65534: %q, want a refusal containing %q", mode, ans, want)
			}
		}
	}
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

// refused sends a map command that must fail and returns the answer.
func refused(c *clienttest.Child, format string, args ...any) string {
	c.T.Helper()
	ans, ok := c.Try(10*time.Second, format, args...)
	if !ok || !strings.HasPrefix(ans, "err ") {
		c.T.Fatalf("%s: %q (answered %v), want a refusal", fmt.Sprintf(format, args...), ans, ok)
	}
	return ans
}
