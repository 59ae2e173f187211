package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// names lists dir's entries: the temporary file of a failed Write must not be among them.
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// withUmask runs the test under umask 022 (the modes below are checked against it).
func withUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
}

// TestWriteReplaceMode: Replace swaps an existing file (mode 0600) for the new content with the
// mode asked for less the umask (0666 -> 0644, 0640 stays), and leaves no other file behind.
func TestWriteReplaceMode(t *testing.T) {
	withUmask(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "loss.png")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		perm, want fs.FileMode
		data       string
	}{{0o666, 0o644, "new"}, {0o640, 0o640, "newer"}} {
		if err := WriteBytes(p, tc.perm, Replace, []byte(tc.data)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != tc.data {
			t.Fatalf("content %q, %v; want %q", b, err, tc.data)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != tc.want {
			t.Errorf("perm %#o: mode %#o, want %#o", tc.perm, st.Mode().Perm(), tc.want)
		}
		if got := names(t, dir); !slices.Equal(got, []string{"loss.png"}) {
			t.Errorf("folder holds %v, want [loss.png]", got)
		}
	}
}

// TestWriteNoReplace: NoReplace creates a missing file (mode 0600 kept by umask 022) and refuses
// an existing one with exactly the words of an exclusive create, leaving it as it was and no
// temporary file; a dangling symbolic link is an existing name too.
func TestWriteNoReplace(t *testing.T) {
	withUmask(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "ca.key")
	if err := WriteBytes(p, 0o600, NoReplace, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new file: %v, %v; want mode 0600", st, err)
	}
	err := WriteBytes(p, 0o600, NoReplace, []byte("second"))
	if want := "open " + p + ": file exists"; err == nil || err.Error() != want || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want %q (fs.ErrExist)", err, want)
	}
	if b, _ := os.ReadFile(p); string(b) != "first" {
		t.Fatalf("content %q after the refused write, want first", b)
	}
	link := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), link); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(link, 0o600, NoReplace, []byte("x")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("write onto a dangling link: %v, want fs.ErrExist", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"ca.key", "dangling"}) {
		t.Errorf("folder holds %v, want [ca.key dangling]", got)
	}
}

// TestWriteFailuresLeaveNoTemp: each way a write fails after the temporary file exists (the
// rename onto a directory, the link onto a name another writer took meanwhile, an error of fill,
// a panic in fill) returns its
// error naming the target, never the temporary file, and removes that file; the target is as it
// was. A missing directory fails before anything is made.
func TestWriteFailuresLeaveNoTemp(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "samples.png")
	if err := os.MkdirAll(filepath.Join(sub, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(keep, []byte("step,loss\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{"loss.csv", "samples.png"}
	check := func(what string, err error, wantErr string) {
		t.Helper()
		if err == nil || err.Error() != wantErr {
			t.Errorf("%s: %v, want %q", what, err, wantErr)
		}
		if got := names(t, dir); !slices.Equal(got, want) {
			t.Errorf("%s: folder holds %v, want %v", what, got, want)
		}
		if b, _ := os.ReadFile(keep); string(b) != "step,loss\n" {
			t.Errorf("%s: loss.csv holds %q", what, b)
		}
	}
	check("rename onto a directory", WriteBytes(sub, 0o644, Replace, []byte("png")), "rename "+sub+": file exists")
	// Another writer takes the name while this one writes: the link, not the first look, refuses.
	other := filepath.Join(dir, "ca.crt")
	check("link onto a name taken meanwhile", Write(other, 0o600, NoReplace, func(w io.Writer) error {
		want = []string{"ca.crt", "loss.csv", "samples.png"}
		if err := os.WriteFile(other, []byte("theirs"), 0o600); err != nil {
			return err
		}
		_, err := w.Write([]byte("mine"))
		return err
	}), "open "+other+": file exists")
	if b, _ := os.ReadFile(other); string(b) != "theirs" {
		t.Errorf("ca.crt holds %q, want the other writer's", b)
	}
	boom := errors.New("encoder gave up")
	check("fill's error", Write(keep, 0o644, Replace, func(w io.Writer) error {
		w.Write([]byte("half a row"))
		return boom
	}), "encoder gave up")
	func() {
		defer func() {
			if r := recover(); r != "fill panicked" {
				t.Errorf("recovered %v", r)
			}
		}()
		Write(keep, 0o644, Replace, func(w io.Writer) error {
			w.Write([]byte("half"))
			panic("fill panicked")
		})
	}()
	check("fill's panic", errors.New("-"), "-")
	missing := filepath.Join(dir, "gone", "x.png")
	check("missing directory", WriteBytes(missing, 0o644, Replace, nil), "open "+missing+": no such file or directory")
}

// TestWriteFileTooLarge: under a file size limit (RLIMIT_FSIZE 4 KiB, as a full disk) the
// write of 64 KiB fails with "write PATH: file too large" (the target's name, not the
// temporary file's) and the temporary file is gone. Runs in a child process of this test binary,
// whose limit this one does not share.
func TestWriteFileTooLarge(t *testing.T) {
	if dir := os.Getenv("ATOMICFILE_TEST_FSIZE_DIR"); dir != "" {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 4096, Max: 4096}); err != nil {
			t.Fatal(err)
		}
		err := WriteBytes(filepath.Join(dir, "weights.bin"), 0o644, Replace, bytes.Repeat([]byte{1}, 64<<10))
		fmt.Printf("ERR: %v\n", err)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteFileTooLarge$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ATOMICFILE_TEST_FSIZE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := "ERR: write " + filepath.Join(dir, "weights.bin") + ": file too large"
	if !slices.Contains(strings.Split(string(out), "\n"), want) {
		t.Fatalf("child's output:\n%s\nwant the line %q", out, want)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("folder holds %v after the failed write, want nothing", got)
	}
}

// TestWriteNoReplaceWithoutHardLinks: on a file system that makes no hard links (link(2)
// answering EPERM, as vfat does) NoReplace still writes the file, mode 0600, with no temporary
// file left, and still refuses an existing one with "open PATH: file exists", keeping it. It
// used to fail every such write with the link error ("certs init" on a USB stick).
func TestWriteNoReplaceWithoutHardLinks(t *testing.T) {
	withUmask(t)
	link = func(old, new string) error { return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EPERM} }
	t.Cleanup(func() { link = os.Link })
	dir := t.TempDir()
	p := filepath.Join(dir, "ca.key")
	if err := WriteBytes(p, 0o600, NoReplace, []byte("key")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if b, _ := os.ReadFile(p); err != nil || string(b) != "key" || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %q, %v, %v; want \"key\" with mode 0600", b, st, err)
	}
	q := filepath.Join(dir, "ca.crt")
	err = Write(q, 0o600, NoReplace, func(w io.Writer) error {
		if err := os.WriteFile(q, []byte("theirs"), 0o600); err != nil { // another writer, meanwhile
			return err
		}
		_, err := w.Write([]byte("mine"))
		return err
	})
	if want := "open " + q + ": file exists"; err == nil || err.Error() != want {
		t.Fatalf("write onto a name taken meanwhile: %v, want %q", err, want)
	}
	if b, _ := os.ReadFile(q); string(b) != "theirs" {
		t.Errorf("ca.crt holds %q, want the other writer's", b)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"ca.crt", "ca.key"}) {
		t.Errorf("folder holds %v, want [ca.crt ca.key]", got)
	}
}
