package kerneltest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	name         string
	mode         uint32
	data         string
	rmaj, rmin   uint32
	headerOffset int
}

// parseNewc is an independent reader of the newc format, for checking the
// writer.
func parseNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		f := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("bad field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, size, namesize := f(1), int(f(6)), int(f(11))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+namesize-1])
		if b[nameStart+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		dataStart := align(nameStart + namesize)
		e := cpioEntry{name: name, mode: mode, data: string(b[dataStart : dataStart+size]), rmaj: f(9), rmin: f(10), headerOffset: off}
		off = align(dataStart + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestArchive(t *testing.T) {
	a := NewArchive()
	a.File("bin/busybox", []byte("12345"), 0o755)
	a.Symlink("/bin/sh", "/bin/busybox")
	a.File("lib/x86_64-linux-gnu/libc.so.6", []byte("libc"), 0o644)
	a.CharDev("dev/console", 5, 1, 0o600)
	a.Dir("proc")
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, buf.Len())
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	es := parseNewc(t, buf.Bytes())
	var names []string
	byName := map[string]cpioEntry{}
	for _, e := range es {
		names = append(names, e.name)
		byName[e.name] = e
	}
	want := []string{"bin", "bin/busybox", "bin/sh", "dev", "dev/console", "lib", "lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu/libc.so.6", "proc"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries %q, want %q (parents before children)", names, want)
	}
	for name, w := range map[string]struct {
		mode uint32
		data string
	}{
		"bin":                            {sIFDIR | 0o755, ""},
		"bin/busybox":                    {sIFREG | 0o755, "12345"},
		"bin/sh":                         {sIFLNK | 0o777, "/bin/busybox"},
		"lib/x86_64-linux-gnu/libc.so.6": {sIFREG | 0o644, "libc"},
		"dev/console":                    {sIFCHR | 0o600, ""},
	} {
		if e := byName[name]; e.mode != w.mode || e.data != w.data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, e.mode, e.data, w.mode, w.data)
		}
	}
	if e := byName["dev/console"]; e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", e.rmaj, e.rmin)
	}
}

func TestModuleOrder(t *testing.T) {
	dep := `kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko:
kernel/drivers/md/dm-snapshot.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/drivers/nvdimm/libnvdimm.ko.xz:
kernel/drivers/nvdimm/nd_btt.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/nvdimm/nd_pmem.ko.xz: kernel/drivers/nvdimm/nd_btt.ko.xz kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/broken.ko: kernel/drivers/missing.ko
`
	md, err := parseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	got, err := md.order([]string{"dm_snapshot", "dm-mod", "nd-pmem", "virtio_pci"}, map[string]bool{"virtio_pci": true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/md/dm-bufio.ko", "kernel/drivers/md/dm-mod.ko", "kernel/drivers/md/dm-snapshot.ko",
		"kernel/drivers/nvdimm/libnvdimm.ko.xz", "kernel/drivers/nvdimm/nd_btt.ko.xz", "kernel/drivers/nvdimm/nd_pmem.ko.xz",
	}
	if !slices.Equal(got, want) {
		t.Errorf("order %q\nwant %q", got, want)
	}
	if _, err := md.order([]string{"nosuch"}, nil); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown module: err %v", err)
	}
	if _, err := md.order([]string{"broken"}, nil); err == nil || !strings.Contains(err.Error(), "missing.ko") {
		t.Errorf("dependency without a line: err %v", err)
	}
}

func TestFindKernel(t *testing.T) {
	root := t.TempDir()
	oldBoot, oldMods := bootDir, modulesDir
	t.Cleanup(func() { bootDir, modulesDir = oldBoot, oldMods })
	bootDir, modulesDir = filepath.Join(root, "boot"), filepath.Join(root, "modules")
	if _, err := FindKernel(); err == nil || !strings.Contains(err.Error(), "linux-image-amd64") {
		t.Errorf("no kernel: err %v", err)
	}
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-60-amd64", "6.10.0-1-amd64"} {
		os.MkdirAll(bootDir, 0o755)
		os.WriteFile(filepath.Join(bootDir, "vmlinuz-"+v), nil, 0o644)
		if v != "6.10.0-1-amd64" { // an image without modules is ignored
			os.MkdirAll(filepath.Join(modulesDir, v), 0o755)
			os.WriteFile(filepath.Join(modulesDir, v, "modules.dep"), nil, 0o644)
		}
	}
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != "6.1.0-60-amd64" || k.Image != filepath.Join(bootDir, "vmlinuz-6.1.0-60-amd64") || k.ModulesDir != filepath.Join(modulesDir, "6.1.0-60-amd64") {
		t.Errorf("FindKernel = %+v, want 6.1.0-60-amd64", k)
	}
}

// TestInitramfs builds a real initramfs from the host's files and checks
// that it holds what the guest needs: busybox and its applets, dmsetup
// with its loader and libraries, the modules in dependency order.
func TestInitramfs(t *testing.T) {
	k := Require(t)
	p := filepath.Join(t.TempDir(), "initrd")
	if err := buildInitramfs(p, k, append(append([]string{}, BaseModules...), NVDIMMModules...), []string{"/dev/vda"}, "echo hi\n"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	byName := map[string]cpioEntry{}
	for _, e := range parseNewc(t, b) {
		byName[e.name] = e
	}
	for _, name := range []string{"init", "scenario.sh", "bin/busybox", "bin/sh", "sbin/insmod", "sbin/dmsetup",
		"lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libdevmapper.so.1.02.1", "lib/x86_64-linux-gnu/libc.so.6",
		"modules/dm_mod.ko", "modules/dm_snapshot.ko", "modules/dm_bufio.ko", "modules/nd_pmem.ko", "modules/nfit.ko", "modules/libnvdimm.ko"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("initramfs lacks %s", name)
		}
	}
	init := byName["init"].data
	if i, j := strings.Index(init, "dm_bufio.ko"), strings.Index(init, "dm_snapshot.ko"); i < 0 || j < i {
		t.Errorf("init does not load dm_bufio before dm_snapshot:\n%s", init)
	}
	if i, j := strings.Index(init, "libnvdimm.ko"), strings.Index(init, "nd_pmem.ko"); i < 0 || j < i {
		t.Errorf("init does not load libnvdimm before nd_pmem:\n%s", init)
	}
	if mod := byName["modules/dm_mod.ko"].data; !strings.HasPrefix(mod, "\x7fELF") {
		t.Errorf("modules/dm_mod.ko is not an ELF object")
	}
}
