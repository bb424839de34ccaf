package bench

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// A paused server is stopped (state T) until resumed, and stop ends it
// even while it is paused.
func TestPauseStopsTheProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the process state is read from /proc")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep(1) to stand in for a server: %v", err)
	}
	p := &process{name: "sleep", cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	defer p.stop()
	state := func() byte {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.LastIndexByte(b, ')')
		return b[i+2]
	}
	waitFor := func(what string, ok func(byte) bool) {
		deadline := time.Now().Add(5 * time.Second)
		for !ok(state()) {
			if time.Now().After(deadline) {
				t.Fatalf("process not %s: state %c", what, state())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	p.pause()
	waitFor("stopped", func(s byte) bool { return s == 'T' })
	p.resume()
	waitFor("running again", func(s byte) bool { return s != 'T' })
	p.pause()
	waitFor("stopped", func(s byte) bool { return s == 'T' })
	p.stop()
	if p.alive() {
		t.Fatal("stop left a paused process alive")
	}
}
