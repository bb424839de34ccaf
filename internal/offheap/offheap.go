// Package offheap maps the large tables tcache keeps outside the Go heap:
// the RAM tier's arena and index (engine), the keydir and the location
// hints (lsm). The garbage collector never scans them, and their pages
// become resident only when first written, so RSS follows use.
//
// Every such table is read at random places (a get's record, an index
// probe, a keydir slot), and with 4 KiB pages a table of more than a few
// MiB misses the TLB on most accesses and walks the page tables (twice
// over on a VM). So a large mapping asks for transparent huge pages
// (MADV_HUGEPAGE, as memcached's -L does for its slabs); with THP set to
// "madvise", Debian's default, only mappings that ask get them.
package offheap

import "syscall"

// HugeMin is the smallest mapping that asks for huge pages: below it a
// table spans too few 2 MiB pages for the advice to matter.
const HugeMin = 4 << 20

// Map returns n zeroed bytes in a private anonymous mapping with no swap
// reserved, advised to use huge pages when n >= HugeMin. Release it with
// syscall.Munmap.
func Map(n int) ([]byte, error) {
	mem, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	if n >= HugeMin {
		_ = syscall.Madvise(mem, syscall.MADV_HUGEPAGE) // advice: a kernel without THP refuses it harmlessly
	}
	return mem, nil
}
