package backing

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// daxInfo is what sysfs says about a device-dax instance
// (Documentation/ABI/testing/sysfs-bus-dax).
type daxInfo struct {
	size  int64 // bytes
	align int64 // mapping granularity: offsets and lengths of a mapping must be multiples
	// persistent: the device sits on an nvdimm bus (pmem namespace or CXL
	// pmem region). Soft-reserved (hmem) and CXL RAM devices are volatile:
	// no cache flush makes their stores durable, whatever MAP_SYNC says.
	persistent bool
}

// readDevDAX reads the sysfs attributes of character device major:minor,
// found through /sys/dev/char/M:m. The device's own align attribute exists
// since Linux 5.10; before, the region's align is the device's.
func readDevDAX(sysRoot string, major, minor uint32) (daxInfo, error) {
	num := fmt.Sprintf("%d:%d", major, minor)
	dir, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "dev", "char", num))
	if err != nil {
		return daxInfo{}, fmt.Errorf("character device %s is unknown to sysfs: %w", num, err)
	}
	sub, err := os.Readlink(filepath.Join(dir, "subsystem"))
	if err != nil || filepath.Base(sub) != "dax" {
		return daxInfo{}, fmt.Errorf("character device %s (subsystem %q) is not a device-dax instance: %w", num, filepath.Base(sub), ErrUnsupported)
	}
	size, err := readSysfsInt(filepath.Join(dir, "size"))
	if err != nil {
		return daxInfo{}, err
	}
	align, err := readSysfsInt(filepath.Join(dir, "align"))
	if errors.Is(err, fs.ErrNotExist) {
		align, err = readSysfsInt(filepath.Join(filepath.Dir(dir), "dax_region", "align"))
	}
	if errors.Is(err, fs.ErrNotExist) {
		align, err = int64(os.Getpagesize()), nil
	}
	if err != nil {
		return daxInfo{}, err
	}
	info := daxInfo{size: size, align: align, persistent: onNVDIMMBus(dir)}
	return info, info.check(dir)
}

func (d daxInfo) check(dir string) error {
	switch {
	case d.size <= 0:
		return fmt.Errorf("device-dax %s has size %d: give it capacity first (daxctl reconfigure-device or create-device)", dir, d.size)
	case d.align <= 0 || d.align&(d.align-1) != 0:
		return fmt.Errorf("device-dax %s has alignment %d, not a power of two", dir, d.align)
	case d.size%d.align != 0:
		return fmt.Errorf("device-dax %s: size %d is not a multiple of its alignment %d", dir, d.size, d.align)
	}
	return nil
}

// onNVDIMMBus reports whether a sysfs device path runs through an nvdimm
// bus (".../ndbus0/region0/dax0.0/dax0.0").
func onNVDIMMBus(dir string) bool {
	for _, part := range strings.Split(dir, string(filepath.Separator)) {
		if strings.HasPrefix(part, "ndbus") {
			return true
		}
	}
	return false
}

// readSysfsInt reads a sysfs attribute holding one decimal number.
func readSysfsInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: want a decimal number: %w", path, err)
	}
	return v, nil
}

// openDevDAX opens a /dev/daxX.Y character device as a memory region. Its
// whole size is mapped at once; MAP_SYNC is asked for on persistent devices.
func openDevDAX(sysRoot, path string, opts Options) (Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("open backing device %s: %w", path, err)
	}
	info, err := readDevDAX(sysRoot, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if errors.Is(err, ErrUnsupported) {
		return nil, fmt.Errorf("open backing device %s: %w; %s", path, err, accepted)
	}
	if err != nil {
		return nil, fmt.Errorf("open backing device %s: %w", path, err)
	}
	f, fst, err := openNode(path, opts, unix.S_IFCHR)
	if err != nil {
		return nil, err
	}
	if fst.Rdev != st.Rdev {
		f.Close()
		return nil, fmt.Errorf("open backing device %s: it changed device while being opened; try again", path)
	}
	dev, err := newDevDAX(f, path, fst, info, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return dev, nil
}

func newDevDAX(f *os.File, path string, st *unix.Stat_t, info daxInfo, opts Options) (*memory, error) {
	mem, synced, err := mapShared(int(f.Fd()), info.size, mapping{readOnly: opts.ReadOnly, trySync: info.persistent})
	if err != nil {
		return nil, fmt.Errorf("open backing device %s: %w", path, err)
	}
	caps := DAX
	if synced {
		caps |= Sync
	}
	p := props{path: path, id: idOf(st), kind: KindDevDAX, size: info.size, lbs: 512, caps: caps, ro: opts.ReadOnly}
	return &memory{base: base{props: p}, f: f, fd: int(f.Fd()), mem: mem, pageSize: info.align, sync: synced, file: false}, nil
}
