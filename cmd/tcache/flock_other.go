//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import (
	"errors"
	"os"
)

// errWouldBlock never matches: there is no flock on this platform.
var errWouldBlock = errors.New("lock held")

// flock refuses: tcache's data_dir lock needs flock(2).
func flock(*os.File) error {
	return errors.New("data_dir locking is only implemented on Linux, macOS and the BSDs")
}

func funlock(*os.File) error { return nil }
