package kerneltest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Archive is an in-memory list of initramfs entries, written in the cpio
// "newc" format the kernel unpacks (Documentation/driver-api/early-userspace/
// buffer-format.rst). Parent directories are created implicitly.
type Archive struct {
	entries map[string]entry
}

type entry struct {
	mode   uint32 // file type and permission bits, as in st_mode
	data   []byte // file contents, or a symlink's target
	rmajor uint32
	rminor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// NewArchive returns an empty archive.
func NewArchive() *Archive { return &Archive{entries: map[string]entry{}} }

func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (a *Archive) add(name string, e entry) {
	name = clean(name)
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := a.entries[d]; !ok {
			a.entries[d] = entry{mode: sIFDIR | 0o755}
		}
	}
	a.entries[name] = e
}

// File adds a regular file with permission bits perm.
func (a *Archive) File(name string, data []byte, perm fs.FileMode) {
	a.add(name, entry{mode: sIFREG | uint32(perm.Perm()), data: data})
}

// Dir adds a directory.
func (a *Archive) Dir(name string) { a.add(name, entry{mode: sIFDIR | 0o755}) }

// Symlink adds a symbolic link name -> target.
func (a *Archive) Symlink(name, target string) {
	a.add(name, entry{mode: sIFLNK | 0o777, data: []byte(target)})
}

// CharDev adds a character device node.
func (a *Archive) CharDev(name string, major, minor uint32, perm fs.FileMode) {
	a.add(name, entry{mode: sIFCHR | uint32(perm.Perm()), rmajor: major, rminor: minor})
}

// Has reports whether the archive holds name.
func (a *Archive) Has(name string) bool {
	_, ok := a.entries[clean(name)]
	return ok
}

// WriteTo writes the archive in newc format, directories before what they
// contain, ending with the TRAILER!!! entry.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// Sorting puts "a" before "a/b": parents come first.
	sort.Strings(names)
	cw := &countWriter{w: bufio.NewWriter(w)}
	ino := uint32(1)
	for _, n := range names {
		e := a.entries[n]
		writeEntry(cw, n, e, ino)
		ino++
	}
	writeEntry(cw, "TRAILER!!!", entry{}, 0)
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.Write(make([]byte, 4-r))
	}
}

func writeEntry(w *countWriter, name string, e entry, ino uint32) {
	nlink := uint32(1)
	if e.mode&0o170000 == sIFDIR {
		nlink = 2
	}
	// c_magic, then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink,
	// mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize
	// (with the NUL), check.
	fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rmajor, e.rminor, len(name)+1, 0)
	w.Write([]byte(name + "\x00"))
	w.pad()
	w.Write(e.data)
	w.pad()
}
