package fsm

import (
	"testing"

	"ddpm/config"
)

// TestTrainerWaitOneTrainer: the wait of a run of min_trainers 1 says "1 trainer" (it said "1
// trainers", which ddpm status and the dashboard showed), and of 2 "2 trainers".
func TestTrainerWaitOneTrainer(t *testing.T) {
	for _, tc := range []struct {
		min     int
		members []string
		want    string
	}{
		{1, nil, "for 1 trainer (min_trainers), none joined"},
		{2, nil, "for 2 trainers (min_trainers), none joined"},
		{2, []string{"t0"}, "for 2 trainers (min_trainers), 1 joined: t0"},
		{3, []string{"t1", "t0"}, "for 3 trainers (min_trainers), 2 joined: t0 t1"},
	} {
		s := New()
		run, err := config.Preset("mnist")
		if err != nil {
			t.Fatal(err)
		}
		run.MinTrainers = tc.min
		s.Run = &run
		for _, id := range tc.members {
			s.Members[id] = &Member{ID: id}
		}
		if got := s.TrainerWait(); got != tc.want {
			t.Errorf("min_trainers %d, members %v: %q, want %q", tc.min, tc.members, got, tc.want)
		}
	}
}
