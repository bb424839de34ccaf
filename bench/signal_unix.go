//go:build unix

package bench

import (
	"os"
	"syscall"
)

// signalStop stops p (SIGSTOP) until signalCont.
func signalStop(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// signalCont continues p after signalStop (SIGCONT; harmless when running).
func signalCont(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
