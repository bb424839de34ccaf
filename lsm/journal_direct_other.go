//go:build !linux

package lsm

import "errors"

var errNoDirect = errors.New("lsm: no direct I/O on this platform")

// setODirect fails: direct journal writes are wired up on Linux only.
func setODirect(int, bool) error { return errNoDirect }

func pwriteDirect(int, []byte, int64) error { return errNoDirect }

func directRefused(error) bool { return false }

func ftruncate(int, int64) error { return errNoDirect }
