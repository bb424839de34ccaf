package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A keydir checkpoint (docs/keydir.md) is each shard's table as it is in
// RAM, so that Open reads it back into fresh mappings instead of
// replaying every position entry (BenchmarkKeydirLoad: 340 ns an entry).
// It covers the journal up to a position: Open replays only what follows.
//
//	header:  "tcache-keydir\x00" version(u8)=1 order(u32)=0x01020304 in
//	         the host's byte order, k0 k1 (u64: the SipHash key)
//	         segment(u32) offset(u64) shards(u16) crc32c(u32)
//	shard:   slots(u32) entries(u32) slots × 24 bytes (kdSlot, host
//	         order) crc32c(u32) of the shard's bytes
//
// Slots are written in the host's byte order (the order field tells a
// reader on another machine that it cannot use the file) and the table
// layout is kept, so a load is a read per shard and a checksum.
const (
	ckptMagic   = "tcache-keydir\x00"
	ckptVersion = 1
	ckptOrder   = 0x01020304
	ckptHdrLen  = len(ckptMagic) + 1 + 4 + 8 + 8 + 4 + 8 + 2 + 4
	// ckptMaxSlots bounds a shard's table in a checkpoint: 2^26 slots
	// (1.5 GiB) a shard, 2^34 keys in all.
	ckptMaxSlots = 1 << 26
)

// ckptPos is the journal position a checkpoint covers: every frame before
// offset Off of segment Seg, and of earlier segments.
type ckptPos struct {
	Seg uint32
	Off int64
}

// errNoCheckpoint: there is no usable checkpoint (none, from another
// store, or from a machine of another byte order): Open replays from the
// start.
var errNoCheckpoint = errors.New("lsm: keydir: no usable checkpoint")

// writeCheckpoint writes k, which covers the journal up to pos, to path:
// into a temporary file, synced, then renamed over path and the directory
// synced, so that a crash leaves the old checkpoint or the new one. With
// settle nil no commit may change k meanwhile (Close). Otherwise commits
// go on and each shard is copied under its lock: a fuzzy checkpoint,
// whose shards hold everything before pos and some of what came after,
// which the replay from pos applies again in order. Those later entries
// name frames appended after pos, which must be durable before the
// checkpoint replaces the old one (a crash would otherwise leave entries
// naming frames it lost, in place of the older frames they replaced):
// settle, called after the copy and before the rename, makes them so.
func writeCheckpoint(fs vfs.FS, path string, k *keydir, pos ckptPos, settle func() error) error {
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("lsm: keydir checkpoint: %w", err)
	}
	err = writeCheckpointTo(f, k, pos, settle != nil)
	if err == nil {
		err = f.Sync()
	}
	if err == nil && settle != nil {
		err = settle()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(fs.PathDir(path)); err == nil {
			err = d.Sync()
			_ = d.Close()
		}
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("lsm: keydir checkpoint: %w", err)
	}
	return nil
}

func writeCheckpointTo(w io.Writer, k *keydir, pos ckptPos, live bool) error {
	hdr := make([]byte, 0, ckptHdrLen)
	hdr = append(hdr, ckptMagic...)
	hdr = append(hdr, ckptVersion)
	hdr = binary.NativeEndian.AppendUint32(hdr, ckptOrder)
	hdr = binary.BigEndian.AppendUint64(hdr, k.k0)
	hdr = binary.BigEndian.AppendUint64(hdr, k.k1)
	hdr = binary.BigEndian.AppendUint32(hdr, pos.Seg)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(pos.Off))
	hdr = binary.BigEndian.AppendUint16(hdr, keydirShards)
	hdr = binary.BigEndian.AppendUint32(hdr, crc32.Checksum(hdr, castagnoli))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	var copied []byte // live: the shard's table, copied under its lock
	for i := range k.shards {
		s := &k.shards[i]
		var head [8]byte
		s.mu.Lock()
		binary.BigEndian.PutUint32(head[:], uint32(len(s.slots)))
		binary.BigEndian.PutUint32(head[4:], uint32(s.n))
		mem := s.mem
		if live {
			copied = append(copied[:0], s.mem...)
			mem = copied
		}
		s.mu.Unlock()
		crc := crc32.Update(crc32.Checksum(head[:], castagnoli), castagnoli, mem)
		if _, err := w.Write(head[:]); err != nil {
			return err
		}
		if _, err := w.Write(mem); err != nil {
			return err
		}
		if _, err := w.Write(binary.BigEndian.AppendUint32(nil, crc)); err != nil {
			return err
		}
	}
	return nil
}

// loadCheckpoint reads the checkpoint at path into a new keydir, which it
// returns with the position it covers. It returns errNoCheckpoint when
// there is no file or it belongs to another key or byte order, and an
// error wrapping ErrCorrupt when the file is damaged; either way Open
// replays from the start.
func loadCheckpoint(fs vfs.FS, path string, k0, k1 uint64) (*keydir, ckptPos, error) {
	f, err := fs.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ckptPos{}, errNoCheckpoint
		}
		return nil, ckptPos{}, fmt.Errorf("lsm: keydir checkpoint: %w", err)
	}
	defer f.Close()
	k, pos, err := readCheckpoint(f, k0, k1)
	if err != nil {
		return nil, ckptPos{}, err
	}
	return k, pos, nil
}

// readCheckpoint parses a checkpoint from r (the fuzz target's entry).
func readCheckpoint(r io.Reader, k0, k1 uint64) (*keydir, ckptPos, error) {
	hdr := make([]byte, ckptHdrLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, ckptPos{}, fmt.Errorf("%w: keydir checkpoint header: %v", ErrCorrupt, err)
	}
	n := ckptHdrLen - 4
	if got, want := crc32.Checksum(hdr[:n], castagnoli), binary.BigEndian.Uint32(hdr[n:]); got != want ||
		string(hdr[:len(ckptMagic)]) != ckptMagic {
		return nil, ckptPos{}, fmt.Errorf("%w: keydir checkpoint header", ErrCorrupt)
	}
	p := hdr[len(ckptMagic):]
	if p[0] != ckptVersion || binary.NativeEndian.Uint32(p[1:]) != ckptOrder ||
		binary.BigEndian.Uint64(p[5:]) != k0 || binary.BigEndian.Uint64(p[13:]) != k1 ||
		binary.BigEndian.Uint16(p[33:]) != keydirShards {
		return nil, ckptPos{}, errNoCheckpoint
	}
	pos := ckptPos{Seg: binary.BigEndian.Uint32(p[21:]), Off: int64(binary.BigEndian.Uint64(p[25:]))}
	if pos.Off < 0 {
		return nil, ckptPos{}, fmt.Errorf("%w: keydir checkpoint position %+v", ErrCorrupt, pos)
	}
	k := blankKeydir(k0, k1) // its minExp values are not kept: every shard is walked once
	for i := range k.shards {
		if err := k.shards[i].readFrom(r, i); err != nil {
			k.free()
			return nil, ckptPos{}, fmt.Errorf("%w: keydir checkpoint shard %d: %v", ErrCorrupt, i, err)
		}
	}
	return k, pos, nil
}

// readFrom reads one shard of a checkpoint into s (empty).
func (s *kdShard) readFrom(r io.Reader, shard int) error {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	slots, n := binary.BigEndian.Uint32(head[:]), binary.BigEndian.Uint32(head[4:])
	if slots < kdMinSlots || slots > ckptMaxSlots || bits.OnesCount32(slots) != 1 || uint64(n) > uint64(slots)/kdLoadDen*kdLoadNum {
		return fmt.Errorf("a table of %d entries in %d slots", n, slots)
	}
	if err := s.alloc(int(slots)); err != nil {
		return err
	}
	if _, err := io.ReadFull(r, s.mem); err != nil {
		return err
	}
	var sum [4]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return err
	}
	crc := crc32.Update(crc32.Checksum(head[:], castagnoli), castagnoli, s.mem)
	if crc != binary.BigEndian.Uint32(sum[:]) {
		return errors.New("checksum mismatch")
	}
	// The checksum proves the bytes are the ones written; the count must
	// still match them (a table the probes can trust).
	used := 0
	for i := range s.slots {
		if h := s.slots[i].hash; h != 0 {
			if int(h>>(64-keydirShardBits)) != shard {
				return fmt.Errorf("slot %d holds a hash of shard %d", i, h>>(64-keydirShardBits))
			}
			used++
		}
	}
	if used != int(n) {
		return fmt.Errorf("%d entries counted, %d recorded", used, n)
	}
	s.n = int(n)
	return nil
}
