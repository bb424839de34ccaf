// Package bench is the load generator behind `tcache bench`, a memtier-style
// tool with which operators measure a tcache node or cluster.
//
// Its contract (DESIGN.md): drive any memcached-compatible server (tcache or
// memcached, for comparison on the same machine in the same run) with
// configurable workloads — hot-tier, overflow (a data set many times the
// memory limit), persistent (durability sync), replication lag and catch-up —
// and report throughput and latency percentiles (p99 included).
//
// The package is empty today: it arrives with the `tcache bench` issue.
package bench
