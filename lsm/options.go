package lsm

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// Defaults of Options (each field documents its own).
const (
	DefaultDiskLimit           = 10 << 30
	DefaultDurabilityInterval  = 100 * time.Millisecond
	DefaultBlockCacheSize      = 8 << 20
	DefaultMemTableSize        = 4 << 20
	DefaultIndexMemory         = 64 << 20
	DefaultCompressMin         = 256
	DefaultJournalMin          = 1
	DefaultLogRetentionBytes   = 1 << 30
	DefaultLogRetentionAge     = 24 * time.Hour
	DefaultMaintenanceInterval = time.Second

	// minDiskLimit keeps an epoch (DiskLimit/32) at least 32 KiB.
	minDiskLimit = 1 << 20
	// minMemTableSize is Pebble's floor for a useful memtable.
	minMemTableSize = 256 << 10
)

// EnsureDefaults fills the zero fields of o with their defaults.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.DiskLimit == 0 {
		o.DiskLimit = DefaultDiskLimit
	}
	if o.DurabilityInterval == 0 {
		o.DurabilityInterval = DefaultDurabilityInterval
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = DefaultBlockCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.IndexMemory == 0 {
		o.IndexMemory = DefaultIndexMemory
	}
	if o.Codec == CodecNone && o.CompressMin >= 0 {
		o.Codec = CodecS2
	}
	if o.JournalMin == 0 {
		o.JournalMin = DefaultJournalMin
	}
	if o.CompressMin == 0 {
		o.CompressMin = DefaultCompressMin
	}
	if o.LogRetentionBytes == 0 {
		o.LogRetentionBytes = DefaultLogRetentionBytes
	}
	if o.LogRetentionAge == 0 {
		o.LogRetentionAge = DefaultLogRetentionAge
	}
	if o.MaintenanceInterval == 0 {
		o.MaintenanceInterval = DefaultMaintenanceInterval
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate reports the first invalid field of o (after EnsureDefaults).
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if o.Mode > ModePersistent {
		errs = append(errs, fmt.Errorf("Mode %d is unknown", o.Mode))
	}
	if o.DiskLimit < minDiskLimit {
		errs = append(errs, fmt.Errorf("DiskLimit %d is below the minimum %d", o.DiskLimit, minDiskLimit))
	}
	if o.Durability > DurabilityNone {
		errs = append(errs, fmt.Errorf("Durability %d is unknown", o.Durability))
	}
	if o.DurabilityInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("DurabilityInterval %v is below 1ms", o.DurabilityInterval))
	}
	if o.BlockCacheSize < 0 {
		errs = append(errs, fmt.Errorf("BlockCacheSize %d is negative", o.BlockCacheSize))
	}
	if o.MemTableSize < minMemTableSize || o.MemTableSize >= 4<<30 {
		errs = append(errs, fmt.Errorf("MemTableSize %d is outside [%d, 4 GiB)", o.MemTableSize, minMemTableSize))
	}
	if o.Codec > CodecZstd {
		errs = append(errs, fmt.Errorf("Codec %d is unknown", o.Codec))
	}
	if o.LogRetentionBytes < 0 || o.LogRetentionAge < 0 {
		errs = append(errs, errors.New("log retention must not be negative"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("lsm: invalid options: %w", errors.Join(errs...))
}

// String names the mode as the configuration spells it.
func (m Mode) String() string {
	switch m {
	case ModeCache:
		return "cache"
	case ModePersistent:
		return "persistent"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// String names the durability as the configuration spells it.
func (d Durability) String() string {
	switch d {
	case DurabilityInterval:
		return "interval"
	case DurabilitySync:
		return "sync"
	case DurabilityNone:
		return "none"
	}
	return fmt.Sprintf("Durability(%d)", uint8(d))
}

// String names the codec as the configuration spells it.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}
