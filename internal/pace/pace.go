// Package pace lets a long background loop (the engine's crawler, the
// disk tier's recount after an unclean shutdown) give way to the server's
// connections.
//
// runtime.Gosched is not enough under one P (-t 1): the scheduler takes
// the yielding goroutine straight back from its run queue and polls the
// network only when nothing is runnable, or from sysmon every 10 ms, so a
// request that arrives during the loop waits up to 10 ms to be read. A
// short sleep leaves the P idle: the scheduler polls the network and runs
// the connections with input before the loop goes on. When nothing else
// is waiting, the sleep lasts about a millisecond (the runtime's timer
// wait in epoll), so a loop paced every Slice runs at about half speed on
// an idle server.
package pace

import "time"

// A Pacer paces one loop; its zero value is ready. Not for concurrent use.
type Pacer struct {
	last time.Time
	n    int
	// Tests replace the clock and the sleep; nil: time.Now, time.Sleep.
	now   func() time.Time
	sleep func(time.Duration)
}

const (
	Check = 64                    // units of work between clock reads
	Slice = time.Millisecond      // work between pauses
	Pause = 10 * time.Microsecond // the pause asked for
)

// Step counts n units of work (an item examined: a microsecond or less
// each) and pauses once per Slice of work. The caller holds no lock a
// connection may need.
func (p *Pacer) Step(n int) {
	if p.n += n; p.n < Check {
		return
	}
	p.n = 0
	now := p.clock()
	switch {
	case p.last.IsZero():
		p.last = now
	case now.Sub(p.last) >= Slice:
		if p.sleep != nil {
			p.sleep(Pause)
		} else {
			time.Sleep(Pause)
		}
		p.last = p.clock()
	}
}

func (p *Pacer) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}
