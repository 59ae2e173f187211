package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer collects a child process's output (set it as the exec.Cmd's Stdout and Stderr)
// while the test reads it: Write and String are safe to call from different goroutines, which
// a plain bytes.Buffer is not.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
