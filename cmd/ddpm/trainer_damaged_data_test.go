package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/dataset"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// nodeData prepares mnist:test into each of dirs' "prep" folder, the run's relative dataset
// path as each node's own disk holds it.
func nodeData(t *testing.T, dirs ...string) {
	t.Helper()
	src, err := dataset.Open("mnist:test", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := dataset.Prepare(src, filepath.Join(d, "prep"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// damageShard flips one bit in the middle of the shard file, as a bad disk or a torn copy
// would, and returns its bytes before (to repair it with), the sha256 they hash to (the one
// index.json pins) and the sha256 of the damaged file, in hex.
func damageShard(t *testing.T, shard string) (good []byte, was, now string) {
	t.Helper()
	good, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0x40
	if err := os.WriteFile(shard, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, sumBad := sha256.Sum256(good), sha256.Sum256(bad)
	return good, hex.EncodeToString(sum[:]), hex.EncodeToString(sumBad[:])
}

// otherData writes dir/prep as a folder of 16 grey 32x32 PNG images: data of the run's shape
// and another fingerprint.
func otherData(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "prep")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		img := image.NewGray(image.Rect(0, 0, 32, 32))
		for k := range img.Pix {
			img.Pix[k] = uint8(i*16 + k%7)
		}
		var b strings.Builder
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("%02d.png", i)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// expectDataExit waits (2 minutes at most) for p to exit with status 2 and exactly one line
// on stderr, want, after it left the cluster (MsgLeftOnFailure in its log).
func expectDataExit(t *testing.T, name string, p *trainerProc, want string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%s did not exit within 2 minutes; its log:\n%s\nstderr:\n%s", name, b, p.stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 2 || p.stderr.String() != want {
		t.Fatalf("%s exited with %v and stderr\n%q\nwant status 2 and\n%q", name, p.err, p.stderr.String(), want)
	}
	if b, _ := os.ReadFile(p.log); !strings.Contains(string(b), `"msg":"`+MsgLeftOnFailure+`"`) {
		t.Fatalf("%s did not leave the cluster; its log:\n%s", name, b)
	}
}

// TestDamagedDataLeavesRunGoing: a run of up to three trainers (min_trainers 1) names a
// relative dataset path, and each node holds its own copy there. Once t0 has committed a
// checkpoint, t1 and t2 join. t1's copy has one byte of its shard flipped (its index, and so its
// fingerprint, are the run's): at its first step it leaves the cluster and exits with status 2
// and one line naming the shard, both sha256s and what to do. t2 holds other data (another
// fingerprint): the committed checkpoint its generation loads was trained on the run's data, so
// it leaves and exits the same way, with one line naming both fingerprints. The run is never
// failed, and t0 finishes it alone. A trainer's bad data used to be reported as the run's
// failure: the coordinators failed the run and t0 exited 1.
func TestDamagedDataLeavesRunGoing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1, n2 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1"), filepath.Join(dir, "n2")
	nodeData(t, n0, n1)
	otherData(t, n2)
	_, was, now := damageShard(t, filepath.Join(n1, "prep", "shard-00000.bin"))

	run, cfg := procRun(t, dir, endlessSteps, 1, 3, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	t1 := launchTrainerIn(t, n1, bin, filepath.Join(dir, "t1-vol"), "t1", freeAddr(t), coord, cfg, certs)
	t2 := launchTrainerIn(t, n2, bin, filepath.Join(dir, "t2-vol"), "t2", freeAddr(t), coord, cfg, certs)
	expectDataExit(t, "t1", t1, fmt.Sprintf("ddpm: trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect prep checks every shard) and start the trainer again\n",
		filepath.Join("prep", "shard-00000.bin"), now, was))
	select {
	case <-t2.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("t2 did not exit within 2 minutes (log %s)", t2.log)
	}
	line := t2.stderr.String()
	fp := fmt.Sprintf(" was trained on data of fingerprint %s, this trainer's dataset has %s: the data changed since the run started, or this trainer was given other data; give the trainer the run's data\n",
		fingerprintOf(t, filepath.Join(n0, "prep"), 1), fingerprintOf(t, filepath.Join(n2, "prep"), 1))
	if !strings.HasPrefix(line, "ddpm: trainer: this trainer's dataset is not the run's: checkpoint step ") || !strings.HasSuffix(line, fp) || strings.Count(line, "\n") != 1 {
		t.Fatalf("t2's stderr %q, want one line ending in %q", line, fp)
	}
	expectDataExit(t, "t2", t2, line)
	alone := waitFor(t, cli, "a generation of t0 alone", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Members["t2"] == nil && s.Generation.World == 1
	})
	if alone.Status.Terminal() {
		t.Fatalf("the run is %s after t1 and t2 met their data (%s)", alone.Status, alone.Reason)
	}
	if final := commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number); final.Status.Terminal() {
		t.Fatalf("the run is %s (%s)", final.Status, final.Reason)
	}
	stopTrainer(t, "t0", t0)
}

// fingerprintOf is the fingerprint of the dataset at path, read with the model's channels.
func fingerprintOf(t *testing.T, path string, channels int) string {
	t.Helper()
	ds, err := dataset.Open(path, dataset.Options{Channels: channels})
	if err != nil {
		t.Fatal(err)
	}
	return ds.Fingerprint()
}
