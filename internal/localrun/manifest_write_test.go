package localrun

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteManifestFailureLeavesNoTemp: a manifest that cannot be put in place (a directory
// named local.json in OUT) fails naming OUT/local.json and leaves nothing else in OUT; the failed
// rename used to leave .local.json.tmp behind, and its error named that file.
func TestWriteManifestFailureLeavesNoTemp(t *testing.T) {
	out := t.TempDir()
	p := filepath.Join(out, ManifestFile)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteManifest(out, Manifest{ConfigHash: "x", Coordinators: 1, Trainers: 1})
	if want := "rename " + p + ": file exists"; err == nil || err.Error() != want {
		t.Fatalf("WriteManifest: %v, want %q", err, want)
	}
	if es, _ := os.ReadDir(out); len(es) != 1 {
		t.Fatalf("OUT holds %d entries, want local.json alone", len(es))
	}
}
