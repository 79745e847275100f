package kerneltest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Markers the guest's init prints around the scenario's output.
const (
	beginMarker = "@@KT-BEGIN@@"
	endMarker   = "@@KT-END rc="
)

// libDirs is where shared libraries are looked up, in the order of Debian's
// ld.so.conf for amd64.
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// addBinary copies the dynamically or statically linked ELF program at
// hostPath into the archive at guestPath, with its ELF interpreter and every
// shared library it needs (DT_NEEDED, recursively), each at the path the
// host has it under, so the guest's loader finds them the same way.
func addBinary(a *Archive, hostPath, guestPath string) error {
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	a.File(guestPath, data, 0o755)
	return addLibs(a, hostPath, data, map[string]bool{})
}

func addLibs(a *Archive, name string, data []byte, seen map[string]bool) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return fmt.Errorf("%s: read PT_INTERP: %w", name, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if !seen[interp] {
			seen[interp] = true
			ld, err := os.ReadFile(interp)
			if err != nil {
				return fmt.Errorf("%s: interpreter: %w", name, err)
			}
			a.File(interp, ld, 0o755)
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, lib := range needed {
		if seen[lib] {
			continue
		}
		seen[lib] = true
		var found string
		for _, d := range libDirs {
			if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
				found = filepath.Join(d, lib)
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s, not found in %v", name, lib, libDirs)
		}
		ldata, err := os.ReadFile(found) // follows the soname symlink
		if err != nil {
			return err
		}
		a.File(found, ldata, 0o755)
		if err := addLibs(a, found, ldata, seen); err != nil {
			return err
		}
	}
	return nil
}

// addBusybox adds the static busybox and a link for each of its applets.
func addBusybox(a *Archive, busybox string) error {
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if f, err := elf.NewFile(bytes.NewReader(data)); err == nil {
		libs, _ := f.ImportedLibraries()
		f.Close()
		if len(libs) != 0 {
			return fmt.Errorf("%s is dynamically linked (needs %v): install busybox-static", busybox, libs)
		}
	}
	a.File("bin/busybox", data, 0o755)
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || a.Has(applet) {
			continue
		}
		a.Symlink(applet, "/bin/busybox")
	}
	return nil
}

// initScript is the guest's /init: mount the pseudo file systems, load the
// modules, wait for the devices, run /scenario.sh between markers, power
// off. Kernel messages are kept off the console (printk level 1) so they do
// not interleave with the scenario's output; the script reads them with
// dmesg.
func initScript(modules []string, waitFor []string, libPath string) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run
echo 1 > /proc/sys/kernel/printk
`)
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /modules/%s || echo \"KT: insmod %s failed\"\n", path.Base(m), path.Base(m))
	}
	for _, dev := range waitFor {
		fmt.Fprintf(&b, "i=0; while [ ! -e %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; [ -e %s ] || echo \"KT: %s did not appear\"\n", dev, dev, dev)
	}
	fmt.Fprintf(&b, `export DM_DISABLE_UDEV=1 LD_LIBRARY_PATH=%s PATH=/sbin:/usr/sbin:/bin:/usr/bin
echo %s
sh /scenario.sh
echo "%s$?@@"
sync
poweroff -f
`, libPath, beginMarker, endMarker)
	return b.String()
}

// buildInitramfs writes the initramfs for a boot to file.
func buildInitramfs(file string, k Kernel, modules []string, waitFor []string, script string) error {
	a := NewArchive()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "modules"} {
		a.Dir(d)
	}
	a.CharDev("dev/console", 5, 1, 0o600)
	a.CharDev("dev/null", 1, 3, 0o666)
	if err := addBusybox(a, "/bin/busybox"); err != nil {
		return err
	}
	dmsetup, err := exec.LookPath("dmsetup")
	if err != nil {
		return fmt.Errorf("dmsetup: %w", err)
	}
	if err := addBinary(a, dmsetup, "sbin/dmsetup"); err != nil {
		return err
	}
	files, err := k.loadOrder(modules)
	if err != nil {
		return err
	}
	var names []string
	for _, rel := range files {
		data, err := readModule(filepath.Join(k.ModulesDir, rel))
		if err != nil {
			return err
		}
		name := moduleName(rel) + ".ko"
		a.File("modules/"+name, data, 0o644)
		names = append(names, name)
	}
	a.File("init", []byte(initScript(names, waitFor, strings.Join(libDirs, ":"))), 0o755)
	a.File("scenario.sh", []byte(script), 0o755)
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := a.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs %s: %w", file, err)
	}
	return f.Close()
}
