package checkpoint

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockHolder names the process holding path's flock: first from /proc/locks (Linux; exact,
// and it also sees read-only holders), then from the advisory sidecar path+".pid" that a
// read-write Open writes. It returns 0 when neither says.
func lockHolder(path string) int {
	if pid := procLocksHolder(path); pid > 0 {
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

// procLocksHolder scans /proc/locks for a FLOCK on path's inode. Lines look like
// "3: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF" (pid, then major:minor:inode).
func procLocksHolder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	dev := uint64(st.Dev)
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" { // "->" marks a waiter, not a holder
			continue
		}
		if fields[5] == want {
			if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
				return pid
			}
		}
	}
	return 0
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
