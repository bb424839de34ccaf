package prefetch

import (
	"testing"
	"unsafe"
)

// TestLine checks that Line accepts any address: a live one, nil, and one
// that is not mapped (a prefetch never faults).
func TestLine(t *testing.T) {
	b := make([]byte, 4096)
	Line(uintptr(unsafe.Pointer(&b[0])))
	Line(uintptr(unsafe.Pointer(&b[4095])))
	Line(0)
	Line(^uintptr(0) &^ 63)
	Line(1 << 47) // above the user half of amd64 and arm64 address spaces
}

func BenchmarkLine(b *testing.B) {
	buf := make([]byte, 64)
	p := uintptr(unsafe.Pointer(&buf[0]))
	for b.Loop() {
		Line(p)
	}
}
