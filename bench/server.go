package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a server started by Compare, stopped by its PID.
type process struct {
	name string
	cmd  *exec.Cmd
	addr string
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
}

// stop sends SIGTERM, then SIGKILL after 10 s, and waits for the exit. It
// may be called more than once.
func (p *process) stop() {
	p.resume() // a stopped process would not see the SIGTERM
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// pause stops the process (SIGSTOP) while the other server of its pair
// is measured, and resume continues it. Both servers of a pair stay up for
// every round (their warm-up and data stay), and an idle server is not
// always quiet: the foundation's build walks its RAM tier with its crawler
// (about 6% of a core, idle), and a disk tier may still seal what its last
// round wrote. On two cores shared with the load generator that would run
// during the other server's round and count against it.
func (p *process) pause()  { _ = signalStop(p.cmd.Process) }
func (p *process) resume() { _ = signalCont(p.cmd.Process) }

// alive reports whether the process is still running.
func (p *process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// startProcess starts path with args plus "-l 127.0.0.1 -p <free port>"
// and waits until it accepts connections.
func startProcess(ctx context.Context, name, path string, args []string, wait time.Duration) (*process, error) {
	var lastErr error
	for range 3 { // the probed port can be taken before the server binds it
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		p := &process{
			name: name,
			addr: net.JoinHostPort("127.0.0.1", port),
			out:  &lockedBuffer{},
			done: make(chan struct{}),
		}
		p.cmd = exec.Command(path, append([]string{"-l", "127.0.0.1", "-p", port}, args...)...)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		go func() {
			_ = p.cmd.Wait()
			close(p.done)
		}()
		deadline := time.Now().Add(wait)
		for {
			c, err := net.DialTimeout("tcp", p.addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				return p, nil
			}
			select {
			case <-p.done:
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			if !p.alive() || time.Now().After(deadline) || ctx.Err() != nil {
				p.stop()
				lastErr = fmt.Errorf("%s did not listen on %s: %v; output: %s", name, p.addr, err, strings.TrimSpace(p.out.String()))
				break
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, lastErr
}

// ServerStats returns the general `stats` of the memcached-compatible server
// at addr as a map from stat name to value.
func ServerStats(addr string) (map[string]string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		return nil, err
	}
	st := map[string]string{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "END" {
			return st, nil
		}
		f := strings.SplitN(line, " ", 3) // STAT <name> <value>
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("stats: unexpected line %q", line)
		}
		st[f[1]] = f[2]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return nil, errors.New("stats: connection closed before END")
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu struct {
		sync.Mutex
		b bytes.Buffer // guarded by mu
	}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.b.Len() > 1<<20 { // keep the last words, not an unbounded log
		b.mu.b.Reset()
	}
	return b.mu.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.b.String()
}

// Server is a memcached-compatible server process started by StartServer
// on 127.0.0.1, for tools beside Compare (bench/memreport).
type Server struct{ p *process }

// StartServer starts path with args plus "-l 127.0.0.1 -p <free port>",
// waits up to wait until it accepts connections, and returns it; Stop it
// when done. name labels its errors.
func StartServer(ctx context.Context, name, path string, args []string, wait time.Duration) (*Server, error) {
	p, err := startProcess(ctx, name, path, args, wait)
	if err != nil {
		return nil, err
	}
	return &Server{p}, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.p.addr }

// Pid is the server's process id.
func (s *Server) Pid() int { return s.p.cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after 10 s, and waits for the exit.
func (s *Server) Stop() { s.p.stop() }
