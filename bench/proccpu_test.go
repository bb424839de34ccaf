package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// processCPU reads this process's CPU time from /proc and sees it grow
// while the process computes.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("processCPU reads /proc (Linux)")
	}
	before, ok := processCPU(os.Getpid())
	if !ok {
		t.Fatal("no CPU time for this process")
	}
	// Spin until /proc shows at least 50 ms more (it counts in 10 ms
	// ticks), bounded by a 10 s deadline.
	deadline := time.Now().Add(10 * time.Second)
	x := uint64(1)
	for time.Now().Before(deadline) {
		for range 1_000_000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if now, _ := processCPU(os.Getpid()); now-before >= 50*time.Millisecond {
			return
		}
	}
	t.Fatalf("CPU time did not grow in 10 s of spinning (x=%d)", x)
}

func TestProcessCPUMissing(t *testing.T) {
	if _, ok := processCPU(-1); ok {
		t.Fatal("a CPU time for pid -1")
	}
}
