package chaos

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// elasticReport is the end of an elastic 100-step run as TestChaosElastic sees it when the run
// finishes without trainer-0: trainer-0 ended at committed step 76 and said so; trainer-1 and
// trainer-2 hold the committed step 100. The coordinators' state lists the newest three commits
// in full; the timeline gives the older ones' 12-digit prefixes.
func elasticReport() *Report {
	sha := func(c byte) string { return strings.Repeat(string(c), 64) }
	final := Digest{Step: 100, SHA256: sha('f'), Params: [32]byte{1}, EMA: [32]byte{2}, OptStep: 100, Cursor: 800}
	return &Report{
		Elastic:   true,
		Committed: []Commit{{72, sha('7')[:12]}, {76, sha('a')[:12]}, {92, sha('8')}, {96, sha('9')}, {100, sha('f')}},
		Final: []Digest{
			{Step: 76, SHA256: sha('a'), Params: [32]byte{3}, OptStep: 76, Cursor: 608},
			final,
			final,
		},
		Ends: []End{
			{Said: true, Step: 100, VolumeStep: 76, FinalOn: []string{"trainer-2", "trainer-1"},
				Note: "trainer trainer-0: the run finished at step 100 without this trainer; this volume holds step 76; the final checkpoint is on trainer-1, trainer-2"},
			{Said: true, Step: 100, VolumeStep: -1},
			{Said: true, Step: 100, VolumeStep: -1},
		},
	}
}

func TestConsistentElasticAccepts(t *testing.T) {
	behind, err := Consistent(elasticReport(), 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"trainer-0 ended at committed step 76 (sha256 aaaaaaaaaaaa) and said: trainer trainer-0: the run finished at step 100 without this trainer; this volume holds step 76; the final checkpoint is on trainer-1, trainer-2"}
	if !slices.Equal(behind, want) {
		t.Fatalf("behind %q, want %q", behind, want)
	}

	// Every trainer at the last step: nobody behind.
	r := elasticReport()
	r.Final[0], r.Ends[0] = r.Final[1], r.Ends[1]
	if behind, err := Consistent(r, 100); err != nil || len(behind) != 0 {
		t.Fatalf("all at step 100: behind %q, err %v", behind, err)
	}
}

// TestConsistentElasticRejects: each way an elastic run's volumes can be wrong, with the one
// error it gets.
func TestConsistentElasticRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *Report)
		want   string
	}{
		{"wrong hash at the last step", func(r *Report) { r.Final[2].SHA256 = strings.Repeat("e", 64) },
			"trainer-2 holds step 100 with sha256 eeeeeeeeeeee, the coordinators committed ffffffffffff"},
		{"same hash, other state at the last step", func(r *Report) { r.Final[2].AdamV[0] = 9 },
			"trainer-2 and an earlier trainer hold step 100 in different states"},
		{"older checkpoint never committed", func(r *Report) { r.Final[0].Step, r.Ends[0].VolumeStep = 78, 78 },
			"trainer-0 ends at step 78, which the coordinators never committed"},
		{"older checkpoint with other bytes than the committed one", func(r *Report) { r.Final[0].SHA256 = strings.Repeat("b", 64) },
			"trainer-0 holds step 76 with sha256 bbbbbbbbbbbb, the coordinators committed aaaaaaaaaaaa"},
		{"older checkpoint, the step committed twice, neither with its bytes", func(r *Report) {
			r.Committed = append(r.Committed[:2], append([]Commit{{76, "cccccccccccc"}}, r.Committed[2:]...)...)
			r.Final[0].SHA256 = strings.Repeat("b", 64)
		}, "trainer-0 holds step 76 with sha256 bbbbbbbbbbbb, the coordinators committed aaaaaaaaaaaa, cccccccccccc"},
		{"behind without saying so", func(r *Report) { r.Ends[0] = End{VolumeStep: -1} },
			"trainer-0 ends at step 76 of 100 but did not say that the run finished without it (its last run-complete line: {Said:false Step:0 VolumeStep:-1 FinalOn:[] Note:})"},
		{"behind, saying another volume step", func(r *Report) { r.Ends[0].VolumeStep = 72 },
			"trainer-0 ends at step 76 of 100 but did not say that the run finished without it (its last run-complete line: {Said:true Step:100 VolumeStep:72 FinalOn:[trainer-2 trainer-1] Note:trainer trainer-0: the run finished at step 100 without this trainer; this volume holds step 76; the final checkpoint is on trainer-1, trainer-2})"},
		{"behind, naming the wrong holders", func(r *Report) { r.Ends[0].FinalOn = []string{"trainer-1"} },
			"trainer-0 says the final checkpoint is on [trainer-1], the volumes at step 100 are [trainer-1 trainer-2]"},
		{"nobody at the last step", func(r *Report) {
			r.Final[1] = Digest{Step: 96, SHA256: strings.Repeat("9", 64)}
			r.Final[2] = r.Final[1]
			for i := 1; i < 3; i++ {
				r.Ends[i] = End{Said: true, Step: 100, VolumeStep: 96}
			}
			r.Ends[0].FinalOn = nil
		}, "no trainer volume holds the last step 100 (the coordinators committed it as ffffffffffff)"},
		{"the last step never committed", func(r *Report) { r.Committed = r.Committed[:4] },
			"the coordinators' newest committed checkpoint is step 96, want the last step 100"},
		{"a volume past the last step", func(r *Report) { r.Final[1].Step = 104 },
			"trainer-0 says the final checkpoint is on [trainer-1 trainer-2], the volumes at step 100 are [trainer-2]\n" +
				"chaos: final state differs: trainer-1 ends at step 104 of a 100-step run"},
		{"an unreadable volume", func(r *Report) { r.Final[1] = Digest{Step: -1}; r.Ends[0].FinalOn = []string{"trainer-2"} },
			"trainer-1's volume has no readable committed checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := elasticReport()
			tc.change(r)
			_, err := Consistent(r, 100)
			if !errors.Is(err, ErrDiffers) {
				t.Fatalf("err %v, want ErrDiffers", err)
			}
			if want := ErrDiffers.Error() + ": " + tc.want; err.Error() != want {
				t.Fatalf("err\n%s\nwant\n%s", err, want)
			}
		})
	}
}

// TestConsistentStrict: a run that is not elastic keeps the strict check: every trainer at the
// last step in the same state, the committed bytes.
func TestConsistentStrict(t *testing.T) {
	r := elasticReport()
	r.Elastic = false
	_, err := Consistent(r, 100)
	want := "chaos: final state differs: trainer-0 ends at step 76 aaaaaaaaaaaa, trainer-0 at step 76 aaaaaaaaaaaa (want step 100)\n" +
		"chaos: final state differs: trainer-1 ends at step 100 ffffffffffff, trainer-0 at step 76 aaaaaaaaaaaa (want step 100)\n" +
		"chaos: final state differs: trainer-2 ends at step 100 ffffffffffff, trainer-0 at step 76 aaaaaaaaaaaa (want step 100)\n" +
		"chaos: final state differs: the final checkpoint hashes to aaaaaaaaaaaa, the coordinators committed ffffffffffff"
	if !errors.Is(err, ErrDiffers) || err.Error() != want {
		t.Fatalf("err\n%v\nwant\n%s", err, want)
	}

	r.Final[0], r.Ends[0] = r.Final[1], r.Ends[1]
	if behind, err := Consistent(r, 100); err != nil || behind != nil {
		t.Fatalf("all at step 100: behind %q, err %v", behind, err)
	}
	r.Committed[4].SHA256 = strings.Repeat("e", 64)
	_, err = Consistent(r, 100)
	if want := "chaos: final state differs: the final checkpoint hashes to ffffffffffff, the coordinators committed eeeeeeeeeeee"; err == nil || err.Error() != want {
		t.Fatalf("err %v, want %s", err, want)
	}
}

// TestConsistentElasticRecommitted: a step committed twice (a later generation replayed it with
// other bytes) accepts a volume holding either commit.
func TestConsistentElasticRecommitted(t *testing.T) {
	r := elasticReport()
	r.Committed = append(r.Committed[:2], append([]Commit{{76, "cccccccccccc"}}, r.Committed[2:]...)...)
	for _, sha := range []string{strings.Repeat("a", 64), strings.Repeat("c", 64)} {
		r.Final[0].SHA256 = sha
		if _, err := Consistent(r, 100); err != nil {
			t.Fatalf("trainer-0 at step 76 %.12s: %v", sha, err)
		}
	}
}

// TestCommittedOf drives the coordinators' state machine through four commits with
// keep_checkpoints 2: the state keeps the newest two, the timeline has all; CommittedOf gives
// every commit in order, the retained ones in full.
func TestCommittedOf(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.KeepCheckpoints, run.MinTrainers, run.MaxTrainers = 40, 4, 2, 1, 1
	run.HeartbeatTimeout = config.Duration(2 * time.Second)
	s := fsm.New()
	now := int64(1_000_000_000_000)
	apply := func(c fsm.Command) {
		t.Helper()
		now += int64(100 * time.Millisecond)
		c.Time = now
		if r := fsm.Apply(s, c); r.Err() != nil {
			t.Fatalf("%s: %v", c.Kind, r.Err())
		}
	}
	sha := func(step int64, c byte) string { return fmt.Sprintf("%04d", step) + strings.Repeat(string(c), 60) }
	apply(fsm.Command{Kind: fsm.KindSubmit, Submit: &fsm.Submit{Run: run}})
	apply(fsm.Command{Kind: fsm.KindJoin, Join: &fsm.Join{ID: "a", Address: "10.0.0.1:1"}})
	for _, step := range []int64{4, 8, 12, 16} {
		apply(fsm.Command{Kind: fsm.KindCheckpoint, Checkpoint: &fsm.CheckpointReport{ID: "a", Generation: s.Generation.Number, Step: step, SHA256: sha(step, 'a'), Size: 16}})
	}
	if len(s.Checkpoints) != 2 {
		t.Fatalf("the state lists %d checkpoints, want keep_checkpoints 2", len(s.Checkpoints))
	}
	got := CommittedOf(s)
	want := []Commit{{4, sha(4, 'a')[:12]}, {8, sha(8, 'a')[:12]}, {12, sha(12, 'a')}, {16, sha(16, 'a')}}
	if !slices.Equal(got, want) {
		t.Fatalf("CommittedOf = %v, want %v", got, want)
	}
	// Events that fell off the timeline: the state's checkpoints still count.
	s.Events = nil
	if got, want := CommittedOf(s), want[2:]; !slices.Equal(got, want) {
		t.Fatalf("without a timeline CommittedOf = %v, want %v", got, want)
	}
}
