package lsm

import "time"

// pacer lets a long background loop (the recount of a whole store after
// an unclean shutdown) give way to the server's connections.
// runtime.Gosched is not enough under one P (-t 1): the scheduler takes the
// yielding goroutine straight back from its run queue and polls the
// network only when nothing is runnable, or from sysmon every 10 ms, so a
// request that arrives during the loop waits up to 10 ms to be read. A
// short sleep leaves the P idle: the scheduler polls the network and runs
// the connections with input before the loop goes on. When nothing else
// is waiting, the sleep lasts about a millisecond (the runtime's timer
// wait in epoll), so a loop paced every pacerSlice runs at about half
// speed on an idle server.
type pacer struct {
	last time.Time
	n    int
	// Tests replace the clock and the sleep; nil: time.Now, time.Sleep.
	now   func() time.Time
	sleep func(time.Duration)
}

const (
	pacerCheck = 64                    // steps between clock reads
	pacerSlice = time.Millisecond      // work between pauses
	pacerPause = 10 * time.Microsecond // the pause asked for
)

// step counts one unit of work and pauses once per pacerSlice of them.
func (p *pacer) step() {
	if p.n++; p.n < pacerCheck {
		return
	}
	p.n = 0
	now := p.clock()
	switch {
	case p.last.IsZero():
		p.last = now
	case now.Sub(p.last) >= pacerSlice:
		if p.sleep != nil {
			p.sleep(pacerPause)
		} else {
			time.Sleep(pacerPause)
		}
		p.last = p.clock()
	}
}

func (p *pacer) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}
