package checkpoint

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"ddpm/internal/flockholder"
)

// lockHolder names the process holding path's flock: first from /proc/locks (Linux; exact,
// and it also sees read-only holders), then from the advisory sidecar path+".pid" that a
// read-write Open writes. It returns 0 when neither says.
func lockHolder(path string) int {
	if pid := flockholder.PID(path); pid > 0 {
		return pid
	}
	b, err := os.ReadFile(path + ".pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// syncDir fsyncs the directory holding path so that a rename in it is durable.
func syncDir(path string) {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return
	}
	defer d.Close()
	_ = d.Sync()
}
