package uffd

import (
	"fmt"
	"math/bits"
	"strings"
)

// Feature is a set of UFFD_FEATURE_* bits: what UFFDIO_API enables on a
// userfaultfd and what the kernel offers.
type Feature uint64

// The features of include/uapi/linux/userfaultfd.h, with the first Linux
// release that has each. Several also depend on the kernel's configuration
// (CONFIG_HAVE_ARCH_USERFAULTFD_WP, CONFIG_PTE_MARKER_UFFD_WP): Available
// tells what this kernel really offers.
const (
	// FeaturePagefaultFlagWP: write-protect mode (UFFDIO_REGISTER_MODE_WP,
	// UFFDIO_WRITEPROTECT) and the WP flag in fault messages; anonymous
	// memory only unless FeatureWPHugetlbfsShmem is offered too. 5.7.
	FeaturePagefaultFlagWP Feature = 1 << 0
	// FeatureEventFork: a forked child gets a copy of the registrations and
	// the handler an EventFork with its new userfaultfd. Needs
	// CAP_SYS_PTRACE. 4.11.
	FeatureEventFork Feature = 1 << 1
	// FeatureEventRemap: EventRemap when a registered range is mremap()ed. 4.11.
	FeatureEventRemap Feature = 1 << 2
	// FeatureEventRemove: EventRemove on madvise(MADV_DONTNEED/MADV_REMOVE)
	// of a registered range. 4.11.
	FeatureEventRemove Feature = 1 << 3
	// FeatureMissingHugetlbfs: missing mode on hugetlbfs. 4.11.
	FeatureMissingHugetlbfs Feature = 1 << 4
	// FeatureMissingShmem: missing mode on shmem. 4.11.
	FeatureMissingShmem Feature = 1 << 5
	// FeatureEventUnmap: EventUnmap when a registered range is munmap()ed. 4.11.
	FeatureEventUnmap Feature = 1 << 6
	// FeatureSigbus: faults raise SIGBUS instead of waiting for a handler. 4.14.
	FeatureSigbus Feature = 1 << 7
	// FeatureThreadID: fault messages carry the faulting thread's id. 4.14.
	FeatureThreadID Feature = 1 << 8
	// FeatureMinorHugetlbfs: minor-fault mode on hugetlbfs. 5.13.
	FeatureMinorHugetlbfs Feature = 1 << 9
	// FeatureMinorShmem: minor-fault mode on shmem. 5.14.
	FeatureMinorShmem Feature = 1 << 10
	// FeatureExactAddress: fault addresses are not rounded down to the page. 5.18.
	FeatureExactAddress Feature = 1 << 11
	// FeatureWPHugetlbfsShmem: write-protect mode on shmem (tmpfs, memfd)
	// and hugetlbfs. 5.19.
	FeatureWPHugetlbfsShmem Feature = 1 << 12
	// FeatureWPUnpopulated: write-protecting anonymous memory also protects
	// pages never touched. Shmem and hugetlbfs always get that (the kernel
	// installs PTE markers for them); see the package documentation. 6.4.
	FeatureWPUnpopulated Feature = 1 << 13
	// FeaturePoison: UFFDIO_POISON. 6.6.
	FeaturePoison Feature = 1 << 14
	// FeatureWPAsync: write-protect faults are resolved by the kernel
	// without a message (for dirty tracking through PAGEMAP_SCAN). 6.7.
	FeatureWPAsync Feature = 1 << 15
	// FeatureMove: UFFDIO_MOVE. 6.8.
	FeatureMove Feature = 1 << 16
)

type featureInfo struct {
	name  string // without the UFFD_FEATURE_ prefix
	since string // first Linux release with the feature
	what  string // what a caller who needs it wants, for error messages
}

var features = [...]featureInfo{
	{"PAGEFAULT_FLAG_WP", "5.7", "write-protect faults"},
	{"EVENT_FORK", "4.11", "fork events"},
	{"EVENT_REMAP", "4.11", "mremap events"},
	{"EVENT_REMOVE", "4.11", "madvise remove events"},
	{"MISSING_HUGETLBFS", "4.11", "missing faults on hugetlbfs"},
	{"MISSING_SHMEM", "4.11", "missing faults on shmem"},
	{"EVENT_UNMAP", "4.11", "munmap events"},
	{"SIGBUS", "4.14", "SIGBUS instead of fault messages"},
	{"THREAD_ID", "4.14", "the faulting thread id"},
	{"MINOR_HUGETLBFS", "5.13", "minor faults on hugetlbfs"},
	{"MINOR_SHMEM", "5.14", "minor faults on shmem"},
	{"EXACT_ADDRESS", "5.18", "exact fault addresses"},
	{"WP_HUGETLBFS_SHMEM", "5.19", "write-protect of shmem and hugetlbfs"},
	{"WP_UNPOPULATED", "6.4", "write-protect of never-touched anonymous pages"},
	{"POISON", "6.6", "UFFDIO_POISON"},
	{"WP_ASYNC", "6.7", "asynchronous write-protect"},
	{"MOVE", "6.8", "UFFDIO_MOVE"},
}

// String lists the features by their kernel names, "PAGEFAULT_FLAG_WP|
// EVENT_UNMAP"; bits this package does not know are shown in hex.
func (f Feature) String() string {
	if f == 0 {
		return "none"
	}
	var names []string
	for f != 0 {
		i := bits.TrailingZeros64(uint64(f))
		f &^= 1 << i
		if i < len(features) {
			names = append(names, features[i].name)
		} else {
			names = append(names, fmt.Sprintf("%#x", uint64(1)<<i))
		}
	}
	return strings.Join(names, "|")
}

// FeatureError is returned by (*FD).API when the kernel lacks features the
// caller requires. It wraps ErrUnsupported.
type FeatureError struct {
	Missing   Feature // required but not offered
	Available Feature // everything the kernel offers
	Kernel    string  // the running kernel's release (uname -r), if known
}

func (e *FeatureError) Error() string {
	var b strings.Builder
	b.WriteString("userfaultfd: ")
	first := true
	for f := e.Missing; f != 0; {
		i := bits.TrailingZeros64(uint64(f))
		f &^= 1 << i
		if !first {
			b.WriteString("; ")
		}
		first = false
		if i < len(features) {
			fi := features[i]
			fmt.Fprintf(&b, "%s needs Linux %s+ (UFFD_FEATURE_%s)", fi.what, fi.since, fi.name)
		} else {
			fmt.Fprintf(&b, "feature bit %d is unknown to this kernel", i)
		}
	}
	kernel := "this kernel"
	if e.Kernel != "" {
		kernel = "this kernel (" + e.Kernel + ")"
	}
	fmt.Fprintf(&b, "; %s offers features %#x (%s): run a newer kernel, or one built with CONFIG_USERFAULTFD and CONFIG_PTE_MARKER_UFFD_WP",
		kernel, uint64(e.Available), e.Available)
	return b.String()
}

func (e *FeatureError) Unwrap() error { return ErrUnsupported }
