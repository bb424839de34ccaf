package protocol

// Data-driven protocol tests: request bytes in, exact reply bytes out.
//
// Every file under testdata/text and testdata/meta is a script of directives
// (github.com/cockroachdb/datadriven format). The same scripts run against
// tcache (TestDataDriven) and against Debian's memcached 1.6.18
// (TestDifferential), so a file whose expected output both pass is proof that
// the two servers answer byte for byte alike. Record or refresh expected
// output from the reference server with
//
//	go test ./protocol -run TestDifferential -rewrite
//
// and check tcache against it with go test ./protocol -run TestDataDriven.
// Files under testdata/tcache hold tcache-only behaviour (fake-clock expiry,
// deliberate extensions) and run against tcache only.
//
// Directives:
//
//	send [conn=NAME] [nosync]
//	<line>
//	...
//	----
//	<reply>
//
// Each input line is sent followed by "\r\n". A line that starts with a
// double quote is a Go string literal, sent exactly as it decodes, with no
// terminator added (for bare "\n", binary bytes, partial lines). After the
// input the runner sends "mn\r\n" and reads until the server's "MN\r\n",
// which is stripped; with nosync it reads until the connection has been idle
// for idleWait (use it where the sentinel would be swallowed as data).
// Connections are opened on first use; the default one is "a".
//
// A reply is rendered one "\r\n"-terminated line per output line. A line with
// bytes outside printable ASCII is shown as a Go string literal; bytes after
// the last "\r\n" are shown as `<partial> "..."`; a closed connection ends the
// output with `<closed>`.
//
//	binary [conn=NAME] [nosync]
//	req op=set key=foo value=bar flags=5
//	...
//	----
//	res op=set status=ok cas=1
//
// sends binary-protocol frames written in the small language of
// binary_dsl_test.go, and renders the reply one decoded frame per line. The
// sync sentinel is a binary noop (opcode 0x0a) with a reserved opaque; as
// with send, nosync reads until the connection is idle instead. Scripts of
// testdata/binary use it; a connection speaks the protocol of its first
// byte, so do not mix send and binary on one connection.
//
//	close [conn=NAME]     closes a connection.
//	sleep <seconds>       advances tcache's fake clock; sleeps for real
//	                      against memcached (keep such cases rare).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/tcache/tcache/internal/clock"
)

const idleWait = 300 * time.Millisecond

// TestDataDriven runs every script against tcache in memory mode and with
// the disk tier on (cache mode, durability none): the replies must not
// depend on where the items live.
func TestDataDriven(t *testing.T) {
	for _, mode := range []struct {
		name string
		disk bool
	}{{"memory", false}, {"disk", true}} {
		t.Run(mode.name, func(t *testing.T) {
			for _, dir := range []string{"testdata/text", "testdata/meta", "testdata/binary", "testdata/tcache"} {
				datadriven.Walk(t, dir, func(t *testing.T, path string) {
					clk := clock.NewFake(time.Now().Truncate(time.Second))
					start := startTcache
					if mode.disk {
						start = startTcacheDisk
					}
					addr := start(t, clk)
					runScript(t, path, addr, func(secs int) { clk.Advance(time.Duration(secs) * time.Second) })
				})
			}
		})
	}
}

func TestDifferential(t *testing.T) {
	bin := memcachedBinary(t)
	for _, dir := range []string{"testdata/text", "testdata/meta", "testdata/binary"} {
		datadriven.Walk(t, dir, func(t *testing.T, path string) {
			addr := startMemcached(t, bin)
			runScript(t, path, addr, func(secs int) { time.Sleep(time.Duration(secs) * time.Second) })
		})
	}
}

// runScript runs one script file against the server at addr.
func runScript(t *testing.T, path, addr string, sleep func(secs int)) {
	conns := map[string]net.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	connFor := func(t testing.TB, d *datadriven.TestData) (string, net.Conn) {
		name := "a"
		if d.HasArg("conn") {
			d.ScanArgs(t, "conn", &name)
		}
		if c, ok := conns[name]; ok {
			return name, c
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: dial %s: %v", d.Pos, addr, err)
		}
		conns[name] = c
		return name, c
	}
	datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
		switch d.Cmd {
		case "send":
			_, c := connFor(t, d)
			req, err := encodeInput(d.Input)
			if err != nil {
				t.Fatalf("%s: %v", d.Pos, err)
			}
			sync := !d.HasArg("nosync")
			if sync {
				req = append(req, "mn\r\n"...)
			}
			if _, err := c.Write(req); err != nil {
				return "<write error: " + err.Error() + ">\n"
			}
			reply, closed, err := readReply(c, sync)
			if err != nil {
				t.Fatalf("%s: reading reply: %v (got %q)", d.Pos, err, reply)
			}
			return renderReply(reply, closed)
		case "binary":
			_, c := connFor(t, d)
			req, err := encodeBinaryInput(d.Input)
			if err != nil {
				t.Fatalf("%s: %v", d.Pos, err)
			}
			sync := !d.HasArg("nosync")
			if sync {
				req = append(req, binarySentinel()...)
			}
			if _, err := c.Write(req); err != nil {
				return "<write error: " + err.Error() + ">\n"
			}
			reply, closed, err := readBinaryReply(c, sync)
			if err != nil {
				t.Fatalf("%s: reading reply: %v (got %q)", d.Pos, err, reply)
			}
			return renderBinaryReply(reply, closed)
		case "close":
			name, c := connFor(t, d)
			c.Close()
			delete(conns, name)
			return ""
		case "sleep":
			secs, err := strconv.Atoi(strings.TrimSpace(d.CmdArgs[0].Key))
			if err != nil {
				t.Fatalf("%s: sleep needs seconds: %v", d.Pos, err)
			}
			sleep(secs)
			return ""
		default:
			t.Fatalf("%s: unknown directive %q", d.Pos, d.Cmd)
			return ""
		}
	})
}

// encodeInput turns a send block into request bytes.
func encodeInput(input string) ([]byte, error) {
	var out []byte
	if input == "" {
		return out, nil
	}
	for _, line := range strings.Split(input, "\n") {
		if strings.HasPrefix(line, `"`) {
			s, err := strconv.Unquote(line)
			if err != nil {
				return nil, fmt.Errorf("bad string literal %s: %w", line, err)
			}
			out = append(out, s...)
			continue
		}
		out = append(out, line...)
		out = append(out, "\r\n"...)
	}
	return out, nil
}

var sentinel = []byte("MN\r\n")

// readReply reads the server's answer. With sync it reads up to the "MN\r\n"
// sentinel (stripped) or EOF; without, until idleWait passes with no data.
func readReply(c net.Conn, sync bool) (reply []byte, closed bool, err error) {
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if sync {
			c.SetReadDeadline(deadline)
		} else {
			c.SetReadDeadline(time.Now().Add(idleWait))
		}
		n, rerr := c.Read(buf)
		reply = append(reply, buf[:n]...)
		if sync && bytes.HasSuffix(reply, sentinel) {
			return reply[:len(reply)-len(sentinel)], false, nil
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) || isReset(rerr):
			return reply, true, nil
		case !sync && isTimeout(rerr):
			return reply, false, nil
		default:
			return reply, false, rerr
		}
	}
}

// readBinaryReply is readReply for binary frames: with sync it reads up to
// the runner's noop response (dropped) or EOF.
func readBinaryReply(c net.Conn, sync bool) (reply []byte, closed bool, err error) {
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if sync {
			c.SetReadDeadline(deadline)
		} else {
			c.SetReadDeadline(time.Now().Add(idleWait))
		}
		n, rerr := c.Read(buf)
		reply = append(reply, buf[:n]...)
		if sync {
			if frames, rest, ok := splitBinaryReply(reply); ok {
				var out []byte
				for _, f := range frames {
					out = append(out, f...)
				}
				return append(out, rest...), false, nil
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) || isReset(rerr):
			return reply, true, nil
		case !sync && isTimeout(rerr):
			return reply, false, nil
		default:
			return reply, false, rerr
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// renderReply shows reply bytes one protocol line per output line.
func renderReply(reply []byte, closed bool) string {
	var b strings.Builder
	for len(reply) > 0 {
		i := bytes.Index(reply, []byte("\r\n"))
		if i < 0 {
			b.WriteString("<partial> ")
			b.WriteString(strconv.Quote(string(reply)))
			b.WriteByte('\n')
			break
		}
		line := reply[:i]
		reply = reply[i+2:]
		if printable(line) {
			b.Write(line)
		} else {
			b.WriteString(strconv.Quote(string(line)))
		}
		b.WriteByte('\n')
	}
	if closed {
		b.WriteString("<closed>\n")
	}
	return b.String()
}

func printable(line []byte) bool {
	if len(line) > 0 && line[0] == '"' {
		return false // would read as a string literal
	}
	for _, c := range line {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// memcachedBinary finds Debian's memcached, or skips with a visible reason.
func memcachedBinary(t *testing.T) string {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
			if _, serr := os.Stat(p); serr == nil {
				return p
			}
		}
		t.Skip("SKIP: memcached is not installed (make test installs Debian's memcached); differential test not run")
	}
	return bin
}

// startMemcached runs a fresh memcached on a free loopback port for one
// script, stopped when the test ends.
func startMemcached(t *testing.T, bin string, extra ...string) string {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(bin, append([]string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64", "-t", "2", "-u", "root"}, extra...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting memcached: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitListening(t, addr)
	return addr
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(t testing.TB, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s is not listening", addr)
}

// scriptFiles lists the script files of a directory (used by fuzz seeding).
func scriptFiles(t testing.TB, dir string) []string {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}
