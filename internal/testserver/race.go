//go:build race

package testserver

// raceEnabled: the tests run with -race, so the server is built with it too.
const raceEnabled = true
