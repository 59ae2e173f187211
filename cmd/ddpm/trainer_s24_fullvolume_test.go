package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// smallVolume mounts a tmpfs of size bytes and at most inodes files at dir (created), unmounted
// at the test's end: a volume that really fills up, for every file and every process. It skips
// the test where mounting is not allowed (not root, no CAP_SYS_ADMIN).
func smallVolume(t *testing.T, dir string, size int64, inodes int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,nr_inodes=%d,mode=0755", size, inodes)); err != nil {
		t.Skip("cannot mount a tmpfs for a small volume:", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting the test's tmpfs %s: %v", dir, err)
		}
	})
}

// keepFull fills the volume dir: it takes every inode left (takeInodes), then writes dir/filler
// until the file system says it is full, leaving no block free, and goes on taking every block
// freed later (a failed write's blocks given back) until until is closed. It returns, once the
// volume is first full, the filler's path and a function that frees the inodes.
func keepFull(t *testing.T, dir string, until <-chan struct{}) (string, func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	freeInodes := takeInodes(t, dir)
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	fill := func() error {
		for {
			if _, err := f.Write(buf); err != nil {
				return err
			}
		}
	}
	if err := fill(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close() // a removed file's blocks are freed once it is closed
		for {
			select {
			case <-until:
				return
			case <-time.After(time.Millisecond):
			}
			_ = fill()
		}
	}()
	t.Cleanup(func() { <-done })
	return p, freeInodes
}

// takeInodes creates empty files dir/inode-N until the file system has no inode left for
// another file, and returns a function that removes them.
func takeInodes(t *testing.T, dir string) (free func()) {
	t.Helper()
	var made []string
	for i := 0; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("inode-%d", i))
		f, err := os.Create(p)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		made = append(made, p)
	}
	return func() {
		for _, p := range made {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// waitLogLine waits (2 minutes at most) for p's log to hold a line with msg, or for p to exit.
func waitLogLine(t *testing.T, name string, p *trainerProc, msg string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), `"msg":"`+msg+`"`) {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before logging %q; its log:\n%s\nstderr:\n%s", name, p.err, msg, b, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no %q within 2 minutes; its log:\n%s", name, msg, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFullVolumeStillRecordsFault: t1's volume is a tmpfs of 64 MiB and 64 files that fills up
// completely once t1 has joined a run t0 trains (min_trainers 1): a filler file takes every block
// (and every block given back until t1 exits: a failed save's), empty files every inode. t1
// leaves at its next save or fetch (exit 1, one line about its volume), its fault recorded in
// fault.json all the same: the volume had no room for a new file, and the record took the room
// t1 kept for it when it joined (trainer.FaultReserveFile). Restarted onto the full volume, t1
// tries its test write, which fails, and exits with status 1 and one line saying so, without
// joining: t0's generation is unchanged and t0 commits on in it. Before, the record could not be
// written ("no space left on device", one warning), and every restart joined, starting a
// generation, and left it again. With the filler removed, t1 joins, the ring of both commits, the
// record is gone and the room for the next one is kept again.
func TestFullVolumeStillRecordsFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	vol := filepath.Join(dir, "t1-vol")
	smallVolume(t, vol, 64<<20, 64)
	// Every save grows the checkpoint files (none pruned), so that t1's next save after the fill
	// needs new blocks, whenever the fill comes.
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.CheckpointEvery, r.KeepCheckpoints = 16, 100 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	listen := freeAddr(t)
	t1 := launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	waitLogLine(t, "t1", t1, "joined")
	// The room for a record is written once t1 has joined; the fill must come after it, or the
	// record has no room to take (the reserve's write fails on the full volume and is removed).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(filepath.Join(vol, trainer.FaultReserveFile)); err == nil && fi.Size() == trainer.FaultReserveBytes {
			break
		}
		select {
		case <-t1.exited:
			t.Fatalf("t1 exited (%v) before keeping room for a fault record; stderr:\n%s", t1.err, t1.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(t1.log)
			t.Fatalf("t1 kept no room for a fault record (%s of %d bytes) within 2 minutes of joining; its log:\n%s", trainer.FaultReserveFile, trainer.FaultReserveBytes, b)
		}
	}
	filler, freeInodes := keepFull(t, vol, t1.exited)
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(t1.log)
		t.Fatalf("t1 did not exit within 2 minutes on a full volume; its log:\n%s\nstderr:\n%s", b, t1.stderr.String())
	}
	var ee *exec.ExitError
	line := t1.stderr.String()
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(line, "ddpm: trainer: this trainer's volume: ") ||
		!strings.HasSuffix(line, ": no space left on device\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("t1 exited with %v and stderr %q; want status 1 and one line about its full volume", t1.err, line)
	}
	rec, err := trainer.LoadFault(vol)
	if err != nil || rec == nil || rec.Kind != trainer.FaultVolume || rec.Err != strings.TrimSuffix(strings.TrimPrefix(line, "ddpm: "), "\n") {
		b, _ := os.ReadFile(t1.log)
		t.Fatalf("t1's record on the full volume: %+v, %v; want its volume fault; its log:\n%s", rec, err, b)
	}
	alone := waitFor(t, cli, "a generation without t1", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	alone = commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number)

	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	again := fmt.Sprintf("ddpm: trainer: this trainer's volume still cannot take one checkpoint's save: a test write of %d bytes to %s failed (open: no space left on device); "+
		"free space on it (or fix what the error names) and start the trainer again; or remove %s to join anyway\n", rec.Bytes, vol, filepath.Join(vol, trainer.FaultFile))
	expectNoJoin(t, cli, "the restarted t1", "t1", t1, 1, again, alone.Generation.Number, lastCommitted(alone))

	// Room again: the test write passes, t1 joins, and the volume keeps room for a record again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freeInodes()
	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	backInRing(t, cli, "t1")
	if _, err := os.Stat(filepath.Join(vol, trainer.FaultFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record of t1's fault is still there after it joined (%v)", err)
	}
	if fi, err := os.Stat(filepath.Join(vol, trainer.FaultReserveFile)); err != nil || fi.Size() != trainer.FaultReserveBytes {
		t.Errorf("the room for a record after t1 joined again: %v, %v", fi, err)
	}
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
}
