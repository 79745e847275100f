package persist

// lineSize is the write-back granularity. Every amd64 CPU that has CLWB or
// CLFLUSHOPT uses 64-byte lines; a larger line would only make some of the
// loop's instructions redundant, never skip a line.
const lineSize = 64

// Flush writes every cache line holding b back to memory and then fences,
// so that once it returns the stores to b have reached the persistence
// domain of MAP_SYNC media. It uses the cheapest instruction the CPU has:
// CLWB (keeps the line cached), else CLFLUSHOPT, else CLFLUSH. It cannot
// fail on amd64; the error exists for other architectures.
func Flush(b []byte) error {
	writeBack(b)
	return nil
}

// writeBack is chosen once from CPUID. golang.org/x/sys/cpu does not report
// CLWB or CLFLUSHOPT, so the bits are read directly (leaf 7, EBX bits 24 and
// 23; CLFLUSH is part of SSE2, which every amd64 CPU has).
var writeBack, writeBackName = pickWriteBack()

func pickWriteBack() (func([]byte), string) {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf >= 7 {
		_, ebx, _, _ := cpuid(7, 0)
		if ebx&(1<<24) != 0 {
			return flushCLWB, "clwb"
		}
		if ebx&(1<<23) != 0 {
			return flushCLFLUSHOPT, "clflushopt"
		}
	}
	return flushCLFLUSH, "clflush"
}

// Each of these writes back the lines from b's first byte (rounded down to
// a line) to its last byte, then executes SFENCE. An empty b only fences.

//go:noescape
func flushCLWB(b []byte)

//go:noescape
func flushCLFLUSHOPT(b []byte)

//go:noescape
func flushCLFLUSH(b []byte)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
