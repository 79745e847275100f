package backing

import (
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Options control how a backing device is opened.
type Options struct {
	// ReadOnly opens the device O_RDONLY (and maps memory PROT_READ); every
	// write, discard and write-zeroes then fails with EROFS.
	ReadOnly bool
	// NoFollow refuses a path that is a symbolic link (O_NOFOLLOW): a
	// file the daemon made itself must be that file, not a link someone
	// put in its place.
	NoFollow bool
	// Verify, if set, checks the opened file (its fstat) before it is
	// used, for example that it is the very inode and owner recorded when
	// it was made; its error refuses the open.
	Verify func(st *unix.Stat_t) error
	// GrowLimit, for a memory file (tmpfs, hugetlbfs, fsdax), reserves
	// address space for its mapping to grow to this many bytes: Reprobe
	// then takes in the file grown (ftruncate, fallocate) up to it, as a
	// plain file's growth is taken in. A snapshot's COW is opened so, to
	// be extended. 0, or no more than the file's size, maps the file at
	// its size and no more; other kinds ignore it.
	GrowLimit int64
}

// accepted ends every "not a backing device" error: what to give instead.
const accepted = "daxsnap accepts a regular file (on tmpfs or hugetlbfs it is used as memory), " +
	"a block device given by path or as major:minor, or a /dev/daxX.Y device"

// sysfs and devDir are where Open looks up device numbers; tests of the
// parsers use their own trees.
const (
	sysfs  = "/sys"
	devDir = "/dev"
)

// Open opens the backing device at path and probes what it is:
//   - "major:minor" (decimal): the block device with that number;
//   - a block device: I/O through the device node (KindBlock);
//   - a regular file on tmpfs or hugetlbfs: a memory region mapped shared
//     (KindTmpfs, KindHugetlbfs: dax,wpfault);
//   - a regular file with the DAX attribute: a memory region mapped with
//     MAP_SYNC when the kernel grants it (KindFSDAX: dax, plus sync if so);
//   - a /dev/daxX.Y device: a memory region (KindDevDAX);
//   - any other regular file: I/O through the file (KindFile).
//
// Path of the result is path, or the /dev node for a major:minor name.
func Open(path string, opts Options) (Device, error) {
	if isDevNumber(path) {
		node, err := resolveDevNumber(sysfs, devDir, path)
		if err != nil {
			return nil, err
		}
		path = node
	}
	stat := os.Stat
	if opts.NoFollow {
		stat = os.Lstat
	}
	fi, err := stat(path)
	if err != nil {
		return nil, fmt.Errorf("open backing device: %w (%s)", err, accepted)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return openRegular(path, opts)
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0:
		return openBlock(path, opts)
	case m&fs.ModeCharDevice != 0:
		return openDevDAX(sysfs, path, opts)
	default:
		return nil, fmt.Errorf("open backing device %s: it is %s: %w; %s", path, describeMode(m), ErrUnsupported, accepted)
	}
}

// shellArg is s as one argument of a shell command in a hint: as is if
// it is plain, else in single quotes.
func shellArg(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:@%+=,-", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link, where a file was expected"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a unix socket"
	case m&fs.ModeIrregular != 0:
		return "a file of unknown type"
	}
	return "a " + m.Type().String() + " file"
}

// openNode opens path for the device's access mode and checks that it is
// still of type want (S_IFREG, S_IFBLK, S_IFCHR): the path may have been
// replaced between Open's stat and this open.
func openNode(path string, opts Options, want uint32) (*os.File, *unix.Stat_t, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	if opts.NoFollow {
		flag |= unix.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open backing device: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open backing device %s: fstat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != want {
		f.Close()
		return nil, nil, fmt.Errorf("open backing device %s: it changed type while being opened; try again", path)
	}
	if opts.Verify != nil {
		if err := opts.Verify(&st); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("open backing device %s: %w", path, err)
		}
	}
	return f, &st, nil
}

// openRegular probes what a regular file is and opens it as that.
func openRegular(path string, opts Options) (Device, error) {
	f, st, err := openNode(path, opts, unix.S_IFREG)
	if err != nil {
		return nil, err
	}
	kind, pageSize, err := probeRegular(int(f.Fd()))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open backing device %s: %w", path, err)
	}
	var dev Device
	if kind == KindFile {
		dev, err = newFile(f, path, st, opts)
	} else {
		dev, err = newMemoryFile(f, path, st, kind, pageSize, opts)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return dev, nil
}
