//go:build race

package lsm

// raceEnabled: sync.Pool drops items at random under -race, so allocation
// counts are not checked.
const raceEnabled = true
