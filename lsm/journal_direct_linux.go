package lsm

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// setODirect sets or clears O_DIRECT on fd (fcntl F_SETFL). A file system
// without direct I/O refuses to set it.
func setODirect(fd int, on bool) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// pwriteDirect writes all of b to fd at off.
func pwriteDirect(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// directRefused reports whether a direct write failed because the file
// system does not take its alignment (it accepted the flag but not the
// write): the write is made again through the page cache.
func directRefused(err error) bool { return errors.Is(err, unix.EINVAL) }

// ftruncate sets fd's file to size bytes.
func ftruncate(fd int, size int64) error { return unix.Ftruncate(fd, size) }
