// Package testserver runs the real tcache binary for tests: it builds
// ./cmd/tcache once per test binary, starts it on a free 127.0.0.1 port with
// a temporary data_dir, waits until it accepts connections, and stops it by
// PID (SIGTERM, as an operator would) when the test ends.
//
// Typical use, from any package's tests:
//
//	func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) } // removes the build
//
//	func TestSomething(t *testing.T) {
//		srv := testserver.Start(t, "-m", "16", "-I", "2m")
//		conn, err := net.Dial("tcp", srv.Addr)
//		...
//		if code := srv.Stop(t); code != 0 { ... } // optional: Cleanup stops it too
//	}
//
// Start adds "-l 127.0.0.1", "-p <free port>" and "--data-dir <t.TempDir()>"
// unless args already set them (a test that passes its own -p gets no retry
// when that port is taken). The child inherits the test's environment
// without any TCACHE_* variable, plus Options.Env. Its stderr (the server
// log) is kept in memory: Stderr returns it, and it is written to the test
// log when the test fails.
//
// The binary: set TCACHE_BINARY to use a prebuilt one (e.g. bin/tcache from
// `make build`); otherwise Binary runs `go build` into a temporary directory
// on first use (with -race when the tests run with -race). Run removes that
// directory after m.Run; without Run it is left in os.TempDir() as
// tcache-testserver-*.
package testserver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts, generous because tests share a couple of cores.
const (
	// StartTimeout bounds how long Start waits for the port to accept.
	StartTimeout = 20 * time.Second
	// StopTimeout bounds how long Stop waits for the exit after SIGTERM.
	StopTimeout = 15 * time.Second
)

// build is the once-per-process build of the binary.
var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary; "" with TCACHE_BINARY
	path string
	err  error
}

// Binary returns the path of the tcache binary, building it on first use.
// The build takes a few seconds the first time and is then cached by Go.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		if p := os.Getenv("TCACHE_BINARY"); p != "" {
			build.path, build.err = filepath.Abs(p)
			return
		}
		build.path, build.dir, build.err = goBuild()
	})
	if build.err != nil {
		t.Fatalf("testserver: %v", build.err)
	}
	return build.path
}

// goBuild builds ./cmd/tcache of the enclosing module into a new temporary
// directory.
func goBuild() (path, dir string, err error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", "", errors.New("not inside the tcache module; set TCACHE_BINARY")
	}
	dir, err = os.MkdirTemp("", "tcache-testserver-")
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, "tcache")
	args := []string{"build", "-o", path}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/tcache")...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build ./cmd/tcache: %w\n%s", err, out)
	}
	return path, dir, nil
}

// Run runs the tests and then removes the binary Binary built. Call it from
// TestMain: os.Exit(testserver.Run(m)).
func Run(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// Options are the optional settings of StartWith.
type Options struct {
	// Args are the command-line arguments (after the binary name).
	Args []string
	// Env adds NAME=value entries to the child's environment (TCACHE_* of
	// the test process are not inherited).
	Env []string
	// Dir is the working directory; default a new t.TempDir().
	Dir string
}

// Server is a running tcache process.
type Server struct {
	// Addr is the host:port to dial ("127.0.0.1:<port>").
	Addr string
	// Port is the TCP port.
	Port int
	// DataDir is the data_dir it runs with.
	DataDir string

	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{} // closed when the process has been reaped
	state  *os.ProcessState
}

// Start starts tcache with args and waits until it accepts connections on
// Addr. It fails the test if the process exits or does not listen within
// StartTimeout. The process is stopped when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return StartWith(t, Options{Args: args})
}

// StartWith is Start with an environment and working directory.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	args := o.Args
	if !hasFlag(args, "-l", "--listen") {
		args = append(args, "-l", "127.0.0.1")
	}
	dataDir := flagValue(args, "--data-dir")
	if dataDir == "" {
		dataDir = t.TempDir()
		args = append(args, "--data-dir", dataDir)
	}
	ownPort := !hasFlag(args, "-p", "--port")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		callArgs := args
		port := 0
		if ownPort {
			port = freePort(t)
			callArgs = append(append([]string(nil), args...), "-p", strconv.Itoa(port))
		} else if port, lastErr = strconv.Atoi(portValue(args)); lastErr != nil {
			t.Fatalf("testserver: cannot read the port from %q", args)
		}
		s := &Server{
			Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port:    port,
			DataDir: dataDir,
			stderr:  &lockedBuffer{},
			exited:  make(chan struct{}),
		}
		s.cmd = exec.Command(bin, callArgs...)
		s.cmd.Dir = o.Dir
		s.cmd.Env = append(childEnv(), o.Env...)
		s.cmd.Stderr = s.stderr
		s.cmd.Stdout = s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("testserver: starting %s: %v", bin, err)
		}
		go func() {
			_ = s.cmd.Wait()
			s.state = s.cmd.ProcessState
			close(s.exited)
		}()
		if lastErr = s.waitListening(); lastErr == nil {
			t.Cleanup(func() { s.cleanup(t) })
			return s
		}
		s.kill()
		if !ownPort || !strings.Contains(s.Stderr(), "address already in use") {
			break // not a port race: retrying will not help
		}
	}
	t.Fatalf("testserver: tcache %q did not start: %v", args, lastErr)
	return nil
}

// waitListening polls Addr until it accepts, the process exits, or
// StartTimeout passes.
func (s *Server) waitListening() error {
	deadline := time.Now().Add(StartTimeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited with %v before listening; output:\n%s", s.state, s.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v (last dial error %v); output:\n%s",
				s.Addr, StartTimeout, err, s.Stderr())
		}
	}
}

// PID is the process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Signal sends sig to the process.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited is closed when the process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// ExitCode is the exit code once Exited is closed (-1 if killed by a
// signal); before that it is -1.
func (s *Server) ExitCode() int {
	select {
	case <-s.exited:
		return s.state.ExitCode()
	default:
		return -1
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code; ok is false on timeout.
func (s *Server) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-s.exited:
		return s.state.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// Stop sends SIGTERM and waits up to StopTimeout for the exit, killing the
// process and failing the test if it does not go. It returns the exit code
// (0 after a clean shutdown). Calling Stop on an exited server just returns
// its code.
func (s *Server) Stop(t testing.TB) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.state.ExitCode()
	default:
	}
	if err := s.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("testserver: SIGTERM pid %d: %v", s.PID(), err)
	}
	code, ok := s.Wait(StopTimeout)
	if !ok {
		// A hung shutdown is a bug worth a diagnosis: SIGQUIT makes the Go
		// runtime print every goroutine's stack to stderr before exiting.
		_ = s.Signal(syscall.SIGQUIT)
		if _, ok := s.Wait(5 * time.Second); !ok {
			s.kill()
		}
		t.Errorf("testserver: pid %d still running %v after SIGTERM; sent SIGQUIT. Output (with goroutine stacks):\n%s", s.PID(), StopTimeout, s.Stderr())
		return -1
	}
	return code
}

// Stderr returns everything the process has written so far (its log).
func (s *Server) Stderr() string { return s.stderr.String() }

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

func (s *Server) cleanup(t testing.TB) {
	select {
	case <-s.exited:
	default:
		if code := s.Stop(t); code != 0 {
			t.Errorf("testserver: tcache exited %d on SIGTERM at the end of the test", code)
		}
	}
	if t.Failed() {
		t.Logf("tcache (pid %d) output:\n%s", s.PID(), s.Stderr())
	}
}

// childEnv is the test's environment without TCACHE_* variables.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TCACHE_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testserver: probing a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// hasFlag reports whether args set the flag by its short or long name, in
// any of pflag's spellings (-p 1, -p1, --port 1, --port=1).
func hasFlag(args []string, short, long string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if strings.HasPrefix(a, short) && !strings.HasPrefix(a, "--") || a == long || strings.HasPrefix(a, long+"=") {
			return true
		}
	}
	return false
}

// flagValue returns the last value of a long flag in args, or "".
func flagValue(args []string, long string) string {
	v := ""
	for i, a := range args {
		if a == long && i+1 < len(args) {
			v = args[i+1]
		} else if strings.HasPrefix(a, long+"=") {
			v = strings.TrimPrefix(a, long+"=")
		}
	}
	return v
}

// portValue returns the last port set by -p or --port in args.
func portValue(args []string) string {
	v := ""
	for i, a := range args {
		switch {
		case (a == "-p" || a == "--port") && i+1 < len(args):
			v = args[i+1]
		case strings.HasPrefix(a, "--port="):
			v = strings.TrimPrefix(a, "--port=")
		case strings.HasPrefix(a, "-p") && len(a) > 2 && a[2] != '-':
			v = strings.TrimPrefix(strings.TrimPrefix(a, "-p"), "=")
		}
	}
	return v
}

// lockedBuffer is a bytes.Buffer safe for the writing process pipe and
// reading tests.
type lockedBuffer struct {
	mu struct {
		sync.Mutex
		b bytes.Buffer // guarded by mu
	}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.b.String()
}

// Kill sends SIGKILL (a crash: no drain, no flush) and waits for the exit.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if err := s.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("testserver: SIGKILL pid %d: %v", s.PID(), err)
	}
	if _, ok := s.Wait(StopTimeout); !ok {
		t.Errorf("testserver: pid %d still running %v after SIGKILL", s.PID(), StopTimeout)
	}
}
