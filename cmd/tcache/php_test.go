package main

// php-memcached (Debian php-cli + php-memcached) over the binary protocol,
// against memcached and then the tcache binary: the Memcached class
// (testdata/php_memcached_test.php) and PHP sessions with
// session.save_handler=memcached (testdata/php_session.php), several PHP
// processes sharing one session store.

import (
	"bufio"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// phpSessionPrefix is php-memcached's default memcached.sess_prefix; its
// lock key is the prefix, "lock.", then the session id.
const phpSessionPrefix = "memc.sess.key."

// requirePHPMemcached returns the php binary, or skips when php or its
// memcached extension is missing.
func requirePHPMemcached(t *testing.T) string {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Skip("SKIP: php not installed (make test installs php-cli php-memcached)")
	}
	if out, err := exec.Command(php, "-r", `exit(class_exists("Memcached") ? 0 : 1);`).CombinedOutput(); err != nil {
		t.Skipf("SKIP: php-memcached not installed (make test installs php-memcached): %v %s", err, out)
	}
	return php
}

// TestPHPMemcached runs every Memcached-class operation of
// testdata/php_memcached_test.php with OPT_BINARY_PROTOCOL.
func TestPHPMemcached(t *testing.T) {
	php := requirePHPMemcached(t)
	forEachClientServer(t, func(t *testing.T, addr string) {
		host, port, _ := net.SplitHostPort(addr)
		out, err := runTool(t, 60*time.Second, php, "testdata/php_memcached_test.php", host, port)
		if err != nil || !strings.Contains(out, " 0 failed") {
			t.Fatalf("php_memcached_test.php: %v\n%s", err, out)
		}
		t.Log(strings.TrimSpace(out))
	})
}

// phpSessionArgs are the php -d settings of a session process on addr
// (binary protocol and locking are php-memcached's defaults; set anyway).
func phpSessionArgs(addr string, extra ...string) []string {
	args := []string{
		"-d", "session.save_handler=memcached",
		"-d", "session.save_path=" + addr,
		"-d", "memcached.sess_binary_protocol=On",
		"-d", "memcached.sess_locking=On",
	}
	for _, e := range extra {
		args = append(args, "-d", e)
	}
	return args
}

// TestPHPSessions: a session written by one PHP process is read by another;
// a second process waits for the session lock while the first holds it; in
// strict mode an unknown id is refused and the id reservation leaves no item.
func TestPHPSessions(t *testing.T) {
	php := requirePHPMemcached(t)
	forEachClientServer(t, func(t *testing.T, addr string) {
		session := func(t *testing.T, extra []string, args ...string) string {
			t.Helper()
			cmd := append(phpSessionArgs(addr, extra...), append([]string{"testdata/php_session.php"}, args...)...)
			out, err := runTool(t, 60*time.Second, php, cmd...)
			if err != nil {
				t.Fatalf("php %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return strings.TrimSpace(out)
		}

		t.Run("write then read", func(t *testing.T) {
			const sid = "tcachesession0123456789abcdef"
			if out := session(t, nil, "write", sid, "hello"); out != "written" {
				t.Fatalf("write: %q", out)
			}
			if out := session(t, nil, "read", sid); out != "value=hello" {
				t.Fatalf("read in a second process: %q, want value=hello", out)
			}
			if !textHas(t, addr, phpSessionPrefix+sid) {
				t.Fatalf("session item %s not stored", phpSessionPrefix+sid)
			}
			if textHas(t, addr, phpSessionPrefix+"lock."+sid) {
				t.Fatalf("lock item left behind after session_write_close")
			}
		})

		t.Run("lock", func(t *testing.T) {
			const sid = "tcachelocked0123456789abcdef"
			holder := exec.Command(php, append(phpSessionArgs(addr), "testdata/php_session.php", "hold", sid, "fromA")...)
			stdin, _ := holder.StdinPipe()
			stdout, _ := holder.StdoutPipe()
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			defer holder.Process.Kill()
			lines := bufio.NewScanner(stdout)
			if !lines.Scan() || lines.Text() != "LOCKED" {
				t.Fatalf("holder: %q, want LOCKED", lines.Text())
			}
			if !textHas(t, addr, phpSessionPrefix+"lock."+sid) {
				t.Fatalf("no lock item %s while the session is open", phpSessionPrefix+"lock."+sid)
			}
			// The reader retries the lock every 20-50 ms, up to 400 times.
			reader := exec.Command(php, append(phpSessionArgs(addr,
				"memcached.sess_lock_retries=400", "memcached.sess_lock_wait_min=20",
				"memcached.sess_lock_wait_max=50"), "testdata/php_session.php", "read", sid)...)
			var readOut strings.Builder
			reader.Stdout = &readOut
			reader.Stderr = &readOut
			if err := reader.Start(); err != nil {
				t.Fatal(err)
			}
			readDone := make(chan error, 1)
			go func() { readDone <- reader.Wait() }()
			select {
			case err := <-readDone:
				t.Fatalf("reader finished while the lock was held: %v %s", err, readOut.String())
			case <-time.After(500 * time.Millisecond):
			}
			io.WriteString(stdin, "go\n") // the holder writes fromA and unlocks
			if !lines.Scan() || lines.Text() != "RELEASED" {
				t.Fatalf("holder: %q, want RELEASED", lines.Text())
			}
			holder.Wait()
			select {
			case err := <-readDone:
				if err != nil {
					t.Fatalf("reader: %v\n%s", err, readOut.String())
				}
			case <-time.After(30 * time.Second):
				reader.Process.Kill()
				t.Fatal("reader still waiting 30s after the lock was released")
			}
			// The reader saw the value written after it started: it waited.
			if got := strings.TrimSpace(readOut.String()); got != "value=fromA" {
				t.Fatalf("reader: %q, want value=fromA", got)
			}
			if textHas(t, addr, phpSessionPrefix+"lock."+sid) {
				t.Fatal("lock item left behind")
			}
		})

		t.Run("strict mode", func(t *testing.T) {
			strict := []string{"session.use_strict_mode=1"}
			const offered = "attackerchosen0123456789abcdef"
			out := session(t, strict, "strict", offered)
			id, ok := strings.CutPrefix(out, "id=")
			if !ok || id == offered || id == "" {
				t.Fatalf("strict mode kept the unknown id: %q", out)
			}
			// php-memcached 3.2 (PS_CREATE_SID) reserves the new id with an
			// add of an empty item for the session lifetime (memcached keeps
			// it too); the refused id and the locks must leave nothing.
			for _, k := range []string{offered, "lock." + offered, "lock." + id} {
				if textHas(t, addr, phpSessionPrefix+k) {
					t.Errorf("item %s left behind by strict mode", phpSessionPrefix+k)
				}
			}
			if v, ok := textGet(t, addr, phpSessionPrefix+id); ok && v != "" {
				t.Errorf("reserved id item %s holds %q, want empty", phpSessionPrefix+id, v)
			}
			out = session(t, strict, "fresh")
			fresh, _ := strings.CutPrefix(out, "id=")
			if got := session(t, strict, "read", fresh); got != "value=fresh" {
				t.Fatalf("strict mode read of a known id %s: %q, want value=fresh", fresh, got)
			}
		})
	})
}

// textHas reports whether key holds an item, asked with a text-protocol get.
func textHas(t *testing.T, addr, key string) bool {
	_, ok := textGet(t, addr, key)
	return ok
}

// textGet fetches key with a text-protocol get.
func textGet(t *testing.T, addr, key string) (string, bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("get " + key + "\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if !strings.HasPrefix(line, "VALUE ") {
		return "", false
	}
	value, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return strings.TrimSuffix(value, "\r\n"), true
}
