package checkpoint_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/safetensors"
)

// TestExportSameStateSameBytes: the same state written by two generations (a run interrupted
// and resumed, and the same run uninterrupted: the same STATE in ddpm checkpoint list, another
// SHA256) exports to byte-identical files, so `cmp` of exported weights says what the STATE
// column says; the metadata names the state hash. A state that differs in one EMA value
// exports to other bytes.
func TestExportSameStateSameBytes(t *testing.T) {
	const n = 6
	state := func(gen uint64, last float32) *checkpoint.Checkpoint {
		w := []float32{0.5, -1, 2, 0.25, 3, -0.75}
		ema := []float32{0.4, -0.9, 1.9, 0.3, 2.9, last}
		return &checkpoint.Checkpoint{Step: 20, Generation: gen, Preset: "tiny", ConfigHash: "cfg",
			Tensors: []checkpoint.TensorInfo{{Name: "a.weight", Shape: []int{2, 2}, Offset: 0, Len: 4}, {Name: "a.bias", Shape: []int{2}, Offset: 4, Len: 2}},
			Params:  w, EMA: ema, AdamM: make([]float32, n), AdamV: make([]float32, n), OptStep: 20, Cursor: 140}
	}
	dir := t.TempDir()
	export := func(name string, c *checkpoint.Checkpoint) (got *checkpoint.Checkpoint, file []byte, meta map[string]string) {
		t.Helper()
		st, err := checkpoint.Open(filepath.Join(dir, name+".db"), checkpoint.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Save(c); err != nil {
			t.Fatal(err)
		}
		if got, err = st.Get(c.Step); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".safetensors")
		if err := checkpoint.Export(path, got, true); err != nil {
			t.Fatal(err)
		}
		if file, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		if _, meta, err = safetensors.Read(path); err != nil {
			t.Fatal(err)
		}
		return got, file, meta
	}
	a, fa, ma := export("uninterrupted", state(1, -0.7))
	b, fb, _ := export("resumed", state(3, -0.7))
	if a.SHA256 == b.SHA256 || checkpoint.StateHash(a) != checkpoint.StateHash(b) {
		t.Fatalf("fixture: sha256 %.12s and %.12s, state %.12s and %.12s; want other sha256s, one state",
			a.SHA256, b.SHA256, checkpoint.StateHash(a), checkpoint.StateHash(b))
	}
	if !bytes.Equal(fa, fb) {
		i := 0
		for i < min(len(fa), len(fb)) && fa[i] == fb[i] {
			i++
		}
		t.Errorf("the same state exported from generations 1 and 3 differs from byte %d (%q vs %q)", i+1, clip(fa[i:]), clip(fb[i:]))
	}
	if want := checkpoint.StateHash(a); ma["state"] != want {
		t.Errorf("metadata state %q, want the state hash %s (metadata %v)", ma["state"], want, ma)
	}
	if _, ok := ma["sha256"]; ok {
		t.Errorf("metadata holds the generation's sha256 %q", ma["sha256"])
	}
	_, fc, _ := export("other", state(1, -0.6))
	if bytes.Equal(fa, fc) {
		t.Error("a state with another EMA value exported to the same bytes")
	}
}

func clip(b []byte) string { return fmt.Sprintf("%.16s", b) }
