package lsm

import (
	"os"
	"sync/atomic"
)

// Releasing the journal's page cache.
//
// The kernel keeps every page the journal writes in its page cache until
// memory runs short. While the engine's RAM tier holds a copy of every
// item it has written (nothing evicted yet: a working set that fits in
// RAM), those pages are a second copy nobody reads, and each new one
// costs the write: on a VM whose free memory goes back to the host (free
// page reporting), the first touch of a page costs about ten times its
// copy (docs/disk-tier.md, "The journal's page cache"). So while the
// caller says so (DB.ReleaseJournalPages), each interval sync drops the
// pages of the frames the previous one made durable, a roll drops the
// rest of the segment it closes, and the kernel hands the same, still
// backed pages to the next writes. The caller turns it off once RAM no
// longer holds everything: from then on the page cache is where a read
// of an evicted item finds its frame.

// pageSize is the unit of release and writeback: the page a writer is
// filling is left alone.
var pageSize = int64(os.Getpagesize())

// pageRelease is the journal's release policy and its count.
type pageRelease struct {
	on    atomic.Bool   // release synced frames' pages
	bytes atomic.Uint64 // bytes whose pages were released
}
