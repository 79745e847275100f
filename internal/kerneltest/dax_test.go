package kerneltest

import (
	"path/filepath"
	"strings"
	"testing"
)

// pmemFSDAX is the guest script fragment that turns the emulated NVDIMM's
// label-less namespace from raw mode (which the 6.1 pmem driver does not
// make DAX-capable) into fsdax mode, as `ndctl create-namespace -f -e
// namespace0.0 -m fsdax -M dev` would: detach it from nd_pmem, attach a pfn
// device to it (memmap on the device) and bind that to nd_pmem, which
// writes the pfn info block and brings /dev/pmem0 back with DAX.
const pmemFSDAX = `echo "raw pmem0 dax: $(cat /sys/block/pmem0/queue/dax)"
cd /sys/bus/nd/devices
echo namespace0.0 > /sys/bus/nd/drivers/nd_pmem/unbind
pfn=$(cat region0/pfn_seed)
cat /proc/sys/kernel/random/uuid > $pfn/uuid
echo pmem > $pfn/mode
echo namespace0.0 > $pfn/namespace
echo $pfn > /sys/bus/nd/drivers/nd_pmem/bind
cd /
i=0; while [ ! -e /dev/pmem0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
echo "namespace mode: $(cat /sys/bus/nd/devices/namespace0.0/mode)"
`

// TestKernelSeedDAX records the kernel behaviour daxsnap exists to improve
// on (the 2018 dm-devel thread "Snapshot target and DAX-capable devices"):
// a live DAX-capable dm device (linear over fsdax pmem) cannot be reloaded
// with snapshot-origin, the step LVM takes to snapshot it. The table load
// is refused with "can't change device type" (dm type DAX_BIO_BASED=3 to
// BIO_BASED=1), the device keeps its linear table and DAX, and so the
// origin cannot be snapshotted while it stays DAX. The same reload on a
// device that is not DAX succeeds, which shows the refusal is about DAX.
func TestKernelSeedDAX(t *testing.T) {
	k := Require(t)
	dir := t.TempDir()
	cow := writeImage(t, dir, "cow.img", nil, 4<<20)
	plain := writeImage(t, dir, "plain.img", nil, 4<<20)
	r := Boot(t, k, Options{
		Disks:  []string{cow, plain},
		NVDIMM: filepath.Join(dir, "nvdimm.img"),
		Script: pmemFSDAX + `N=$(blockdev --getsz /dev/pmem0)
echo "pmem0 sectors: $N"
echo "pmem0 dax: $(cat /sys/block/pmem0/queue/dax)"
step() { name=$1; shift; out=$("$@" 2>&1); rc=$?; echo "$name rc: $rc"; [ -z "$out" ] || echo "$out" | sed "s/^/$name says: /"; }

step "create lin" dmsetup create lin --table "0 $N linear /dev/pmem0 0"
lin=$(dmsetup info -c --noheadings -o blkdevname lin)
echo "lin dm: $lin"
echo "lin dax: $(cat /sys/block/$lin/queue/dax)"
step "create snap" dmsetup create snap --table "0 $N snapshot /dev/pmem0 /dev/vda P 8"
step "load lin" dmsetup load lin --table "0 $N snapshot-origin /dev/pmem0"
echo "lin tables after load: $(dmsetup info lin | sed -n 's/^Tables present: *//p')"
step "resume lin" dmsetup resume lin
echo "lin table: $(dmsetup table lin)"
echo "lin dax after: $(cat /sys/block/$lin/queue/dax)"
step "suspend lin" dmsetup suspend lin
step "load suspended lin" dmsetup load lin --table "0 $N snapshot-origin /dev/pmem0"
step "resume suspended lin" dmsetup resume lin
step "create new origin" dmsetup create neworigin --table "0 $N snapshot-origin /dev/pmem0"
echo "new origin dax: $(cat /sys/block/$(dmsetup info -c --noheadings -o blkdevname neworigin)/queue/dax)"

step "create plain" dmsetup create plain --table "0 8192 linear /dev/vdb 0"
echo "plain dax: $(cat /sys/block/$(dmsetup info -c --noheadings -o blkdevname plain)/queue/dax)"
step "load plain" dmsetup load plain --table "0 8192 snapshot-origin /dev/vdb"
step "resume plain" dmsetup resume plain
echo "plain table: $(dmsetup table plain)"
dmesg | grep 'device-mapper: ioctl: can' | sed 's/^\[[^]]*\] /dmesg: /'
dmsetup remove_all
echo done
`,
	})
	t.Logf("guest output:\n%s", r.Output)
	if r.ExitCode != 0 || !strings.Contains(r.Output, "done\n") {
		t.Fatalf("guest script failed (exit %d)", r.ExitCode)
	}
	n := field(t, r.Output, "pmem0 sectors")
	want := []struct{ key, value string }{
		// The setup: fsdax pmem and a linear device over it are DAX.
		{"namespace mode", "memory"}, // sysfs's name for fsdax
		{"pmem0 dax", "1"},
		{"create lin rc", "0"},
		{"lin dax", "1"},
		{"create snap rc", "0"},
		// The seed scenario: the reload is refused at load time.
		{"load lin rc", "1"},
		{"load lin says", "device-mapper: reload ioctl on lin  failed: Invalid argument"},
		{"lin tables after load", "LIVE"},
		{"resume lin rc", "0"},
		{"lin table", "0 " + n + " linear 259:0 0"},
		{"lin dax after", "1"},
		// Suspending first (as LVM does) changes nothing.
		{"suspend lin rc", "0"},
		{"load suspended lin rc", "1"},
		{"load suspended lin says", "device-mapper: reload ioctl on lin  failed: Invalid argument"},
		{"resume suspended lin rc", "0"},
		// A new snapshot-origin device over the same pmem works, without DAX.
		{"create new origin rc", "0"},
		{"new origin dax", "0"},
		// Without DAX the same reload is fine.
		{"create plain rc", "0"},
		{"plain dax", "0"},
		{"load plain rc", "0"},
		{"resume plain rc", "0"},
		{"dmesg", "device-mapper: ioctl: can't change device type (old=3 vs new=1) after initial table load."},
	}
	for _, w := range want {
		if got := field(t, r.Output, w.key); got != w.value {
			t.Errorf("%s: %q, want %q", w.key, got, w.value)
		}
	}
	if got := strings.Count(r.Output, "dmesg: device-mapper: ioctl: can't change device type"); got != 2 {
		t.Errorf("the kernel logged %d type-change refusals, want 2 (one per load)", got)
	}
	if got, want := field(t, r.Output, "plain table"), "0 8192 snapshot-origin"; !strings.HasPrefix(got, want) {
		t.Errorf("plain table %q, want %q...", got, want)
	}
}
