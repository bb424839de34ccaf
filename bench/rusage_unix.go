//go:build unix

package bench

import (
	"os"
	"syscall"
	"time"
)

// cpuTime is the user + system CPU time this process has used so far
// (getrusage RUSAGE_SELF: every thread of the bench process, nothing else).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// signalStop stops p (SIGSTOP) until signalCont.
func signalStop(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// signalCont continues p after signalStop (SIGCONT; harmless when running).
func signalCont(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
