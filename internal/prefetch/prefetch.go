// Package prefetch asks the CPU to start loading a cache line that the
// caller will need shortly, so that the miss overlaps other work instead
// of stalling it.
//
// The disk tier's commit path uses it: the keydir slot a set will update
// is a random line of a table of tens of megabytes, almost always a cache
// miss, and the set has the record to encode and the journal frame to
// append before it gets there. A plain load would stall the core once the
// reorder window fills; a prefetch instruction retires at once and never
// faults, so an address that went stale (a table that grew and was
// unmapped) is harmless.
//
// Go exposes no prefetch outside the runtime, hence the two-instruction
// assembly functions (amd64 PREFETCHT0, arm64 PRFM PLDL1KEEP); on other
// architectures Line does nothing.
package prefetch
