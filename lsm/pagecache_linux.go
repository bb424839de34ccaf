package lsm

import (
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// dropPageCache asks the kernel to drop f's cached pages in [off,
// off+n) and reports whether it could ask (f has a descriptor; an
// in-memory or fault-injecting file system has none). Only clean pages
// go; the data stays in the file.
func dropPageCache(f vfs.File, off, n int64) bool {
	fd := f.Fd()
	if fd == vfs.InvalidFd {
		return false
	}
	return unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED) == nil
}

// startWriteback starts the device write of f's [off, off+n) without
// waiting for it, so that the next fdatasync finds less to write.
func startWriteback(f vfs.File, off, n int64) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}
