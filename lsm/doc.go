// Package lsm is tcache's disk tier: everything that touches Pebble, the LSM
// key-value store under data_dir.
//
// Its contract (DESIGN.md): it owns the record encoding and the key spaces —
// item data, the node's write-ahead log, metadata and the expiry index; it
// commits a data record and its log record in one batch, with the configured
// durability (sync with group commit, interval, none); it keeps the disk
// within disk.limit in cache mode by dropping the oldest data in whole
// ranges, and never drops data silently in persistent mode (writes fail when
// the disk is full); it sweeps expired items and turns flush_all into a range
// deletion; and it reports its metrics. Only engine/ uses it, and repl/ reads
// the log through it.
//
// The package is empty today: it arrives with the disk tier issue.
package lsm
