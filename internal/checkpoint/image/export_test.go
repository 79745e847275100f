package image

import "encoding/binary"

// FixChecksums rewrites the CRCs of both header slots and of every
// segment descriptor that a header's end covers, so that fuzzing reaches
// the checks behind them.
func FixChecksums(j []byte) {
	le := binary.LittleEndian
	end := int64(dataStart)
	for i := range 2 {
		if len(j) < (i+1)*slotSize {
			break
		}
		b := j[i*slotSize:]
		if len(b) < headerLen || string(b[:8]) != headerMagic {
			continue
		}
		le.PutUint32(b[headerFields:], crc(b[:headerFields]))
		end = max(end, int64(le.Uint64(b[64:])))
	}
	for off := int64(dataStart); off+descSize <= min(end, int64(len(j))); {
		b := j[off : off+descSize]
		if string(b[:8]) != segmentMagic {
			return
		}
		le.PutUint32(b[28:], 0)
		le.PutUint32(b[28:], crc(b))
		data := int64(le.Uint64(b[32:]))
		if data <= 0 || data%align != 0 {
			return
		}
		off += descSize + data
	}
}

// Slot and DataStart locate the parts of a journal for tests.
const (
	SlotSize  = slotSize
	DataStart = dataStart
	DescSize  = descSize
)
