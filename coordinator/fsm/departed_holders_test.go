package fsm

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestDepartedHoldersBounded: trainers that come and go under new ids, each holding the newest
// checkpoint (a crash loop on hosts with fresh names while no later checkpoint commits), no
// longer grow its holder list for ever: past MaxDepartedHolders departed ones, the first in id
// order go as a holder is added, the members stay, and a dropped one that rejoins with the
// checkpoint is listed again. The list used to keep every id that ever held it.
func TestDepartedHoldersBounded(t *testing.T) {
	run := mnistRun(t)
	run.MaxTrainers = 1
	s := New()
	sha := strings.Repeat("5e", 32)
	ok := func(c Command) {
		t.Helper()
		if r := Apply(s, c); r.Err() != nil {
			t.Fatalf("%s: %v", c.Kind, r.Err())
		}
	}
	ok(Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	ok(Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "a:1"}})
	ok(Command{Kind: KindCheckpoint, Time: 3, Checkpoint: &CheckpointReport{ID: "a", Generation: 1, Step: 50, SHA256: sha, Size: 9}})
	held := []Held{{Step: 50, SHA256: sha}}
	for i := range 100 {
		id := fmt.Sprintf("t-%03d", i)
		ok(Command{Kind: KindJoin, Time: int64(10 + 2*i), Join: &Join{ID: id, Address: id + ":1", ConfigHash: s.ConfigHash, Held: held}})
		ok(Command{Kind: KindLeave, Time: int64(11 + 2*i), Leave: &Leave{ID: id}})
	}
	want := []string{"a"}
	for i := 83; i < 100; i++ {
		want = append(want, fmt.Sprintf("t-%03d", i))
	}
	if got := s.Checkpoints[0].Holders; !slices.Equal(got, want) {
		t.Fatalf("holders %v, want %v", got, want)
	}
	ok(Command{Kind: KindJoin, Time: 300, Join: &Join{ID: "t-000", Address: "t-000:1", ConfigHash: s.ConfigHash, Held: held}})
	want = append([]string{"a", "t-000"}, want[2:]...)
	if got := s.Checkpoints[0].Holders; !slices.Equal(got, want) {
		t.Fatalf("holders after t-000 rejoined %v, want %v", got, want)
	}
}
