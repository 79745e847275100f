package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FSType is the mount's type in /proc/mounts ("fuse." + Name).
const (
	Name   = "daxsnap"
	FSType = "fuse." + Name
)

// Server is a mounted export, serving until Close.
type Server struct {
	dir  string
	x    *fileSystem
	root *root
	srv  *fuse.Server

	unsubscribe func() // from device removals
	stop        chan struct{}
	watchDone   chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

// Mount mounts the export of devs on dir (created if missing) and serves
// it until Close. A mount left on dir by a daemon that died is detached
// first. It fails, saying why, without /dev/fuse, without the privilege
// to mount (root, or fusermount3 for others), or if dir is a live mount.
func Mount(dir string, devs Devices, opts Options) (*Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("FUSE mount point %s: %w", dir, err)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no FUSE on this machine (%w): load the fuse module (modprobe fuse) or run where /dev/fuse exists", err)
	}
	x := newFileSystem(devs, opts)
	if stale, err := CleanStale(abs); err != nil {
		return nil, err
	} else if stale {
		x.log.Warn("fuse: detached a stale mount left by a daemon that did not stop cleanly", "dir", abs)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("create FUSE mount point %s: %w", abs, err)
	}
	root := &root{x: x}
	var zero time.Duration
	o := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			// Root mounts directly (no fusermount3 needed) and lets
			// everyone in, the kernel checking each file's owner and
			// mode (default_permissions); others go through
			// fusermount3, and only they see the files.
			AllowOther:    os.Geteuid() == 0,
			Options:       []string{"default_permissions"},
			FsName:        Name,
			Name:          Name,
			DirectMount:   true,
			MaxWrite:      x.opts.MaxWrite,
			MaxBackground: 64,
			// Loop devices issue direct I/O asynchronously and may
			// truncate on open; ask for both as the kernel's own.
			ExtraCapabilities: fuse.CAP_ASYNC_DIO | fuse.CAP_ATOMIC_O_TRUNC,
			DisableXAttrs:     true,
			DisableSplice:     true, // replies are in memory: nothing to splice
		},
	}
	srv, err := fs.Mount(abs, root, o)
	if err != nil {
		return nil, fmt.Errorf("mount FUSE export on %s: %w", abs, err)
	}
	m := &Server{dir: abs, x: x, root: root, srv: srv, unsubscribe: devs.OnRemove(x.forget),
		stop: make(chan struct{}), watchDone: make(chan struct{})}
	go m.watch()
	return m, nil
}

// Dir is the mount point (absolute).
func (m *Server) Dir() string { return m.dir }

// OpenFiles counts the files open on the mount.
func (m *Server) OpenFiles() int {
	m.x.mu.Lock()
	defer m.x.mu.Unlock()
	return len(m.x.open)
}

// Close unmounts. If files are still open (a loop device attached to one),
// it aborts the connection, so their I/O fails from now on, and detaches
// the mount; it then lets go of every device the kernel did not release.
// It returns an error naming what was still open in that case.
func (m *Server) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Server) close() error {
	m.unsubscribe()
	close(m.stop)
	<-m.watchDone
	var busy error
	if err := unmount(m.dir); err != nil {
		busy = fmt.Errorf("unmount %s: %w: %d files still open (a loop device attached? `losetup -j FILE` finds it); their I/O now fails", m.dir, err, m.OpenFiles())
		m.x.log.Warn("fuse: mount busy at shutdown: aborting the connection and detaching it", "dir", m.dir, "open_files", m.OpenFiles(), "err", err)
		if err := detach(m.dir); err != nil {
			busy = errors.Join(busy, fmt.Errorf("detach %s: %w", m.dir, err))
		}
	}
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		busy = errors.Join(busy, fmt.Errorf("FUSE server on %s did not stop within 10s", m.dir))
	}
	if n := m.x.releaseAll(); n > 0 {
		m.x.log.Warn("fuse: released files the kernel never closed", "dir", m.dir, "files", n)
	}
	return busy
}

// unmount unmounts dir, which fails while files are open; without root,
// it is `fusermount3 -u`.
func unmount(dir string) error {
	if os.Geteuid() != 0 {
		return fusermount("-u", dir)
	}
	var err error
	for delay := 5 * time.Millisecond; delay < 200*time.Millisecond; delay *= 2 {
		// The kernel releases a closed file a moment after its
		// close; retry briefly before calling the mount busy.
		if err = syscall.Unmount(dir, 0); err == nil || !errors.Is(err, syscall.EBUSY) {
			return err
		}
		time.Sleep(delay)
	}
	return err
}

// detach aborts the FUSE connection of dir (umount2 MNT_FORCE calls
// fuse's umount_begin) and then detaches the mount (MNT_DETACH), which
// succeeds even while files are open; without root, it is
// `fusermount3 -u -z`.
func detach(dir string) error {
	if os.Geteuid() != 0 {
		return fusermount("-u", "-z", dir)
	}
	_ = syscall.Unmount(dir, syscall.MNT_FORCE) // aborts; fails as busy
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func fusermount(args ...string) error {
	bin := "fusermount3"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "fusermount"
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CleanStale detaches a FUSE mount of this export left on dir by a daemon
// that died (its connection is gone: stat fails with ENOTCONN), and
// reports whether there was one. A live mount on dir is an error: another
// daemon serves there.
func CleanStale(dir string) (bool, error) {
	found := false
	for range 8 { // mounts may be stacked
		fstype, ok, err := mountedAt(dir)
		if err != nil || !ok {
			return found, err
		}
		err = statWithin(dir, 2*time.Second)
		switch {
		case err == nil:
			return found, fmt.Errorf("%s is already a mount point (%s) that is alive: pick another --fuse directory, or unmount it", dir, fstype)
		case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
			// The server is gone.
		case errors.Is(err, os.ErrDeadlineExceeded) && fstype == FSType:
			// A server that does not answer: a daemon killed while it
			// had a file open on its own mount is stuck exiting on it.
			// Aborting the connection lets it go.
		default:
			return found, fmt.Errorf("%s is a mount point (%s) that cannot be examined: %w", dir, fstype, err)
		}
		if err := detach(dir); err != nil {
			return found, fmt.Errorf("detach the stale FUSE mount on %s (left by a daemon that died): %w", dir, err)
		}
		found = true
	}
	return found, fmt.Errorf("%s: still a mount point after detaching 8 stale mounts", dir)
}

// statWithin stats path, giving up (os.ErrDeadlineExceeded) after d: a
// FUSE mount whose server hangs never answers. The stat left behind ends
// when the mount is aborted.
func statWithin(path string, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var st syscall.Stat_t
		done <- syscall.Stat(path, &st)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return os.ErrDeadlineExceeded
	}
}

// mountedAt reports whether dir is a mount point in this mount
// namespace, and its type.
func mountedAt(dir string) (string, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	fstype, found := "", false
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || unescapeMount(fields[4]) != dir {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) {
				fstype, found = fields[i+1], true // the last one is on top
			}
		}
	}
	return fstype, found, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// watch refreshes the kernel's size of device files whose device changed
// size.
func (m *Server) watch() {
	defer close(m.watchDone)
	if m.x.opts.Poll < 0 {
		return
	}
	t := time.NewTicker(m.x.opts.Poll)
	defer t.Stop()
	sizes := map[string]int64{}
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		devs := m.x.devs.List()
		seen := make(map[string]int64, len(devs))
		for _, d := range devs {
			name, size := d.Name(), d.Size()
			seen[name] = size
			if old, ok := sizes[name]; ok && old != size {
				m.refresh(name)
			}
		}
		sizes = seen
	}
}

// refresh makes the kernel fetch name's attributes now: a stat from here
// (attributes are never cached, so it reaches Getattr) updates the size
// the loop driver reads on `losetup -c`.
func (m *Server) refresh(name string) {
	if ch := m.root.GetChild(name); ch != nil {
		ch.NotifyContent(-1, 0)
	}
	var st syscall.Stat_t
	_ = syscall.Stat(filepath.Join(m.dir, name), &st)
}
