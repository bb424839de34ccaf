//go:build !unix

package bench

import (
	"os"
	"time"
)

// cpuTime is not measured on this platform; reports show 0.
func cpuTime() time.Duration { return 0 }

// signalStop cannot stop a process on this platform: the idle server of a
// pair runs on during the other's round.
func signalStop(*os.Process) error { return nil }

// signalCont is signalStop's counterpart.
func signalCont(*os.Process) error { return nil }
