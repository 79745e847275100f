package backing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// isDevNumber reports whether name has the shape major:minor (decimal
// digits), the way dmsetup tables name block devices; parseDevNumber then
// says whether the numbers are valid.
func isDevNumber(name string) bool {
	ma, mi, ok := strings.Cut(name, ":")
	digits := func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
	return ok && digits(ma) && digits(mi)
}

func parseDevNumber(name string) (major, minor uint32, err error) {
	if !isDevNumber(name) {
		return 0, 0, fmt.Errorf("%q is not major:minor", name)
	}
	ma, mi, _ := strings.Cut(name, ":")
	m1, err1 := strconv.ParseUint(ma, 10, 12) // MAJORBITS
	m2, err2 := strconv.ParseUint(mi, 10, 20) // MINORBITS
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not major:minor: the kernel's numbers go up to 4095:1048575", name)
	}
	return uint32(m1), uint32(m2), nil
}

// resolveDevNumber finds the /dev node of block device major:minor through
// sysfs (DEVNAME in /sys/dev/block/M:m/uevent) and checks that the node is
// that device.
func resolveDevNumber(sysRoot, devRoot, name string) (string, error) {
	major, minor, err := parseDevNumber(name)
	if err != nil {
		return "", err
	}
	num := fmt.Sprintf("%d:%d", major, minor)
	uevent := filepath.Join(sysRoot, "dev", "block", num, "uevent")
	data, err := os.ReadFile(uevent)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("block device %s: no such device (%s does not exist; lsblk lists block devices with their MAJ:MIN)", name, uevent)
	}
	if err != nil {
		return "", fmt.Errorf("block device %s: %w", name, err)
	}
	devname := ueventValue(data, "DEVNAME")
	if devname == "" || strings.Contains(devname, "..") {
		return "", fmt.Errorf("block device %s: %s has no usable DEVNAME line", name, uevent)
	}
	node := filepath.Join(devRoot, devname)
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		return "", fmt.Errorf("block device %s is %s, but %w (is devtmpfs mounted on %s?)", name, devname, err, devRoot)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor {
		return "", fmt.Errorf("block device %s is %s, but %s is not that device (it is %d:%d, mode %#o)",
			name, devname, node, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode&unix.S_IFMT)
	}
	return node, nil
}

// ueventValue returns the value of KEY=value in a sysfs uevent file.
func ueventValue(data []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
