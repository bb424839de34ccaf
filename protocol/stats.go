package protocol

// The `stats` command and its subcommands, with memcached 1.6.18's keys in
// memcached's order. Stats are rare: these paths may allocate a little.

import (
	"cmp"
	"net"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/lsm"
)

// maxSlabClasses is memcached's MAX_NUMBER_OF_SLAB_CLASSES: the class ids
// `stats cachedump` accepts are below it.
const maxSlabClasses = 64

// statSink receives stats one at a time from the generators below
// (generalStats, settingsStats, itemsStats, slabsStats, connsStats), so that
// the text protocol (statsWriter: "STAT name value" lines) and the binary
// protocol (binStatsWriter: one frame per stat) share them.
type statSink interface {
	str(name, value string)
	u(name string, v uint64)
	i(name string, v int64)
}

// statsWriter builds "STAT name value\r\n" lines into the conn's writer.
type statsWriter struct{ c *conn }

func (s statsWriter) str(name, value string) {
	b := append(s.c.line[:0], "STAT "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, value...)
	b = append(b, crlf...)
	s.c.line = b
	s.c.w.Write(b)
}

func (s statsWriter) u(name string, v uint64) {
	b := append(s.c.line[:0], "STAT "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, v, 10)
	b = append(b, crlf...)
	s.c.line = b
	s.c.w.Write(b)
}

func (s statsWriter) i(name string, v int64) {
	b := append(s.c.line[:0], "STAT "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, v, 10)
	b = append(b, crlf...)
	s.c.line = b
	s.c.w.Write(b)
}

// serveStats answers stats [subcommand] (process_stat).
func (c *conn) serveStats(nt int) error {
	sw := statsWriter{c}
	if nt == 2 {
		c.generalStats(sw)
		c.w.Write(replyEnd)
		return nil
	}
	switch string(c.tok[1]) {
	case "reset":
		c.srv.resetStats()
		c.w.Write(replyReset)
		return nil
	case "settings":
		c.settingsStats(sw)
	case "conns":
		c.connsStats(sw)
	case "items":
		c.itemsStats(sw)
	case "slabs":
		c.slabsStats(sw)
	case "sizes":
		sw.str("sizes_status", "disabled")
	case "extstore":
		// memcached without an extstore path configured: no lines.
	case "cachedump":
		// memcached 1.6.18 dumps only a class's COLD LRU, where fresh items
		// never are; tcache has no LRU segments and answers as for an
		// empty one. lru_crawler metadump is the dump that lists items.
		if nt < 5 {
			c.w.Write(replyBadCommandLine)
			return nil
		}
		id, ok1 := parseUint32(c.tok[2])
		_, ok2 := parseUint64(c.tok[3])
		if !ok1 || !ok2 {
			c.w.Write(replyBadFormat)
			return nil
		}
		if id >= maxSlabClasses {
			c.w.Write(replyIllegalSlabID)
			return nil
		}
	case "detail":
		if nt < 4 {
			c.w.Write(replyDetailUsage)
			return nil
		}
		switch string(c.tok[2]) {
		case "on", "off":
			c.w.Write(replyOK)
		case "dump":
			// No prefix statistics are kept: an empty dump.
		default:
			c.w.Write(replyDetailUsage)
			return nil
		}
		if string(c.tok[2]) != "dump" {
			return nil
		}
	default:
		c.w.Write(replyError)
		return nil
	}
	c.w.Write(replyEnd)
	return nil
}

// resetStats is `stats reset`: engine counters and the connection counters
// memcached resets (total_connections, rejected_connections, bytes).
func (s *Server) resetStats() {
	s.eng.ResetStats()
	s.totalConns.Store(0)
	s.rejectedConns.Store(0)
	s.bytesRead.Store(0)
	s.bytesWritten.Store(0)
	s.storeTooLarge.Store(0)
	s.cmdMeta.Store(0)
}

// rusage returns user and system CPU time as memcached prints them.
func rusage() (user, sys string) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return "0.000000", "0.000000"
	}
	f := func(tv syscall.Timeval) string {
		us := strconv.FormatInt(int64(tv.Usec), 10)
		return strconv.FormatInt(int64(tv.Sec), 10) + "." + strings.Repeat("0", max(0, 6-len(us))) + us
	}
	return f(ru.Utime), f(ru.Stime)
}

// generalStats writes the keys of memcached's `stats` in its order. Keys of
// memcached internals tcache does not have (libevent) are omitted; those
// whose concept exists but is idle in tcache (slab mover, hash expansion...)
// are reported as memcached reports them idle, so that monitoring tools find
// every key they read.
func (c *conn) generalStats(sw statSink) {
	s := c.srv
	es := s.eng.Stats()
	is := s.itemsStats()
	ds, disk := s.diskStats()
	now := s.opts.Clock.Now()
	user, sys := rusage()
	sw.i("pid", int64(s.pid))
	sw.i("uptime", int64(now.Sub(s.started).Seconds()))
	sw.i("time", now.Unix())
	sw.str("version", memcachedVersion)
	sw.i("pointer_size", 64)
	sw.str("rusage_user", user)
	sw.str("rusage_system", sys)
	sw.i("max_connections", int64(s.opts.MaxConns))
	sw.i("curr_connections", s.currConns.Load())
	sw.u("total_connections", s.totalConns.Load())
	sw.u("rejected_connections", s.rejectedConns.Load())
	sw.i("connection_structures", s.connStructs.Load())
	sw.u("response_obj_oom", 0)
	sw.u("response_obj_count", 0)
	sw.u("response_obj_bytes", 0)
	sw.u("read_buf_count", 0)
	sw.u("read_buf_bytes", 0)
	sw.u("read_buf_bytes_free", 0)
	sw.u("read_buf_oom", 0)
	sw.u("reserved_fds", 0)
	sw.u("cmd_get", es.CmdGet)
	sw.u("cmd_set", es.CmdSet)
	sw.u("cmd_flush", es.CmdFlush)
	sw.u("cmd_touch", es.CmdTouch)
	sw.u("cmd_meta", s.cmdMeta.Load())
	sw.u("get_hits", es.GetHits)
	sw.u("get_misses", es.GetMisses)
	sw.u("get_expired", es.GetExpired)
	sw.u("get_flushed", es.GetFlushed)
	if disk {
		// memcached prints these right here when extstore is on.
		sw.u("get_extstore", es.DiskReads)
		sw.u("recache_from_extstore", es.Promotions)
		sw.u("miss_from_extstore", es.DiskMisses)
		sw.u("badcrc_from_extstore", ds.BadCRC)
	}
	sw.u("delete_misses", es.DeleteMisses)
	sw.u("delete_hits", es.DeleteHits)
	sw.u("incr_misses", es.IncrMisses)
	sw.u("incr_hits", es.IncrHits)
	sw.u("decr_misses", es.DecrMisses)
	sw.u("decr_hits", es.DecrHits)
	sw.u("cas_misses", es.CasMisses)
	sw.u("cas_hits", es.CasHits)
	sw.u("cas_badval", es.CasBadval)
	sw.u("touch_hits", es.TouchHits)
	sw.u("touch_misses", es.TouchMisses)
	sw.u("store_too_large", is.TooLarge+s.storeTooLarge.Load())
	sw.u("store_no_memory", is.OutOfMemory)
	sw.u("auth_cmds", 0)
	sw.u("auth_errors", 0)
	sw.u("bytes_read", s.bytesRead.Load())
	sw.u("bytes_written", s.bytesWritten.Load())
	sw.u("limit_maxbytes", es.LimitMaxbytes)
	accepting := uint64(1)
	if s.closing.Load() {
		accepting = 0
	}
	sw.u("accepting_conns", accepting)
	sw.u("listen_disabled_num", 0)
	sw.u("time_in_listen_disabled_us", 0)
	sw.i("threads", int64(s.opts.Threads))
	sw.u("conn_yields", 0)
	sw.u("hash_power_level", 16)
	sw.u("hash_bytes", 524288)
	sw.u("hash_is_expanding", 0)
	sw.u("slab_reassign_rescues", 0)
	sw.u("slab_reassign_chunk_rescues", 0)
	sw.u("slab_reassign_evictions_nomem", 0)
	sw.u("slab_reassign_inline_reclaim", 0)
	sw.u("slab_reassign_busy_items", 0)
	sw.u("slab_reassign_busy_deletes", 0)
	sw.u("slab_reassign_running", 0)
	sw.u("slabs_moved", 0)
	sw.u("lru_crawler_running", 0)
	sw.u("lru_crawler_starts", 0)
	sw.u("lru_maintainer_juggles", 0)
	sw.u("malloc_fails", 0)
	sw.u("log_worker_dropped", 0)
	sw.u("log_worker_written", 0)
	sw.u("log_watcher_skipped", 0)
	sw.u("log_watcher_sent", 0)
	sw.u("log_watchers", 0)
	if disk {
		// memcached's extstore block (prometheus memcached_exporter reads
		// extstore_* once extstore_limit_maxbytes is present).
		sw.u("extstore_objects_evicted", ds.DroppedItems)
		sw.u("extstore_objects_read", ds.Reads)
		sw.u("extstore_objects_written", ds.Writes)
		sw.u("extstore_objects_used", ds.Items)
		sw.u("extstore_bytes_evicted", ds.DroppedBytes)
		sw.u("extstore_bytes_written", ds.BytesWritten)
		sw.u("extstore_bytes_read", ds.BytesRead)
		sw.u("extstore_bytes_used", ds.BytesUsed)
		sw.u("extstore_limit_maxbytes", ds.LimitBytes)
	}
	sw.u("unexpected_napi_ids", 0)
	sw.u("round_robin_fallback", 0)
	sw.u("bytes", es.Bytes)
	sw.u("curr_items", es.CurrItems)
	sw.u("total_items", es.TotalItems)
	sw.u("slab_global_page_pool", 0)
	sw.u("expired_unfetched", es.ExpiredUnfetched)
	sw.u("evicted_unfetched", es.EvictedUnfetched)
	sw.u("evicted_active", is.EvictedActive)
	sw.u("evictions", es.Evictions)
	sw.u("reclaimed", es.Reclaimed)
	sw.u("crawler_reclaimed", es.CrawlerReclaimed)
	sw.u("crawler_items_checked", is.CrawlerChecked)
	sw.u("lrutail_reflocked", 0)
	sw.u("moves_to_cold", 0)
	sw.u("moves_to_warm", is.MovesToMain)
	sw.u("moves_within_lru", is.MovesWithinMain)
	sw.u("direct_reclaims", 0)
	sw.u("lru_bumps_dropped", 0)
	sw.str("tcache_version", s.opts.Version)
	if disk {
		diskStats(sw, &es, &ds)
	}
	if s.opts.ExtraStats != nil {
		s.opts.ExtraStats(statWriter{sw})
	}
	goRuntimeStats(sw)
}

// diskStats writes the disk tier's figures that have no memcached
// counterpart (docs/disk-tier.md).
func diskStats(sw statSink, es *engine.Stats, ds *lsm.Stats) {
	sw.u("tcache_ram_evictions", es.RAMEvictions)
	sw.u("tcache_disk_items", ds.Items)
	sw.u("tcache_disk_item_bytes", ds.ItemBytes)
	sw.u("tcache_disk_misses", es.DiskMisses)
	sw.u("tcache_disk_hint_hits", ds.HintHits)
	sw.u("tcache_disk_hint_misses", ds.HintMisses)
	sw.u("tcache_disk_index_reads", ds.IndexReads)
	sw.u("tcache_disk_lost_records", ds.Lost)
	sw.u("tcache_disk_journal_bytes", ds.JournalBytes)
	sw.u("tcache_disk_journal_segments", ds.JournalSegments)
	sw.u("tcache_disk_journal_releasing", ds.JournalReleasing)
	sw.u("tcache_disk_journal_released_bytes", ds.JournalReleased)
	sw.u("tcache_disk_journal_direct_bytes", ds.JournalDirectBytes)
	sw.u("tcache_disk_compress_skipped", ds.CompressSkipped)
	sw.u("tcache_disk_index_pending", ds.IndexPending)
	sw.u("tcache_disk_index_pending_bytes", ds.IndexPendingBytes)
	sw.u("tcache_disk_index_ingests", ds.IndexIngests)
	sw.u("tcache_disk_keydir_keys", ds.KeydirKeys)
	sw.u("tcache_disk_keydir_bytes", ds.KeydirBytes)
	sw.u("tcache_disk_keydir_checkpoints", ds.KeydirCheckpoints)
	sw.u("tcache_disk_read_errors", es.ReadErrors)
	sw.u("tcache_disk_commit_errors", es.CommitErrors)
	sw.u("tcache_disk_full_errors", ds.DiskFull)
	sw.u("tcache_disk_write_errors", ds.WriteErrors)
	sw.u("tcache_disk_commits", ds.Commits)
	sw.u("tcache_disk_fsyncs", ds.Fsyncs)
	sw.u("tcache_disk_drops", ds.Drops)
	sw.u("tcache_disk_epochs", ds.Epochs)
	sw.u("tcache_disk_sweeper_runs", ds.SweeperRuns)
	sw.u("tcache_disk_swept", ds.Swept)
	sw.u("tcache_disk_compaction_debt", ds.CompactDebt)
	sw.u("tcache_disk_recounting", ds.Recounting)
	sw.u("tcache_log_first_seq", ds.LogFirst)
	sw.u("tcache_log_last_seq", ds.LogLast)
	sw.u("tcache_disk_tombstones", ds.Tombstones)
	sw.u("tcache_disk_tombstones_swept", ds.TombSwept)
	sw.u("tcache_log_history", ds.History)
}

// statWriter adapts a statSink to the exported StatWriter of
// Options.ExtraStats.
type statWriter struct{ sink statSink }

func (w statWriter) Str(name, value string)     { w.sink.str(name, value) }
func (w statWriter) Uint(name string, v uint64) { w.sink.u(name, v) }
func (w statWriter) Int(name string, v int64)   { w.sink.i(name, v) }

// goRuntimeMetrics are the Go runtime figures tcache adds to `stats`: the
// RAM tier keeps items off the Go heap, and these show that it stays small
// and that collections stay rare whatever the item count.
var goRuntimeMetrics = [...]struct{ stat, metric string }{
	{"tcache_go_heap_inuse", "/memory/classes/heap/objects:bytes"},
	{"tcache_go_heap_objects", "/gc/heap/objects:objects"},
	{"tcache_go_gc_cycles", "/gc/cycles/total:gc-cycles"},
	{"tcache_go_goroutines", "/sched/goroutines:goroutines"},
}

func goRuntimeStats(sw statSink) {
	var samples [len(goRuntimeMetrics)]metrics.Sample
	for i, m := range goRuntimeMetrics {
		samples[i].Name = m.metric
	}
	metrics.Read(samples[:])
	for i, m := range goRuntimeMetrics {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			sw.u(m.stat, samples[i].Value.Uint64())
		}
	}
}

// settingsStats writes `stats settings` (process_stat_settings), leaving out
// the extstore and TLS settings tcache does not have.
func (c *conn) settingsStats(sw statSink) {
	s := c.srv
	es := s.eng.Stats()
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	inter := "NULL"
	if len(s.opts.ListenAddrs) > 0 {
		inter = strings.Join(s.opts.ListenAddrs, ",")
	}
	sw.u("maxbytes", es.LimitMaxbytes)
	sw.i("maxconns", int64(s.opts.MaxConns))
	sw.i("tcpport", int64(s.opts.TCPPort))
	sw.i("udpport", 0)
	sw.str("inter", inter)
	sw.i("verbosity", int64(s.verbosity.Load()))
	sw.i("oldest", 0)
	sw.str("evictions", "on")
	sw.str("domain_socket", "NULL")
	sw.str("umask", "700")
	sw.str("shutdown_command", "no")
	sw.str("growth_factor", "1.25")
	sw.i("chunk_size", 48)
	sw.i("num_threads", int64(s.opts.Threads))
	sw.i("num_threads_per_udp", int64(s.opts.Threads))
	sw.str("stat_key_prefix", ":")
	sw.str("detail_enabled", "no")
	sw.i("reqs_per_event", 20)
	sw.str("cas_enabled", "yes")
	sw.i("tcp_backlog", 1024)
	sw.str("binding_protocol", bindingProtocol(s.opts.Protocol))
	sw.str("auth_enabled_sasl", "no")
	sw.str("auth_enabled_ascii", "no")
	sw.i("item_size_max", int64(s.eng.MaxItemSize()))
	sw.str("maxconns_fast", "yes")
	sw.i("hashpower_init", 0)
	sw.str("slab_reassign", "no")
	sw.i("slab_automove", 0)
	sw.str("slab_automove_ratio", "0.80")
	sw.i("slab_automove_window", 30)
	sw.i("slab_chunk_max", int64(s.eng.MaxItemSize()/2))
	sw.str("lru_crawler", yesNo(!s.crawlerOff.Load()))
	sw.i("lru_crawler_sleep", 100)
	sw.i("lru_crawler_tocrawl", 0)
	sw.i("tail_repair_time", 0)
	sw.str("flush_enabled", "yes")
	sw.str("dump_enabled", "no")
	sw.str("hash_algorithm", "xxh3")
	sw.str("lru_maintainer_thread", "no")
	sw.str("lru_segmented", "no")
	sw.i("hot_lru_pct", 20)
	sw.i("warm_lru_pct", 40)
	sw.str("hot_max_factor", "0.20")
	sw.str("warm_max_factor", "2.00")
	sw.str("temp_lru", "no")
	sw.i("temporary_ttl", 61)
	sw.i("idle_timeout", int64(s.opts.IdleTimeout.Seconds()))
	sw.i("watcher_logbuf_size", 262144)
	sw.i("worker_logbuf_size", 65536)
	sw.i("read_buf_mem_limit", 0)
	sw.str("track_sizes", "no")
	sw.str("inline_ascii_response", "no")
	sw.str("ssl_enabled", yesNo(false))
	sw.str("tcache_version", s.opts.Version)
	if st := s.opts.Storage; st.Mode != "" {
		sw.str("tcache_mode", st.Mode)
		if st.Mode != "memory" {
			sw.str("tcache_durability", st.Durability)
			sw.i("tcache_disk_limit", st.DiskLimit)
		}
	}
}

// connsStats writes `stats conns`: the listeners, then one block per client
// (process_stats_conns). The number before the colon is a connection id
// (memcached prints the file descriptor).
func (c *conn) connsStats(sw statSink) {
	s := c.srv
	now := s.seconds() // the source of lastCmd: secs_since_last_cmd is never off by the timer's lag
	type lnInfo struct {
		id   uint64
		addr string
	}
	s.mu.Lock()
	lns := make([]lnInfo, 0, len(s.mu.listeners))
	for ln, id := range s.mu.listeners {
		lns = append(lns, lnInfo{id, addrString(ln.Addr())})
	}
	conns := make([]*conn, 0, len(s.mu.conns))
	for cc := range s.mu.conns {
		conns = append(conns, cc)
	}
	s.mu.Unlock()
	slices.SortFunc(lns, func(a, b lnInfo) int { return cmp.Compare(a.id, b.id) })
	slices.SortFunc(conns, func(a, b *conn) int { return cmp.Compare(a.id, b.id) })
	name := func(id uint64, key string) string { return strconv.FormatUint(id, 10) + ":" + key }
	for _, ln := range lns {
		sw.str(name(ln.id, "addr"), ln.addr)
		sw.str(name(ln.id, "state"), "conn_listening")
		sw.i(name(ln.id, "secs_since_last_cmd"), now-s.started.Unix())
	}
	for _, cc := range conns {
		if cc.nc == nil {
			continue
		}
		sw.str(name(cc.id, "addr"), addrString(cc.nc.RemoteAddr()))
		sw.str(name(cc.id, "listen_addr"), addrString(cc.nc.LocalAddr()))
		st := cc.state.Load()
		if cc == c {
			st = stateParse
		}
		sw.str(name(cc.id, "state"), stateNames[st])
		sw.i(name(cc.id, "secs_since_last_cmd"), now-cc.lastCmd.Load())
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.Network() + ":" + a.String()
}

// itemsStats writes `stats items` for tcache's one pseudo slab class: the
// small (probationary) queue is reported as hot, the main queue as cold.
func (c *conn) itemsStats(sw statSink) {
	is := c.srv.itemsStats()
	if is.Number == 0 {
		return
	}
	es := c.srv.eng.Stats()
	sw.u("items:1:number", is.Number)
	sw.u("items:1:number_hot", is.NumberSmall)
	sw.u("items:1:number_warm", 0)
	sw.u("items:1:number_cold", is.NumberMain)
	sw.u("items:1:age_hot", is.AgeSmall)
	sw.u("items:1:age_warm", 0)
	sw.u("items:1:age", is.Age)
	sw.u("items:1:mem_requested", is.MemRequested)
	sw.u("items:1:evicted", is.Evicted)
	sw.u("items:1:evicted_nonzero", is.EvictedNonzero)
	sw.u("items:1:evicted_time", is.EvictedTime)
	sw.u("items:1:outofmemory", is.OutOfMemory)
	sw.u("items:1:tailrepairs", 0)
	sw.u("items:1:reclaimed", is.Reclaimed)
	sw.u("items:1:expired_unfetched", is.ExpiredUnfetched)
	sw.u("items:1:evicted_unfetched", is.EvictedUnfetched)
	sw.u("items:1:evicted_active", is.EvictedActive)
	sw.u("items:1:crawler_reclaimed", is.CrawlerReclaimed)
	sw.u("items:1:crawler_items_checked", is.CrawlerChecked)
	sw.u("items:1:lrutail_reflocked", 0)
	sw.u("items:1:moves_to_cold", 0)
	sw.u("items:1:moves_to_warm", is.MovesToMain)
	sw.u("items:1:moves_within_lru", is.MovesWithinMain)
	sw.u("items:1:direct_reclaims", 0)
	sw.u("items:1:hits_to_hot", 0)
	sw.u("items:1:hits_to_warm", 0)
	sw.u("items:1:hits_to_cold", es.GetHits)
	sw.u("items:1:hits_to_temp", 0)
}

// slabsStats writes `stats slabs` for the pseudo slab class: one "chunk"
// per live item.
func (c *conn) slabsStats(sw statSink) {
	is := c.srv.itemsStats()
	var malloced uint64
	if m, ok := c.srv.eng.(memoryStatser); ok {
		_, malloced = m.MemoryStats()
	}
	if is.Number == 0 {
		sw.u("active_slabs", 0)
		sw.u("total_malloced", malloced)
		return
	}
	es := c.srv.eng.Stats()
	sw.u("1:chunk_size", is.MemRequested/is.Number)
	sw.u("1:chunks_per_page", 1)
	sw.u("1:total_pages", is.Number)
	sw.u("1:total_chunks", is.Number)
	sw.u("1:used_chunks", is.Number)
	sw.u("1:free_chunks", 0)
	sw.u("1:free_chunks_end", 0)
	sw.u("1:get_hits", es.GetHits)
	sw.u("1:cmd_set", es.CmdSet)
	sw.u("1:delete_hits", es.DeleteHits)
	sw.u("1:incr_hits", es.IncrHits)
	sw.u("1:decr_hits", es.DecrHits)
	sw.u("1:cas_hits", es.CasHits)
	sw.u("1:cas_badval", es.CasBadval)
	sw.u("1:touch_hits", es.TouchHits)
	sw.u("active_slabs", 1)
	sw.u("total_malloced", malloced)
}

// bindingProtocol is memcached's name for a protocol setting
// (`stats settings` binding_protocol).
func bindingProtocol(p string) string {
	switch p {
	case ProtocolASCII:
		return "ascii"
	case ProtocolBinary:
		return "binary"
	}
	return "auto-negotiate"
}
