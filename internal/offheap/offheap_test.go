package offheap

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// A mapping is zeroed, writable, of the size asked; a large one is
// advised to use huge pages (seen in /proc/self/smaps as "hg" where the
// kernel reports VmFlags), a small one is not.
func TestMap(t *testing.T) {
	for _, n := range []int{64 << 10, HugeMin} {
		mem, err := Map(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(mem) != n {
			t.Fatalf("Map(%d): %d bytes", n, len(mem))
		}
		for i := 0; i < n; i += 4096 {
			if mem[i] != 0 {
				t.Fatalf("Map(%d): byte %d is %d", n, i, mem[i])
			}
			mem[i] = 1
		}
		flags, ok := vmFlags(uintptr(unsafe.Pointer(&mem[0])))
		if !ok {
			t.Logf("no VmFlags in /proc/self/smaps: huge page advice not checked")
		} else if huge := strings.Contains(flags, " hg"); huge != (n >= HugeMin) {
			t.Errorf("Map(%d): VmFlags%s (huge page advice %v)", n, flags, huge)
		}
		if err := syscall.Munmap(mem); err != nil {
			t.Fatal(err)
		}
	}
}

// vmFlags returns the VmFlags of the mapping that holds addr, if
// /proc/self/smaps reports them.
func vmFlags(addr uintptr) (string, bool) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return "", false
	}
	in := false
	for line := range strings.Lines(string(b)) {
		if lo, hi, ok := mappingRange(line); ok {
			in = lo <= uint64(addr) && uint64(addr) < hi
		} else if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSuffix(strings.TrimPrefix(line, "VmFlags:"), "\n"), true
		}
	}
	return "", false
}

// mappingRange parses the address range of an smaps header line
// ("7f0000000000-7f0000400000 rw-p ...").
func mappingRange(line string) (lo, hi uint64, ok bool) {
	f, _, _ := strings.Cut(line, " ")
	a, z, found := strings.Cut(f, "-")
	if !found {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(a, 16, 64)
	hi, err2 := strconv.ParseUint(z, 16, 64)
	return lo, hi, err1 == nil && err2 == nil
}
