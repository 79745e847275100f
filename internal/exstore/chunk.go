package exstore

import "fmt"

// DefaultChunkSize is the chunk size a persistent store uses when the table
// gives 0: 32 sectors (16 KiB), or the COW device's logical block size if
// that is larger (the kernel's DM_CHUNK_SIZE_DEFAULT_SECTORS).
const DefaultChunkSize Sector = 32

// MaxChunkSize is the largest chunk size the kernel accepts: it must not
// exceed INT_MAX>>9 sectors, and the largest power of two below that is
// 2^21 sectors (1 GiB).
const MaxChunkSize Sector = 1 << 21

// ValidateChunkSize checks a chunk size in sectors the way the kernel's
// dm_exception_store_set_chunk_size does: a power of two, a multiple of
// the logical block size (in bytes) of every device given (the COW device
// and the origin), and at most MaxChunkSize. The error matches
// ErrInvalidChunkSize and says which rule failed.
func ValidateChunkSize(chunk Sector, logicalBlockSizes ...int) error {
	if chunk == 0 || chunk&(chunk-1) != 0 {
		return fmt.Errorf("%w: %d sectors is not a power of two (use 8 for 4 KiB, 32 for 16 KiB...)", ErrInvalidChunkSize, chunk)
	}
	if chunk > MaxChunkSize {
		return fmt.Errorf("%w: %d sectors is larger than the maximum %d sectors (1 GiB)", ErrInvalidChunkSize, chunk, MaxChunkSize)
	}
	for _, lbs := range logicalBlockSizes {
		if lbs > 0 && chunk.Bytes()%int64(lbs) != 0 {
			return fmt.Errorf("%w: %d sectors (%d bytes) is not a multiple of the device's logical block size of %d bytes; use a chunk size of at least %d sectors",
				ErrInvalidChunkSize, chunk, chunk.Bytes(), lbs, lbs/SectorSize)
		}
	}
	return nil
}
