package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestPaperPresets checks the presets against Ho et al. 2020, Appendix B.
func TestPaperPresets(t *testing.T) {
	cases := []struct {
		name, model string
		lr          float64
		batch       int
		dropout     float64
		flip        bool
		steps       int64
	}{
		{"cifar10", "cifar10", 2e-4, 128, 0.1, true, 800_000},
		{"celebahq", "celebahq256", 2e-5, 64, 0, true, 500_000},
		{"lsun-church", "lsun256", 2e-5, 64, 0, true, 1_200_000},
		{"lsun-bedroom", "lsun256", 2e-5, 64, 0, false, 2_400_000},
		{"lsun-cat", "lsun256", 2e-5, 64, 0, true, 1_800_000},
	}
	for _, c := range cases {
		r, err := Preset(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Preset != c.name || r.Model != c.model || r.LR != c.lr || r.GlobalBatch != c.batch ||
			r.Dropout != c.dropout || r.Flip != c.flip || r.Steps != c.steps {
			t.Errorf("%s: got %+v", c.name, r)
		}
		if r.EMADecay != 0.9999 || r.WarmupSteps != 5000 || r.GradClip != 1 || r.T != 1000 ||
			r.BetaSchedule != "linear" || r.BetaStart != 1e-4 || r.BetaEnd != 0.02 {
			t.Errorf("%s: shared paper values wrong: %+v", c.name, r)
		}
		// Paper presets need a dataset path from the user.
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "dataset is missing") {
			t.Errorf("%s without dataset: got %v", c.name, err)
		}
		r.Dataset = "/data/x"
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	for _, n := range []string{"mnist", "fashion-mnist"} {
		r, err := Preset(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", n, err)
		}
		if r.Model != "tiny" || r.GlobalBatch < 32 || r.GlobalBatch > 64 || r.CheckpointEvery != 50 {
			t.Errorf("%s: %+v", n, r)
		}
	}
	if _, err := Preset("imagenet"); !errors.Is(err, ErrUnknownPreset) {
		t.Errorf("unknown preset: %v", err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	r, _ := Preset("mnist")
	r.GlobalBatch = 0
	r.LR = -1
	r.Dataset = ""
	r.CheckpointEvery = r.Steps + 1
	r.MinTrainers, r.MaxTrainers = 3, 2
	r.Model = "resnet"
	err := r.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	want := []string{
		`invalid run config: model "resnet" is unknown (known: cifar10, lsun256, celebahq256, small, tiny)`,
		"invalid run config: dataset is missing",
		"invalid run config: global_batch must be positive, got 0",
		"invalid run config: lr must be in (0, 1], got -1",
		"invalid run config: checkpoint_every 2001 is larger than the run (steps 2000): give checkpoint_every 2000 or less, or more steps",
		"invalid run config: min_trainers 3 is larger than max_trainers 2",
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got lines:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestHashIsCanonical(t *testing.T) {
	a, _ := Preset("mnist")
	b, _ := Preset("mnist")
	if a.Hash() != b.Hash() || len(a.Hash()) != 64 {
		t.Fatalf("hash not stable: %s %s", a.Hash(), b.Hash())
	}
	b.Seed = 1
	if a.Hash() == b.Hash() {
		t.Fatal("different seeds hash equal")
	}
	// A YAML round trip preserves the hash.
	c, err := Parse(a.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash() != a.Hash() {
		t.Fatalf("round trip changed the config:\n%s\n%s", a.Canonical(), c.Canonical())
	}
}

func TestLoadStrictWithPresetDefaults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	r, err := Load(write("ok.yaml", "preset: mnist\nsteps: 300\nheartbeat_timeout: 2s\nseed: 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Steps != 300 || r.Seed != 7 || r.HeartbeatTimeout.Std() != 2*time.Second || r.GlobalBatch != 32 || r.Dataset != "mnist" {
		t.Errorf("overlay wrong: %+v", r)
	}
	p := write("typo.yaml", "preset: mnist\nglobal_bach: 64\n")
	if _, err := Load(p); !errors.Is(err, ErrLoad) || !strings.Contains(err.Error(), `unknown field "global_bach"`) || !strings.HasPrefix(err.Error(), p+": ") {
		t.Errorf("unknown field: %v", err)
	}
	p = write("bad.yaml", "preset: mnist\nglobal_batch: -4\nlr: 0\n")
	_, err = Load(p)
	want := p + ": invalid run config: global_batch must be positive, got -4\n" +
		p + ": invalid run config: lr must be in (0, 1], got 0"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, err := Load(write("preset.yaml", "preset: svhn\n")); !errors.Is(err, ErrUnknownPreset) {
		t.Errorf("unknown preset in file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "absent.yaml")); !errors.Is(err, ErrLoad) {
		t.Errorf("missing file: %v", err)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(p, []byte("preset: mnist\ndataset: \"\"\nsteps: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f := AddFlags(fs)
	if err := fs.Parse([]string{"--config", p, "--dataset", "data/mnist", "--lr", "1e-3", "--heartbeat-timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	r, err := f.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Dataset != "data/mnist" || r.LR != 1e-3 || r.Steps != 100 || r.HeartbeatTimeout.Std() != 3*time.Second || r.GlobalBatch != 32 {
		t.Errorf("got %+v", r)
	}
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	f = AddFlags(fs)
	_ = fs.Parse([]string{"--preset", "cifar10", "--global-batch", "0"})
	if _, err := f.Resolve(); err == nil || !strings.Contains(err.Error(), "preset cifar10: invalid run config: dataset is missing") {
		t.Errorf("got %v", err)
	}
	// Neither --config nor --preset: one line naming both, not every missing field.
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	f = AddFlags(fs)
	_ = fs.Parse([]string{"--steps", "10"})
	_, err = f.Resolve()
	if !errors.Is(err, ErrNoRunConfig) || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), "give --config FILE or --preset NAME") {
		t.Errorf("no --config or --preset: %q", err)
	}
}

// TestBoundsAndTypeMessages: values past the documented bounds are refused naming the bound,
// and a value of the wrong type is named by its field in YAML terms, not Go's.
func TestBoundsAndTypeMessages(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{"preset: mnist\nt: 100000000\n", "invalid run config: t (diffusion steps) must be in 2..100000, got 100000000"},
		{"preset: mnist\nt: 1\n", "invalid run config: t (diffusion steps) must be in 2..100000, got 1"},
		{"preset: mnist\nlr: 1e9\n", "invalid run config: lr must be in (0, 1], got 1e+09"},
		{"preset: mnist\nheartbeat_timeout: 1ms\n", "invalid run config: heartbeat_timeout must be at least 100ms, got 1ms"},
	} {
		r, err := Parse([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%q: %v", tc.doc, err)
		}
		if err := r.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("%q: got %v, want %q", tc.doc, err, tc.want)
		}
	}
	for _, tc := range []struct {
		doc, want string
	}{
		{"preset: mnist\nsteps: lots\n", "cannot load run config: field steps: got string, want an integer"},
		{"steps: 1.5\n", "cannot load run config: field steps: got number 1.5, want an integer in range"},
		{"lr: [1]\n", "cannot load run config: field lr: got array, want a number"},
		{"- a\n- b\n", "cannot load run config: the document is an array, want a mapping of field: value lines"},
		{"stepz: 1\n", `cannot load run config: line 1: unknown field "stepz"; did you mean steps?`},
	} {
		_, err := Parse([]byte(tc.doc))
		if !errors.Is(err, ErrLoad) || err.Error() != tc.want {
			t.Errorf("%q: got %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// TestMultiDocumentRefused: a "---" that starts a second YAML document is refused naming the
// file and the marker's line; the decoder read the first document only and dropped the second
// (steps: 5 below) silently. A "---" that opens the one document is accepted.
func TestMultiDocumentRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "two.yaml")
	if err := os.WriteFile(p, []byte("preset: mnist\nsteps: 100\n---\nsteps: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := p + ": cannot load run config: line 3: a second YAML document starts here (---); a run config is one document"
	if _, err := Load(p); !errors.Is(err, ErrLoad) || err == nil || err.Error() != want {
		t.Errorf("Load: %v\nwant %s", err, want)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f := AddFlags(fs)
	_ = fs.Parse([]string{"--config", p})
	if _, err := f.Resolve(); !errors.Is(err, ErrLoad) || err == nil || err.Error() != want {
		t.Errorf("Resolve: %v\nwant %s", err, want)
	}
	// A trailing --- (or ... then ---) with nothing but blanks and comments after it opens no
	// second document.
	for _, doc := range []string{"# run\n---\npreset: mnist\nsteps: 100\n", "--- # one\npreset: mnist\nsteps: 100\n",
		"preset: mnist\nsteps: 100\n---\n", "preset: mnist\nsteps: 100\n---\n# end\n\n", "preset: mnist\nsteps: 100\n...\n---\n"} {
		if r, err := Parse([]byte(doc)); err != nil || r.Steps != 100 {
			t.Errorf("%q: %v, steps %d", doc, err, r.Steps)
		}
	}
	if _, err := Parse([]byte("--- {preset: mnist}\n--- \nsteps: 5\n")); err == nil ||
		err.Error() != "cannot load run config: line 2: a second YAML document starts here (---); a run config is one document" {
		t.Errorf("marker line with content: %v", err)
	}
}

// TestConfigWithoutPresetComposes: a --config file that names no preset is filled by the preset
// --preset names (or, failing that, Flags.DefaultPreset, the preset ddpm local's --data names);
// the file's fields override it and flags override the file. With no preset anywhere the file is
// one line asking for one. The file's fields were laid over a zero Run instead, and Validate
// listed every field it left out (model "" is unknown, lr must be in (0, 1], ...).
func TestConfigWithoutPresetComposes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nopreset.yaml")
	if err := os.WriteFile(p, []byte("steps: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(dir, "fashion.yaml")
	if err := os.WriteFile(named, []byte("preset: fashion-mnist\nsteps: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolve := func(def string, args ...string) (Run, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f := AddFlags(fs)
		f.DefaultPreset = def
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.Resolve()
	}
	preset := func(name string) Run {
		r, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		r.Steps = 100
		return r
	}
	for _, tc := range []struct {
		def  string
		args []string
		want Run
	}{
		{"", []string{"--config", p, "--preset", "mnist"}, preset("mnist")},
		{"mnist", []string{"--config", p}, preset("mnist")},
		{"fashion-mnist", []string{"--config", p, "--preset", "mnist"}, preset("mnist")},
		{"mnist", []string{"--config", named}, preset("fashion-mnist")},
		{"", []string{"--config", named, "--preset", "mnist"}, preset("mnist")},
		{"/data/not-a-preset", []string{"--config", p, "--preset", "mnist", "--lr", "1e-3"},
			func() Run { r := preset("mnist"); r.LR = 1e-3; return r }()},
	} {
		got, err := resolve(tc.def, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("default %q, %v: %v\n got %+v\nwant %+v", tc.def, tc.args, err, got, tc.want)
		}
	}
	names := "celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist"
	want := p + ": invalid run config: names no preset, so nothing fills the fields it leaves out; add `preset: NAME` (" + names + ") or give --preset NAME, or write every field"
	for _, def := range []string{"", "/data/not-a-preset"} {
		if _, err := resolve(def, "--config", p); !errors.Is(err, ErrInvalid) || err.Error() != want {
			t.Errorf("default %q: %v\nwant %s", def, err, want)
		}
	}
	want = p + ": invalid run config: names no preset, so nothing fills the fields it leaves out; add `preset: NAME` (" + names + "), or write every field"
	if _, err := Load(p); !errors.Is(err, ErrInvalid) || err.Error() != want {
		t.Errorf("Load: %v\nwant %s", err, want)
	}
	// A hand-written config that sets every field needs no preset.
	full := preset("mnist")
	full.Preset = ""
	hand := filepath.Join(dir, "hand.yaml")
	if err := os.WriteFile(hand, full.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(hand); err != nil || got != full {
		t.Errorf("hand-written config: %v, %+v", err, got)
	}
}

// TestDocumentAfterEndMarkerRefused: a document end marker ("...") may be followed by a second,
// bare document (YAML 1.2: no "---" needed after "..."); the decoder reads the first only, so
// steps: 5 was silently dropped. It is refused like a second "---" document; a comment or blank
// lines after "..." are fine.
func TestDocumentAfterEndMarkerRefused(t *testing.T) {
	_, err := Parse([]byte("preset: mnist\nsteps: 100\n...\nsteps: 5\n"))
	if want := "cannot load run config: line 4: a second YAML document starts here (after the end marker ... on line 3); a run config is one document"; err == nil || !errors.Is(err, ErrLoad) || err.Error() != want {
		t.Errorf("bare document after ...: %v\nwant %s", err, want)
	}
	for _, doc := range []string{"preset: mnist\nsteps: 100\n...\n", "preset: mnist\nsteps: 100\n... # end\n\n# done\n"} {
		if r, err := Parse([]byte(doc)); err != nil || r.Steps != 100 {
			t.Errorf("%q: %v, steps %d", doc, err, r.Steps)
		}
	}
}

// TestDatasetFingerprintValidated: a pinned dataset fingerprint must be a whole sha256 (64 lowercase
// hex digits); a 12-digit prefix or the "sha256:" form inspect prints was accepted and every trainer
// then failed at start-up, the message cutting both to 12 digits so that they looked equal.
func TestDatasetFingerprintValidated(t *testing.T) {
	full := "aa835da1252d32c4aaf8e8acb8405335ef2760657636dc195bf9fa464df3bacc"
	for _, tc := range []struct{ fp, want string }{
		{"", ""},
		{full, ""},
		{"aa835da1252d", `invalid run config: dataset_fingerprint "aa835da1252d" is not a whole sha256: give the 64 hex digits ` + "`ddpm dataset inspect`" + ` prints (with or without its sha256: prefix)`},
		{strings.ToUpper(full), "invalid run config: dataset_fingerprint \"" + strings.ToUpper(full) + "\" is not a whole sha256: give the 64 hex digits `ddpm dataset inspect` prints (with or without its sha256: prefix)"},
	} {
		r, err := Preset("mnist")
		if err != nil {
			t.Fatal(err)
		}
		r.DatasetFingerprint = tc.fp
		err = r.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalid)) {
			t.Errorf("%q: %v, want %q", tc.fp, err, tc.want)
		}
	}
}

// TestDatasetFingerprintSha256Form: the fingerprint as ddpm dataset inspect prints it
// ("sha256:" and 64 hex digits) is accepted from a file and from --dataset-fingerprint, stored as
// the hex digits, so both spellings give one config hash; it was refused.
func TestDatasetFingerprintSha256Form(t *testing.T) {
	full := "aa835da1252d32c4aaf8e8acb8405335ef2760657636dc195bf9fa464df3bacc"
	plain, err := Parse([]byte("preset: mnist\ndataset_fingerprint: " + full + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	prefixed, err := Parse([]byte("preset: mnist\ndataset_fingerprint: sha256:" + full + "\n"))
	if err != nil || prefixed.DatasetFingerprint != full || prefixed.Hash() != plain.Hash() || prefixed.Validate() != nil {
		t.Fatalf("sha256: form from a file: %q %v", prefixed.DatasetFingerprint, err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f := AddFlags(fs)
	if err := fs.Parse([]string{"--preset", "mnist", "--dataset-fingerprint", "sha256:" + full}); err != nil {
		t.Fatal(err)
	}
	r, err := f.Resolve()
	if err != nil || r.DatasetFingerprint != full || r.Hash() != plain.Hash() {
		t.Fatalf("sha256: form from the flag: %q %v", r.DatasetFingerprint, err)
	}
}
