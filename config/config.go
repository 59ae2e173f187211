// Package config holds the run config: the one description of a training run that the
// coordinator replicates (and hashes) and every trainer checks itself against.
//
// A run config comes from a preset (the paper's hyperparameters per dataset, Ho et al. 2020,
// Appendix B), a YAML file (strict: unknown fields are errors) and command-line flags, in that
// order of precedence from weakest to strongest. All of them land in one struct, Run, with one
// Validate. Two processes agree on a run exactly when their Hash values are equal.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"ddpm/internal/sniff"
	"sigs.k8s.io/yaml"
)

// Errors returned by this package; callers test them with errors.Is.
var (
	// ErrInvalid marks a run config that breaks a rule; the error text names the field and value.
	ErrInvalid = errors.New("invalid run config")
	// ErrUnknownPreset is returned by Preset for a name that is not in Presets().
	ErrUnknownPreset = errors.New("unknown preset")
	// ErrLoad wraps failures to read or parse a run config file.
	ErrLoad = errors.New("cannot load run config")
	// ErrNoRunConfig: Flags.Resolve was given neither --config nor --preset.
	ErrNoRunConfig = errors.New("no run config")
)

// Models lists the U-Net preset names the unet package provides (unet/ owns their shapes).
var Models = []string{"cifar10", "lsun256", "celebahq256", "small", "tiny"}

// BetaSchedules lists the beta schedule names of the original code's get_beta_schedule
// (diffusion_utils_2.py); the paper trains with "linear" from 1e-4 to 0.02 over T = 1000.
var BetaSchedules = []string{"linear", "quad", "warmup10", "warmup50", "const", "jsd"}

// Duration is a time.Duration that reads and writes as a Go duration string ("5s", "1m30s") in
// YAML and JSON; a bare number is read as seconds.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration must be a string such as \"5s\", got %s", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

// Run is one training run's configuration. The JSON/YAML names are the snake_case field names.
// Units: steps count optimizer updates; GlobalBatch counts images per step across all trainers.
type Run struct {
	// Preset names the dataset preset this config started from (see Presets); "" for a fully
	// hand-written config.
	Preset string `json:"preset"`
	// Model names the U-Net preset (one of Models).
	Model string `json:"model"`
	// Dataset is the dataset spec the dataset package opens: "mnist" (embedded), a directory or
	// file path of a supported format.
	Dataset string `json:"dataset"`
	// DatasetFingerprint is the sha256 fingerprint of the dataset's content (ddpm dataset
	// inspect); "" means "not pinned". Trainers refuse data whose fingerprint differs.
	DatasetFingerprint string `json:"dataset_fingerprint,omitempty"`
	// Seed keys every random stream of the run (internal/rng).
	Seed uint64 `json:"seed"`
	// Steps is the total number of optimizer steps of the run.
	Steps int64 `json:"steps"`
	// GlobalBatch is the number of images per step summed over all ranks.
	GlobalBatch int `json:"global_batch"`
	// LR is Adam's peak learning rate, reached after WarmupSteps of linear warmup.
	LR float64 `json:"lr"`
	// WarmupSteps is the length of the linear learning-rate warmup; 0 disables it.
	WarmupSteps int64 `json:"warmup_steps"`
	// GradClip is the global gradient-norm bound; 0 disables clipping.
	GradClip float64 `json:"grad_clip"`
	// EMADecay is the decay of the parameter exponential moving average, in [0, 1).
	EMADecay float64 `json:"ema_decay"`
	// Dropout is the U-Net dropout probability, in [0, 1).
	Dropout float64 `json:"dropout"`
	// Flip enables random horizontal flips of training images.
	Flip bool `json:"flip"`
	// T is the number of diffusion steps.
	T int `json:"t"`
	// BetaSchedule names the beta schedule (one of BetaSchedules).
	BetaSchedule string `json:"beta_schedule"`
	// BetaStart and BetaEnd bound the beta schedule: 0 < BetaStart <= BetaEnd < 1.
	BetaStart float64 `json:"beta_start"`
	BetaEnd   float64 `json:"beta_end"`
	// CheckpointEvery is the coordinated checkpoint interval in steps.
	CheckpointEvery int64 `json:"checkpoint_every"`
	// KeepCheckpoints is how many committed checkpoints retention keeps (>= 1).
	KeepCheckpoints int `json:"keep_checkpoints"`
	// MinTrainers is the smallest world size a generation may start with; MaxTrainers the
	// largest (trainers beyond it wait as standbys).
	MinTrainers int `json:"min_trainers"`
	MaxTrainers int `json:"max_trainers"`
	// HeartbeatTimeout is how long the coordinator waits without a heartbeat before it removes
	// a trainer and commits a new generation.
	HeartbeatTimeout Duration `json:"heartbeat_timeout"`
}

// paper returns the fields the paper's presets share (Ho et al. 2020, section 4 and Appendix B):
// T = 1000, linear betas from 1e-4 to 0.02, Adam with clipping at 1.0, EMA 0.9999, warmup 5000.
func paper() Run {
	return Run{
		Seed:             0,
		WarmupSteps:      5000,
		GradClip:         1.0,
		EMADecay:         0.9999,
		T:                1000,
		BetaSchedule:     "linear",
		BetaStart:        1e-4,
		BetaEnd:          0.02,
		CheckpointEvery:  5000,
		KeepCheckpoints:  3,
		MinTrainers:      1,
		MaxTrainers:      8,
		HeartbeatTimeout: Duration(5 * time.Second),
	}
}

// presets builds each named preset; a fresh value on every call, so callers may modify it.
var presets = map[string]func() Run{
	"cifar10": func() Run {
		r := paper()
		r.Preset, r.Model = "cifar10", "cifar10"
		r.Steps, r.GlobalBatch, r.LR, r.Dropout, r.Flip = 800_000, 128, 2e-4, 0.1, true
		return r
	},
	"celebahq":    func() Run { return lsunLike("celebahq", "celebahq256", 500_000) },
	"lsun-church": func() Run { return lsunLike("lsun-church", "lsun256", 1_200_000) },
	"lsun-bedroom": func() Run {
		// The paper used flips for every dataset except LSUN Bedroom (Appendix B).
		r := lsunLike("lsun-bedroom", "lsun256", 2_400_000)
		r.Flip = false
		return r
	},
	"lsun-cat": func() Run { return lsunLike("lsun-cat", "lsun256", 1_800_000) },
	"mnist": func() Run {
		r := small("mnist")
		r.Dataset = "mnist"
		return r
	},
	"fashion-mnist": func() Run {
		r := small("fashion-mnist")
		// The built-in spec, not Debian's folder: dataset.Open reads the idx files wherever
		// DDPM_FASHION_MNIST_DIR or dataset-fashion-mnist put them, with both splits.
		r.Dataset = "fashion-mnist"
		return r
	},
}

// lsunLike is the 256x256 presets: lr 2e-5, batch 64, no dropout, random flips (Appendix B);
// steps are the paper's reported training lengths.
func lsunLike(name, model string, steps int64) Run {
	r := paper()
	r.Preset, r.Model = name, model
	r.Steps, r.GlobalBatch, r.LR, r.Dropout, r.Flip = steps, 64, 2e-5, 0, true
	return r
}

// small is the preset family sized for a 2-core machine: the "tiny" U-Net, short warmup, a
// faster EMA, frequent checkpoints. MNIST digits are not mirror-symmetric, so no flips.
func small(name string) Run {
	r := paper()
	r.Preset, r.Model = name, "tiny"
	r.Steps, r.GlobalBatch, r.LR, r.Dropout, r.Flip = 2000, 32, 2e-4, 0, false
	r.WarmupSteps, r.EMADecay, r.CheckpointEvery, r.KeepCheckpoints = 200, 0.999, 50, 3
	r.MaxTrainers = 4
	return r
}

// Presets returns the preset names in sorted order.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the named preset's config. Dataset is empty (the user must name one) except
// for mnist and fashion-mnist, whose datasets are the built-in specs "mnist" and "fashion-mnist"
// (the GoMNIST module's idx files and Debian's dataset-fashion-mnist; see dataset.Open).
// It returns ErrUnknownPreset for a name not in Presets().
func Preset(name string) (Run, error) {
	mk, ok := presets[name]
	if !ok {
		return Run{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownPreset, name, strings.Join(Presets(), ", "))
	}
	return mk(), nil
}

// Bounds that Validate enforces beyond positivity: values past them are typing mistakes that
// would otherwise start a run doomed from its first step (T = 1e8 asks for 8 GB of schedule
// tables; an Adam step size above 1 diverges; a heartbeat timeout of milliseconds removes
// healthy trainers whenever a step or a checkpoint takes longer).
const (
	MaxT                = 100_000
	MaxLR               = 1.0
	MinHeartbeatTimeout = 100 * time.Millisecond
)

// isSHA256Hex reports whether s is 64 lowercase hex digits, as dataset fingerprints are.
func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Validate checks every rule and returns nil or an error that wraps ErrInvalid with one line per
// problem, each naming the YAML field and the offending value.
func (r *Run) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	// badField is a rule about one field: its line starts with the field's YAML name, which
	// Flags.Resolve replaces with the flag when a flag set the field.
	badField := func(field, format string, args ...any) {
		errs = append(errs, &fieldError{field: field, rest: fmt.Sprintf(format, args...)})
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if r.Preset != "" {
		if _, ok := presets[r.Preset]; !ok {
			badField("preset", " %q is unknown (known: %s)", r.Preset, strings.Join(Presets(), ", "))
		}
	}
	if f := r.DatasetFingerprint; f != "" && !isSHA256Hex(f) {
		badField("dataset_fingerprint", " %q is not a whole sha256: give the 64 hex digits `ddpm dataset inspect` prints (with or without its sha256: prefix)", f)
	}
	if !slices.Contains(Models, r.Model) {
		badField("model", " %q is unknown (known: %s)", r.Model, strings.Join(Models, ", "))
	}
	if strings.TrimSpace(r.Dataset) == "" {
		badField("dataset", " is missing")
	}
	if r.Steps <= 0 {
		badField("steps", " must be positive, got %d", r.Steps)
	}
	if r.GlobalBatch <= 0 {
		badField("global_batch", " must be positive, got %d", r.GlobalBatch)
	}
	if !(r.LR > 0 && r.LR <= MaxLR) {
		badField("lr", " must be in (0, %g], got %g", MaxLR, r.LR)
	}
	if r.WarmupSteps < 0 {
		badField("warmup_steps", " must not be negative, got %d", r.WarmupSteps)
	}
	if !(r.GradClip >= 0) || !finite(r.GradClip) {
		badField("grad_clip", " must be >= 0 (0 disables clipping), got %g", r.GradClip)
	}
	if !(r.EMADecay >= 0 && r.EMADecay < 1) {
		badField("ema_decay", " must be in [0, 1), got %g", r.EMADecay)
	}
	if !(r.Dropout >= 0 && r.Dropout < 1) {
		badField("dropout", " must be in [0, 1), got %g", r.Dropout)
	}
	if r.T < 2 || r.T > MaxT { // a schedule needs T >= 2 (diffusion.ScheduleConfig.Validate)
		badField("t", " (diffusion steps) must be in 2..%d, got %d", MaxT, r.T)
	}
	if !slices.Contains(BetaSchedules, r.BetaSchedule) {
		badField("beta_schedule", " %q is unknown (known: %s)", r.BetaSchedule, strings.Join(BetaSchedules, ", "))
	}
	if !(r.BetaStart > 0 && r.BetaStart <= r.BetaEnd && r.BetaEnd < 1) {
		bad("betas must satisfy 0 < beta_start <= beta_end < 1, got beta_start %g, beta_end %g", r.BetaStart, r.BetaEnd)
	}
	if r.CheckpointEvery <= 0 {
		badField("checkpoint_every", " must be positive, got %d", r.CheckpointEvery)
	} else if r.Steps > 0 && r.CheckpointEvery > r.Steps {
		bad("checkpoint_every %d is larger than the run (steps %d): give checkpoint_every %d or less, or more steps", r.CheckpointEvery, r.Steps, r.Steps)
	}
	if r.KeepCheckpoints < 1 {
		badField("keep_checkpoints", " must be at least 1, got %d", r.KeepCheckpoints)
	}
	if r.MinTrainers < 1 {
		badField("min_trainers", " must be at least 1, got %d", r.MinTrainers)
	}
	if r.MaxTrainers < r.MinTrainers {
		bad("min_trainers %d is larger than max_trainers %d", r.MinTrainers, r.MaxTrainers)
	}
	if r.GlobalBatch > 0 && r.MaxTrainers > r.GlobalBatch {
		bad("max_trainers %d is larger than global_batch %d (a rank would get no samples)", r.MaxTrainers, r.GlobalBatch)
	}
	if r.HeartbeatTimeout.Std() < MinHeartbeatTimeout {
		badField("heartbeat_timeout", " must be at least %s, got %s", MinHeartbeatTimeout, r.HeartbeatTimeout)
	}
	return errors.Join(errs...)
}

// Canonical returns the canonical encoding of r that Hash digests: compact JSON with the fields
// in declaration order and floats in Go's shortest round-trip form.
func (r *Run) Canonical() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic("config: cannot encode run config: " + err.Error())
	}
	return b
}

// Hash returns the lowercase hex sha256 of r's canonical encoding. Two configs hash equal
// exactly when every field is equal.
func (r *Run) Hash() string {
	sum := sha256.Sum256(r.Canonical())
	return hex.EncodeToString(sum[:])
}

// Parse reads a run config from YAML (or JSON) bytes. If the document names a preset, the
// preset's values are the defaults and the document overrides them field by field. Unknown
// fields (a key must be a field's name exactly, in lowercase: `Steps:` is refused naming
// steps), duplicate fields, wrongly typed values and a second YAML document (after "---") are
// errors. Parse does not Validate.
func Parse(data []byte) (Run, error) { return parse(data, "") }

// parse is Parse with the preset that supplies the defaults chosen by the caller: preset when
// it is not "", else the document's preset: field.
func parse(data []byte, preset string) (Run, error) {
	var probe struct {
		Preset string `json:"preset"`
	}
	// The probe ignores other fields; strictness comes from the second pass.
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return Run{}, fmt.Errorf("%w: %s", ErrLoad, yamlMessage(err))
	}
	if n, end := secondDocument(data); end > 0 {
		return Run{}, fmt.Errorf("%w: line %d: a second YAML document starts here (after the end marker ... on line %d); a run config is one document", ErrLoad, n, end)
	} else if n > 0 {
		return Run{}, fmt.Errorf("%w: line %d: a second YAML document starts here (---); a run config is one document", ErrLoad, n)
	}
	if key := inexactKey(data); key != "" {
		return Run{}, fmt.Errorf("%w: %s", ErrLoad, unknownFieldHint(fmt.Sprintf("unknown field %q", key), data))
	}
	if preset == "" {
		preset = probe.Preset
	}
	var r Run
	if preset != "" {
		p, err := Preset(preset)
		if err != nil {
			return Run{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		r = p
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return r, nil
	}
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return Run{}, fmt.Errorf("%w: %s", ErrLoad, unknownFieldHint(yamlMessage(err), data))
	}
	r.normalize()
	return r, nil
}

// normalize writes fields given in an accepted alternative spelling in their one canonical form,
// so that the config hash does not depend on the spelling: a dataset fingerprint as `ddpm dataset
// inspect` prints it ("sha256:" and the hex digits) is stored as the hex digits. A value that is
// not a whole sha256 either way stays as written, so that Validate quotes what the user typed.
func (r *Run) normalize() {
	if digits, ok := strings.CutPrefix(r.DatasetFingerprint, "sha256:"); ok && isSHA256Hex(digits) {
		r.DatasetFingerprint = digits
	}
}

// secondDocument returns n, the 1-based line of a "---" document marker that follows content in
// data, 0 if there is none. The YAML decoder reads the first document only and would drop the
// rest silently; a "---" before any content (an explicit start of the one document) is fine.
// A marker is "---" at the start of a line followed by the line's end or a space (YAML 1.2,
// c-directives-end): it cannot occur inside a value, which Parse then refuses. So is content
// after a document end marker "..." (c-document-end), which may start a bare second document
// without "---": end is then the marker's line (0 otherwise).
func secondDocument(data []byte) (n, end int) {
	content := false
	marker := 0 // line of a --- after content: a second document once content follows it
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if rest, ok := strings.CutPrefix(line, "..."); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			if content && end == 0 && marker == 0 {
				end = i + 1
			}
			continue
		}
		if rest, ok := strings.CutPrefix(line, "---"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			onLine := strings.TrimSpace(rest) != "" && !strings.HasPrefix(strings.TrimSpace(rest), "#")
			switch {
			case content && onLine:
				return i + 1, 0
			case content:
				if marker == 0 {
					marker = i + 1
				}
			case onLine:
				content = true // "--- steps: 5" starts the document with content on the marker line
			}
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") && !strings.HasPrefix(line, "%") {
			if marker > 0 {
				return marker, 0
			}
			if end > 0 {
				return i + 1, end
			}
			content = true
		}
	}
	return 0, 0
}

var (
	// What encoding/json says of a value of the wrong type, under sigs.k8s.io/yaml's prefixes.
	reFieldType = regexp.MustCompile(`json: cannot unmarshal (\w+)(?: (\S+))? into Go struct field \w+\.(\S+) of type (\S+)`)
	reDocType   = regexp.MustCompile(`json: cannot unmarshal (\w+) into Go value of type`)
	// The kinds of value a Run field takes, in the YAML user's words.
	goTypeWords = map[string]string{"int": "an integer", "int64": "an integer", "uint64": "a non-negative integer",
		"float64": "a number", "string": "a string", "bool": "true or false"}
)

// yamlMessage rewords a YAML/JSON decoding error for the user: the field and what it wants
// instead of Go type names, and without the decoder's nested prefixes.
func yamlMessage(err error) string {
	msg := err.Error()
	if m := reFieldType.FindStringSubmatch(msg); m != nil {
		got := m[1]
		if m[2] != "" {
			got += " " + m[2]
		}
		want, ok := goTypeWords[m[4]]
		if !ok {
			want = "a " + m[4]
		}
		if m[1] == "number" && strings.HasPrefix(m[4], "int") {
			want += " in range"
		}
		return fmt.Sprintf("field %s: got %s, want %s", m[3], got, want)
	}
	if m := reDocType.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("the document is %s %s, want a mapping of field: value lines", article(m[1]), m[1])
	}
	for _, prefix := range []string{"error unmarshaling JSON: while decoding JSON: json: ", "error converting YAML to JSON: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

// inexactKey returns the first key of data's mapping (by the line it is written on) that is not
// exactly the name of a Run field, "" when every key is one (or data is no mapping, which the
// strict decoding reports). The YAML is decoded as JSON, and encoding/json matches a key to a
// field without regard to case, so without this check `Steps: 10` or `LR: 1` would set steps or
// lr while the file says another name than the fields ddpm writes and documents.
func inexactKey(data []byte) string {
	var doc map[string]json.RawMessage
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return ""
	}
	fields := fieldNames()
	var bad []string
	for k := range doc {
		if !slices.Contains(fields, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	// The earliest line wins; a key not found by the line scan (a JSON document on one line,
	// a flow mapping) comes after those that are, in name order.
	sort.Strings(bad)
	lines := strings.Split(string(data), "\n")
	at := func(key string) int {
		if n := keyLine(lines, key); n > 0 {
			return n
		}
		return len(lines) + 1
	}
	slices.SortStableFunc(bad, func(a, b string) int { return at(a) - at(b) })
	return bad[0]
}

// keyLine is the 1-based line of lines where key is written as a block mapping's key
// ("key:", quoted or not), 0 if none is.
func keyLine(lines []string, key string) int {
	for i, line := range lines {
		k, _, ok := strings.Cut(line, ":")
		if ok && strings.Trim(strings.TrimSpace(k), `"'`) == key {
			return i + 1
		}
	}
	return 0
}

// reUnknownField is yamlMessage's text for a key no Run field has.
var reUnknownField = regexp.MustCompile(`^unknown field "([^"]*)"$`)

// unknownFieldHint adds to msg, when it is the decoder's `unknown field "KEY"`, the line of data
// where KEY is written and the field meant: the one KEY spells with dashes or capitals
// (global-batch, the flag's spelling, for global_batch; Steps), else those Nearest finds
// (stpes for steps; heartbeat for heartbeat_timeout), else the list of fields. Any other msg is
// returned as it is.
func unknownFieldHint(msg string, data []byte) string {
	m := reUnknownField.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	key := m[1]
	where := ""
	if n := keyLine(strings.Split(string(data), "\n"), key); n > 0 {
		where = fmt.Sprintf("line %d: ", n)
	}
	fields := fieldNames()
	fold := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	if slices.Contains(fields, fold) && strings.Contains(key, "-") {
		return fmt.Sprintf("%s%s; did you mean %s? (a run config's fields are written with _, the flags with -)", where, msg, fold)
	}
	if near := Nearest(fold, fields); len(near) > 0 { // the field in other capitals (STEPS), or a letter or two off
		return fmt.Sprintf("%s%s; did you mean %s?", where, msg, strings.Join(near, " or "))
	}
	return fmt.Sprintf("%s%s (the fields: %s)", where, msg, strings.Join(fields, ", "))
}

// fieldNames returns the field names a run config file takes, in the order of Run.
func fieldNames() []string {
	t := reflect.TypeFor[Run]()
	var out []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// EditDistance is the Levenshtein distance between a and b, counted in runes: the fewest
// single-character insertions, deletions and substitutions that turn one into the other. The
// "did you mean" hints of ddpm rank by it (a config key, a flag, a built-in dataset's name).
func EditDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			sub := prev[j-1]
			if ra[i-1] != rb[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func article(word string) string {
	if strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// notYAML is the one line for a file that cannot be a YAML run config at all, nil for any
// other: another file of a run folder or trainer volume (otherFile), one that sets no field
// (emptyConfig; how is its advice), or binary data (no sniff.Text), named by what it looks like
// where its first bytes say (internal/sniff's bbolt checkpoint file, safetensors weights, image,
// as ddpm's other input checks tell them). Without it an empty file would be a list
// of every missing field and a binary one a YAML tokenizer complaint. The error is ErrLoad under
// errors.Is.
func notYAML(path string, data []byte, how string) error {
	if err := otherFile(path, data); err != nil {
		return err
	}
	head := data[:min(len(data), 4096)]
	if len(data) == 0 || sniff.Text(head, len(head) < len(data)) {
		return emptyConfig(path, data, how)
	}
	looks := "binary data"
	switch {
	case sniff.Checkpoint(head):
		looks = "a bbolt checkpoint file"
	case sniff.Safetensors(head):
		looks = "a safetensors weights file"
	case sniff.Image(head):
		looks = "an image"
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		looks = "a gzip file"
	}
	return loadError(fmt.Sprintf("%s: not a YAML run config (looks like %s)", path, looks))
}

// emptyConfig is the one line for a run config file that sets no field, nil for any other: 0
// bytes, only blank lines and comments, or an empty document (null, {}). A preset (--preset, or
// ddpm local's from --data) would silently fill every field, training a whole preset run the
// file never described. how says another way in ("" for none). The error is ErrLoad under
// errors.Is.
func emptyConfig(path string, data []byte, how string) error {
	if n, _ := secondDocument(data); n > 0 {
		return nil // Parse names the second document
	}
	var fields map[string]any
	if err := yaml.Unmarshal(data, &fields); err != nil || len(fields) > 0 {
		return nil
	}
	return loadError(fmt.Sprintf("%s is empty: a run config names at least its preset (preset: NAME; %s) and the fields it changes%s",
		path, strings.Join(Presets(), ", "), how))
}

// loadError is a run config file that cannot be read, in one line that starts with the path;
// it is ErrLoad under errors.Is.
type loadError string

func (e loadError) Error() string        { return string(e) }
func (e loadError) Is(target error) bool { return target == ErrLoad }

// Load reads, parses and validates the run config file at path. Every error names the path.
func Load(path string) (Run, error) {
	data, err := readFile(path)
	if err != nil {
		return Run{}, err
	}
	if err := notYAML(path, data, ""); err != nil {
		return Run{}, err
	}
	r, err := Parse(data)
	if err != nil {
		return Run{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := noPreset(path, r, ""); err != nil {
		return Run{}, err
	}
	if err := r.Validate(); err != nil {
		return Run{}, prefixLines(path, err)
	}
	return r, nil
}

// readFile reads the run config file at path; an error names the path once, at the start, as
// Load's other lines do ("run.yaml: cannot load run config: no such file"), not os's "open
// run.yaml: no such file or directory". It is ErrLoad under errors.Is.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return data, nil
	}
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w: no such file", path, ErrLoad)
	case errors.As(err, &pe) && errors.Is(pe.Err, syscall.EISDIR):
		// A run folder (ddpm local's) or trainer data dir: name the run config it holds.
		if yaml := filepath.Join(path, "run.yaml"); isRegular(yaml) {
			return nil, fmt.Errorf("%s: %w: a folder, not a file (give the run config in it, %s)", path, ErrLoad, yaml)
		}
		return nil, fmt.Errorf("%s: %w: a folder, not a file (give the run config's YAML file)", path, ErrLoad)
	case errors.As(err, &pe):
		return nil, fmt.Errorf("%s: %w: %v", path, ErrLoad, pe.Err)
	}
	return nil, fmt.Errorf("%s: %w: %v", path, ErrLoad, err)
}

// noPreset is the one line for a config file that names no preset and leaves the model out,
// nil for any other: such a file is a partial config with nothing to fill it, and Validate would
// list a dozen fields it left at zero. how says the other way in ("" for none). The error is
// ErrInvalid under errors.Is.
func noPreset(path string, r Run, how string) error {
	if r.Preset != "" || r.Model != "" {
		return nil
	}
	return fmt.Errorf("%s: %w: names no preset, so nothing fills the fields it leaves out; add `preset: NAME` (%s)%s, or write every field",
		path, ErrInvalid, strings.Join(Presets(), ", "), how)
}

// fieldError is one Validate line about one field, "invalid run config: " then the field's YAML
// name then rest (e.g. field "lr", rest " must be in (0, 1], got 5"); it is ErrInvalid under
// errors.Is.
type fieldError struct {
	field string // YAML name; the flag is the same with dashes (Flags)
	rest  string // the text after the field name
}

func (e *fieldError) Error() string        { return ErrInvalid.Error() + ": " + e.field + e.rest }
func (e *fieldError) Is(target error) bool { return target == ErrInvalid }

// prefixLines prefixes each line of a joined validation error with where, keeping errors.Is.
func prefixLines(where string, err error) error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		parts := joined.Unwrap()
		out := make([]error, len(parts))
		for i, e := range parts {
			out[i] = fmt.Errorf("%s: %w", where, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// Marshal returns r as YAML with the snake_case field names; Parse(Marshal(r)) == r.
func (r *Run) Marshal() []byte {
	b, err := yaml.Marshal(r)
	if err != nil {
		panic("config: cannot encode run config: " + err.Error())
	}
	return b
}
