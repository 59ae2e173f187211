package dataset

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrepareKilledLeavesNothingForGood: a ddpm dataset prepare SIGKILLed while it writes its
// shards (real process: MNIST in 1 MiB shards, killed once its temporary folder holds one) leaves
// that folder beside --out; the next prepare into the same --out removes it, says so in one line
// on stderr, and writes a correct folder (index.json and its shard only, the source's
// fingerprint). An empty probe folder of CheckPrepareOut, as a kill between its creation and
// removal leaves it, goes too, in a line of its own; a temporary folder without a lock file
// (an older ddpm's), untouched for an hour, is said and left. The old code printed nothing and
// left all three for good.
func TestPrepareKilledLeavesNothingForGood(t *testing.T) {
	parent := t.TempDir()
	out := filepath.Join(parent, "prepared")
	cmd := exec.Command(ddpmBinary(t), "dataset", "prepare", "mnist", "--shard-mb", "1", "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var tmp string
	for deadline := time.Now().Add(time.Minute); tmp == "" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("the prepare of MNIST ended (%v) before a shard was seen in its temporary folder: %s", err, stderr.String())
		default:
		}
		shards, _ := filepath.Glob(filepath.Join(parent, ".prepared.tmp*", "shard-00000.bin"))
		if len(shards) > 0 {
			tmp = filepath.Dir(shards[0])
		}
	}
	if tmp == "" {
		t.Fatal("no shard in a temporary folder within a minute")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the killed prepare's temporary folder: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("the killed prepare made %s", out)
	}
	probe := filepath.Join(parent, ".prepare-probe-1234")
	if err := os.Mkdir(probe, 0o700); err != nil {
		t.Fatal(err)
	}
	// An older ddpm's temporary folder (no lock file), untouched for an hour: said, not removed.
	older := filepath.Join(parent, ".prepared.tmp42")
	if err := os.Mkdir(older, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(older, "shard-00000.bin"), []byte("DDPMSHD1"), 0o644); err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(older, hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}

	src := filepath.Join(t.TempDir(), "grey")
	writeLevels(t, src, true)
	stdout, errOut, code := runDDPM(t, "dataset", "prepare", src, "--out", out)
	want := "ddpm dataset prepare: removed the temp folder of an interrupted prepare: " + tmp + "\n" +
		"ddpm dataset prepare: removed the probe folder of an interrupted prepare: " + probe + "\n" +
		"ddpm dataset prepare: left " + older + ": the temp folder of a prepare by an older ddpm, which did not mark whether it runs; remove it if no prepare into " + out + " runs\n"
	if code != 0 || errOut != want {
		t.Fatalf("the second prepare: exit %d, stderr\n%s\nwant exit 0, stderr\n%s", code, errOut, want)
	}
	if !strings.HasPrefix(stdout, "prepared 5 images of 1x8x8 into 1 shards in "+out+"\n") {
		t.Errorf("the second prepare's stdout:\n%s", stdout)
	}
	entries, _ := os.ReadDir(parent)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".prepared.tmp42", "prepared"}) {
		t.Errorf("%s holds %v, want only the older folder and prepared", parent, names)
	}
	entries, _ = os.ReadDir(out)
	names = names[:0]
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"index.json", "shard-00000.bin"}) {
		t.Errorf("%s holds %v, want index.json and shard-00000.bin", out, names)
	}
	raw, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	prep, err := Open(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(prep); err != nil {
		t.Fatal(err)
	}
	if prep.Len() != 5 || prep.Fingerprint() != raw.Fingerprint() {
		t.Fatalf("prepared: %d records, fingerprint %s; want 5, %s", prep.Len(), prep.Fingerprint(), raw.Fingerprint())
	}
}
