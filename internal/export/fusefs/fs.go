package fusefs

import (
	"context"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Devices is what the file system shows; *dm.Manager satisfies it.
type Devices interface {
	Get(name string) (*dm.Device, error)
	List() []*dm.Device // sorted by name
	// OnRemove subscribes f to device removals (dm.Manager.OnRemove):
	// the mount forgets a removed device's inode number.
	OnRemove(f func(*dm.Device)) (cancel func())
}

// Backend is the block I/O an open file goes through; *dm.Device
// satisfies it. The file checks ranges against Size before each call.
type Backend interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	WriteZeroes(off, n int64) error
}

// Owner is a device file's owner and permission bits (0 to 0777).
type Owner struct {
	UID, GID uint32
	Mode     uint32
}

// Options tunes a mount; the zero value is usable.
type Options struct {
	// Open opens dev for one open file and returns what its I/O goes
	// through and the release the kernel's last close of the file calls.
	// nil means dev.Open, I/O on dev, dev.Close.
	Open func(dev *dm.Device) (Backend, func(), error)
	// Owner gives a device file's owner; nil means root, mode 0600.
	// Write bits are cleared for a read-only device.
	Owner func(dev *dm.Device) Owner
	// Logger receives mount and release events; nil means slog.Default().
	Logger *slog.Logger
	// Poll is how often the watcher looks for devices whose size
	// changed, to refresh the kernel's idea of it (see the package
	// doc). Default 1 s; negative disables the watcher.
	Poll time.Duration
	// MaxWrite is the largest read or write the kernel sends (capped by
	// the kernel, 1 MiB by default).
	MaxWrite int
}

const (
	defaultPoll     = time.Second
	defaultMaxWrite = 1 << 20
	rootIno         = 1
)

// fileSystem is the state the nodes share: the devices, the inode number
// each device got, and the files open on them.
type fileSystem struct {
	devs  Devices
	opts  Options
	log   *slog.Logger
	mtime time.Time // of every entry: the mount's start

	mu      sync.Mutex
	inos    map[*dm.Device]uint64
	nextIno uint64
	open    map[*file]struct{}

	stats Stats // stats.go
}

func newFileSystem(devs Devices, opts Options) *fileSystem {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Poll == 0 {
		opts.Poll = defaultPoll
	}
	if opts.MaxWrite <= 0 {
		opts.MaxWrite = defaultMaxWrite
	}
	if opts.Open == nil {
		opts.Open = openDevice
	}
	if opts.Owner == nil {
		opts.Owner = func(*dm.Device) Owner { return Owner{Mode: 0o600} }
	}
	return &fileSystem{devs: devs, opts: opts, log: opts.Logger, mtime: time.Now(),
		inos: map[*dm.Device]uint64{}, nextIno: rootIno + 1, open: map[*file]struct{}{}}
}

func openDevice(dev *dm.Device) (Backend, func(), error) {
	if err := dev.Open(); err != nil {
		return nil, nil, err
	}
	return dev, func() { dev.Close() }, nil
}

// ino is dev's inode number: one per device for the life of the mount,
// never reused, so a device removed and created again under its name is
// a new file to the kernel, and a renamed one the same file.
func (x *fileSystem) ino(dev *dm.Device) uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	ino, ok := x.inos[dev]
	if !ok {
		ino = x.nextIno
		x.nextIno++
		// Removed is set before forget takes mu: a device found just
		// before its removal gets a number, not a place in inos.
		if !dev.Removed() {
			x.inos[dev] = ino
		}
	}
	return ino
}

// forget forgets the inode number of dev, which was removed (the
// subscriber to Devices.OnRemove).
func (x *fileSystem) forget(dev *dm.Device) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.inos, dev)
}

// attr fills a device file's attributes.
func (x *fileSystem) attr(dev *dm.Device, ino uint64, a *fuse.Attr) {
	in := dev.Info()
	o := x.opts.Owner(dev)
	mode := o.Mode & 0o777
	if in.ReadOnly {
		mode &^= 0o222
	}
	size := uint64(in.Size.Bytes())
	*a = fuse.Attr{Ino: ino, Size: size, Blocks: (size + 511) / 512, Mode: syscall.S_IFREG | mode,
		Nlink: 1, Owner: fuse.Owner{Uid: o.UID, Gid: o.GID}, Blksize: 4096}
	a.SetTimes(nil, &x.mtime, &x.mtime)
}

// root is the mount's directory: one entry per device.
type root struct {
	fs.Inode
	x *fileSystem
}

var (
	_ fs.NodeLookuper   = (*root)(nil)
	_ fs.NodeReaddirer  = (*root)(nil)
	_ fs.NodeGetattrer  = (*root)(nil)
	_ fs.NodeStatfser   = (*root)(nil)
	_ fs.NodeSetattrer  = (*root)(nil)
	_ fs.NodeGetxattrer = (*root)(nil)
	_ fs.NodeCreater    = (*root)(nil)
	_ fs.NodeMkdirer    = (*root)(nil)
	_ fs.NodeMknoder    = (*root)(nil)
	_ fs.NodeSymlinker  = (*root)(nil)
	_ fs.NodeLinker     = (*root)(nil)
	_ fs.NodeUnlinker   = (*root)(nil)
	_ fs.NodeRmdirer    = (*root)(nil)
	_ fs.NodeRenamer    = (*root)(nil)
)

func (r *root) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = fuse.Attr{Ino: rootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Blksize: 4096}
	out.SetTimes(nil, &r.x.mtime, &r.x.mtime)
	return 0
}

func (r *root) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

// The directory changes only with the devices: creating, removing and
// renaming files is for `daxsnap create`, `remove` and `rename`.

func (r *root) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EPERM
}

func (r *root) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *root) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *root) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *root) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *root) Unlink(context.Context, string) syscall.Errno { return syscall.EPERM }

func (r *root) Rmdir(context.Context, string) syscall.Errno { return syscall.EPERM }

func (r *root) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EPERM
}

func (r *root) Getxattr(context.Context, string, []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

// Statfs reports the devices' total size as the file system's.
func (r *root) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	var total uint64
	devs := r.x.devs.List()
	for _, d := range devs {
		total += uint64(d.Size())
	}
	*out = fuse.StatfsOut{Blocks: total / 4096, Bsize: 4096, Frsize: 4096, NameLen: 255, Files: uint64(len(devs))}
	return 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dev, err := r.x.devs.Get(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	ino := r.x.ino(dev)
	r.x.attr(dev, ino, &out.Attr)
	ch := r.NewInode(ctx, &node{x: r.x, dev: dev}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: 1})
	return ch, 0
}

func (r *root) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	devs := r.x.devs.List()
	out := make([]fuse.DirEntry, 0, len(devs))
	for _, d := range devs {
		out = append(out, fuse.DirEntry{Name: d.Name(), Mode: syscall.S_IFREG, Ino: r.x.ino(d)})
	}
	return fs.NewListDirStream(out), 0
}

// node is one device's file. It keeps the device it was looked up as:
// a device that is renamed stays this file under its new name.
type node struct {
	fs.Inode
	x   *fileSystem
	dev *dm.Device
}

var (
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeGetxattrer = (*node)(nil)
)

func (n *node) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.x.attr(n.dev, n.StableAttr().Ino, &out.Attr)
	return 0
}

func (n *node) Getxattr(context.Context, string, []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

// Setattr refuses what a device file cannot do: change size (EINVAL, as
// ftruncate on a block device) or owner and mode (EPERM: they are the
// device's, set by whoever created it). Times are accepted and dropped.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.dev.Size() {
		return syscall.EINVAL
	}
	_, m := in.GetMode()
	_, u := in.GetUID()
	_, g := in.GetGID()
	if m || u || g {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

// Open opens the device for the life of the file: it counts in the
// device's open count until the kernel releases the file.
func (n *node) Open(_ context.Context, flags uint32) (_ fs.FileHandle, _ uint32, errno syscall.Errno) {
	defer func() { n.x.stats.count(opOpen, 0, errno) }()
	in := n.dev.Info()
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	switch {
	case !in.LiveTable:
		return nil, 0, syscall.ENXIO
	case write && in.ReadOnly:
		return nil, 0, syscall.EROFS
	}
	be, release, err := n.x.opts.Open(n.dev)
	if err != nil {
		n.x.log.Debug("fuse: open refused", "device", in.Name, "err", err)
		return nil, 0, errnoOf(opOpen, err)
	}
	f := &file{x: n.x, name: in.Name, be: be, release: release}
	n.x.mu.Lock()
	n.x.open[f] = struct{}{}
	n.x.mu.Unlock()
	return f, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

// releaseAll lets go of every file the kernel has not released: after
// the connection is gone, no release will come.
func (x *fileSystem) releaseAll() int {
	x.mu.Lock()
	files := make([]*file, 0, len(x.open))
	for f := range x.open {
		files = append(files, f)
	}
	x.mu.Unlock()
	for _, f := range files {
		f.close()
	}
	return len(files)
}
