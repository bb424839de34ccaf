package lsm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Writing the open segment without the page cache (O_DIRECT).
//
// While the caller holds a copy of every record in RAM (the page release
// policy is on: pagecache.go), nothing reads the journal soon, and a
// write into the page cache is a copy nobody needs: the kernel's copy and
// its page allocation were most of what a 1 KiB set cost the journal
// (docs/disk-tier.md, "Direct journal writes"). So while the policy is
// on, and the file system takes O_DIRECT, the open segment is written
// directly: the device reads the frames from the writer's buffer.
//
// The buffer then has to be aligned, in memory and in the file, and is
// written in whole blocks (directBlock). Its first byte is at a
// block-aligned offset of the file (segmentWriter.off); a write that ends
// inside a block pads it with zeros, and the next buffer starts with a
// copy of that block's bytes, so the block is written again, whole, by
// the next write. The zeros are never a frame: a scan after a crash stops
// at them as at any torn tail (a length of 0 is not a frame), and a clean
// close truncates the file to its last frame.
//
// The device write blocks for as long as the device takes, so it is not
// made by the commit that fills a buffer: that commit hands the buffer to
// a goroutine of the segment's own (directWriter.run) and goes on in a
// fresh one. Buffers handed over and not yet written stay readable (Read
// copies a frame from them), up to directInflight of them; past that an
// append waits for the device, which is how a device slower than the
// writes slows the writes. Write (a sync commit, the interval syncer)
// hands over what is appended and waits until the device has it.
//
// The mode follows the policy at each write: on, the segment's descriptor
// gets O_DIRECT; off (RAM no longer holds everything, so the page cache
// is where reads of evicted items find their frames), the writer waits
// for its buffers, clears the flag and writes through the page cache
// again. A file system without O_DIRECT (tmpfs on older kernels, the
// in-memory and fault-injecting file systems of the tests) refuses the
// flag, and its segments are written through the page cache as before.

const (
	// directBlock is the alignment of an O_DIRECT write: its buffer's
	// address, its offset and its length. 4 KiB covers 512-byte and
	// 4 KiB sectors.
	directBlock = 4096
	// directChunk is the size of a direct buffer: each write is one
	// device request, and on a VM each request costs an exit to the host
	// (tens of µs), so direct writes are larger than buffered ones.
	directChunk = 1 << 20
	// directInflight is how many buffers may wait for the device.
	directInflight = 4
)

// directPwrite is the device write (a variable for the tests' injected
// failures).
var directPwrite = pwriteDirect

func alignDown(n int64) int64 { return n &^ (directBlock - 1) }
func alignUp(n int64) int64   { return alignDown(n + directBlock - 1) }

// alignedBuf returns an empty slice of capacity n (a multiple of
// directBlock) whose first byte is block-aligned in memory. Go's heap does
// not move objects, so the alignment holds for the slice's life.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directBlock)
	skip := int(alignUp(int64(uintptr(unsafe.Pointer(&b[0])))) - int64(uintptr(unsafe.Pointer(&b[0]))))
	return b[skip : skip : skip+n]
}

// directJob is a buffer handed to the device writer: buf[:n] goes to the
// file at off (n is a whole number of blocks); its frames end at end.
type directJob struct {
	buf []byte
	off int64
	n   int
	end int64
}

// directWriter is the device writer of a segment in direct mode.
type directWriter struct {
	fd   int
	mu   sync.Mutex
	cond sync.Cond // a job done, or a job queued
	// queue holds the jobs not yet written, in file order: the first is
	// being written. Readers look frames up in it (under mu).
	queue []directJob
	free  [][]byte // buffers of directChunk to reuse
	err   error    // sticky: the first failed write
	// failed is err != nil, read without mu by every append.
	failed atomic.Bool
	stop   bool // no more jobs: run returns once the queue is empty
	done   chan struct{}
}

func newDirectWriter(fd int) *directWriter {
	d := &directWriter{fd: fd, done: make(chan struct{})}
	d.cond.L = &d.mu
	return d
}

// buffer returns an empty aligned buffer of directChunk bytes,
// waiting while directInflight buffers wait for the device.
func (d *directWriter) buffer() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.queue) >= directInflight && d.err == nil {
		d.cond.Wait()
	}
	if n := len(d.free); n > 0 {
		b := d.free[n-1]
		d.free = d.free[:n-1]
		return b[:0]
	}
	return alignedBuf(directChunk)
}

// push queues a job for run.
func (d *directWriter) push(job directJob) {
	d.mu.Lock()
	d.queue = append(d.queue, job)
	d.cond.Broadcast()
	d.mu.Unlock()
}

// run writes the queued jobs in order until stop, setting w.written to
// the end of each job written.
func (d *directWriter) run(w *segmentWriter) {
	defer close(d.done)
	d.mu.Lock()
	for {
		for len(d.queue) == 0 && !d.stop {
			d.cond.Wait()
		}
		if len(d.queue) == 0 {
			d.mu.Unlock()
			return
		}
		job, failed := d.queue[0], d.err != nil
		d.mu.Unlock()
		var err error
		if !failed {
			err = directPwrite(d.fd, job.buf[:job.n], job.off)
			if err != nil && directRefused(err) && !w.noDirect.Load() {
				// The flag was taken, the write was not: write through
				// the page cache from now on (write ends direct mode).
				w.noDirect.Store(true)
				if err = setODirect(d.fd, false); err == nil {
					err = directPwrite(d.fd, job.buf[:job.n], job.off)
				}
			}
		}
		d.mu.Lock()
		d.queue = d.queue[1:]
		if err != nil && d.err == nil {
			d.err = fmt.Errorf("%w: segment %d: direct write at %d: %w", ErrJournalFailed, w.id, job.off, err)
			d.failed.Store(true)
		}
		if d.err == nil {
			w.written.Store(job.end)
			w.directBytes.Add(uint64(job.n))
		}
		if cap(job.buf) == directChunk {
			d.free = append(d.free, job.buf)
		}
		d.cond.Broadcast()
	}
}

// failure is the write error, if any.
func (d *directWriter) failure() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// waitFor blocks until the frames below end are written.
func (d *directWriter) waitFor(w *segmentWriter, end int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for w.written.Load() < end && d.err == nil {
		d.cond.Wait()
	}
	return d.err
}

// close stops run once the queue is written and returns the write error.
func (d *directWriter) close() error {
	d.mu.Lock()
	d.stop = true
	d.cond.Broadcast()
	d.mu.Unlock()
	<-d.done
	return d.err
}

// copyQueued copies the start of the frame of length bytes at off from a
// queued job into dst (len(dst) bytes) and reports whether a job held
// the frame.
func (d *directWriter) copyQueued(dst []byte, off, length int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, job := range d.queue {
		if off >= job.off && off+length <= job.end {
			copy(dst, job.buf[off-job.off:])
			return true
		}
	}
	return false
}

// reserveDirect makes room for n more bytes in the direct buffer,
// replacing it by a larger aligned one when a frame does not fit.
// Requires journal.wmu.
func (w *segmentWriter) reserveDirect(n int) {
	if len(w.buf)+n <= cap(w.buf) {
		return
	}
	nb := alignedBuf(int(alignUp(int64(len(w.buf) + n))))
	w.buf = append(nb, w.buf...)
}

// handOver queues every appended frame for the device writer and returns
// their end. The buffer goes whole, its last block padded with zeros;
// appends continue in a fresh buffer that starts with that block's bytes.
// Requires journal.wmu.
func (w *segmentWriter) handOver() int64 {
	end := w.off + int64(len(w.buf))
	if end <= w.handed {
		return end
	}
	l := int64(len(w.buf))
	padded := alignUp(l)
	w.buf = w.buf[:padded]
	clear(w.buf[l:]) // a reused buffer's old bytes must not follow the frames
	tail := alignDown(l)
	nb := w.d.buffer()
	nb = append(nb, w.buf[tail:l]...)
	w.d.push(directJob{buf: w.buf, off: w.off, n: int(padded), end: end})
	w.buf, w.off, w.handed = nb, w.off+tail, end
	return end
}

// endDirect stops the device writer once every handed buffer is written,
// and cuts the file back to the end of its frames: the last write padded
// its block with zeros, and a segment must not keep them where later
// frames (through the page cache, or after a clean reopen) would follow
// them, or a scan would stop there. The cut is synced at once (the size
// is metadata no later sync of this segment is sure to cover). Requires
// journal.wmu and direct mode.
func (w *segmentWriter) endDirect() error {
	err := w.d.close()
	w.d = nil
	if err == nil {
		if err = ftruncate(w.fd, w.handed); err == nil {
			err = w.f.SyncData()
		}
		if err != nil {
			err = fmt.Errorf("%w: segment %d: end direct writes: %w", ErrJournalFailed, w.id, err)
		}
	}
	if err != nil {
		w.err = err
	}
	return err
}

// setDirect turns direct mode on or off at a write boundary; an error is
// a failed write (the segment stops). Turning it on may not take (no
// descriptor, a file system without O_DIRECT): the segment stays in the
// page cache, and after a refused flag the journal does not ask again.
// Requires journal.wmu.
func (w *segmentWriter) setDirect(on bool) error {
	if on == (w.d != nil) {
		return nil
	}
	if !on {
		if err := w.endDirect(); err != nil {
			return err
		}
		if err := setODirect(w.fd, false); err != nil {
			w.err = fmt.Errorf("%w: segment %d: clear O_DIRECT: %w", ErrJournalFailed, w.id, err)
			return w.err
		}
		// The buffer keeps the block-aligned start: the next write
		// through the page cache writes that block's bytes again.
		return nil
	}
	if w.fd < 0 || w.noDirect.Load() {
		return nil
	}
	// Everything appended is written (write ran first); the block the
	// next frame goes into is read back so that the buffer starts
	// aligned.
	start := alignDown(w.off)
	buf := alignedBuf(directChunk)[:w.off-start]
	if len(buf) > 0 {
		if _, err := w.f.ReadAt(buf, start); err != nil {
			return nil // through the page cache for now; the next write tries again
		}
	}
	if err := setODirect(w.fd, true); err != nil {
		w.noDirect.Store(true) // the file system has no O_DIRECT
		return nil
	}
	w.buf, w.off, w.handed = buf, start, w.off
	w.d = newDirectWriter(w.fd)
	go w.d.run(w)
	return nil
}
