//go:build !linux

package lsm

import "github.com/cockroachdb/pebble/v2/vfs"

// dropPageCache is a no-op where posix_fadvise is not wired up.
func dropPageCache(vfs.File, int64, int64) bool { return false }

// startWriteback is a no-op where sync_file_range is not wired up.
func startWriteback(vfs.File, int64, int64) {}
