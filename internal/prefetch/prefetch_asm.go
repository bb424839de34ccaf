//go:build amd64 || arm64

package prefetch

// Line asks the CPU to bring the cache line holding addr into its caches.
// It does nothing else: it never faults, whatever addr is.
//
//go:noescape
func Line(addr uintptr)
