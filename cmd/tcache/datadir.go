package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// lockFileName is the file in data_dir whose exclusive flock marks the
// directory as owned by a running tcache.
const lockFileName = "LOCK"

// errDataDirInUse is returned when another process holds data_dir's lock.
var errDataDirInUse = errors.New("in use by another tcache")

// dataDirLock is the exclusive lock on data_dir/LOCK, held for as long as
// the server runs. The kernel drops it when the process dies, however it
// dies, so a crash never leaves a stale lock behind. The file is never
// removed: removing a lock file races with the next tcache that opens it.
type dataDirLock struct {
	f *os.File
}

// lockDataDir creates dir if missing and takes the lock, writing this
// process's pid into the lock file for the benefit of the next one to try.
func lockDataDir(dir string) (*dataDirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data_dir %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: creating %s: %w", abs, err)
	}
	path := filepath.Join(abs, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data_dir: opening %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("data_dir %s is %w%s holding %s; stop it or give this one another data_dir",
				abs, errDataDirInUse, holder, path)
		}
		return nil, fmt.Errorf("data_dir: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataDirLock{f: f}, nil
}

// release drops the lock. The pid is left in the file; it is only read when
// the lock is found held, and then it is the holder's.
func (l *dataDirLock) release() error {
	if err := funlock(l.f); err != nil {
		l.f.Close()
		return fmt.Errorf("data_dir: unlocking %s: %w", l.f.Name(), err)
	}
	return l.f.Close()
}
