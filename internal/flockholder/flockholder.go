// Package flockholder names the process that holds a file's flock(2), so that "file in use"
// errors can say by whom: bbolt (the checkpoint store, the coordinator's raft.db) takes an
// exclusive flock on its file and a second opener can only time out.
package flockholder

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PID returns the PID of a process holding a FLOCK on path's inode, read from /proc/locks
// (Linux; it sees shared and exclusive holders alike), or 0 when there is none, the file is
// gone, or /proc/locks cannot be read (other systems). Lines of /proc/locks look like
// "3: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF": the PID, then major:minor:inode;
// lines whose second field is "->" are waiters, not holders.
func PID(path string) int {
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
		if len(fields) < 6 || fields[1] != "FLOCK" {
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
