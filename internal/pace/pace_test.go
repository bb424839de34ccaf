package pace

import (
	"testing"
	"time"
)

// TestPacer: a paced loop pauses once per Slice of work, never more
// often, and reads the clock only every Check steps.
func TestPacer(t *testing.T) {
	var now time.Time
	clockReads, pauses := 0, 0
	p := Pacer{
		now:   func() time.Time { clockReads++; return now },
		sleep: func(d time.Duration) { pauses++; now = now.Add(d) },
	}
	now = time.Unix(1000, 0)
	// Steps of 0.4 slice / Check: a clock read every 0.4 slice, and a
	// pause at every third read (1.2 slices after the last).
	step := Slice * 4 / 10 / Check
	const steps = 3000 * Check
	for i := 0; i < steps; i++ {
		p.Step(1)
		now = now.Add(step)
	}
	if pauses != 999 {
		t.Errorf("%d pauses over 3000 clock reads 0.4 slice apart, want 999", pauses)
	}
	if max := steps/Check + pauses; clockReads > max {
		t.Errorf("%d clock reads for %d steps, want at most %d", clockReads, steps, max)
	}

	// Work slower than the slice: a pause at every clock read after the
	// first, none between.
	q := Pacer{now: func() time.Time { return now }, sleep: func(time.Duration) { pauses++ }}
	pauses = 0
	for i := 0; i < 10*Check; i++ {
		q.Step(1)
		now = now.Add(Slice)
	}
	if pauses != 9 {
		t.Errorf("%d pauses for 10 clock reads a slice apart, want 9", pauses)
	}
}
