package trainer

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSaveFaultFailureLeavesNoTemp: a record that cannot be put in place (a directory where
// fault.json goes) fails naming fault.json and leaves nothing else in the volume; the failed
// rename used to leave fault.json.tmp behind, and its error named that file.
func TestSaveFaultFailureLeavesNoTemp(t *testing.T) {
	vol := t.TempDir()
	p := filepath.Join(vol, FaultFile)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	err := SaveFault(vol, Fault{Kind: FaultVolume, Err: "no space left on device", Record: -1})
	if want := "rename " + p + ": file exists"; err == nil || err.Error() != want {
		t.Fatalf("SaveFault: %v, want %q", err, want)
	}
	if es, _ := os.ReadDir(vol); len(es) != 1 {
		t.Fatalf("the volume holds %d entries, want fault.json alone", len(es))
	}
}
