//go:build !unix

package bench

import "os"

// signalStop cannot stop a process on this platform: the idle server of a
// pair runs on during the other's round.
func signalStop(*os.Process) error { return nil }

// signalCont is signalStop's counterpart.
func signalCont(*os.Process) error { return nil }
