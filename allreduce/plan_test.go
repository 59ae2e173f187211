package allreduce

import (
	"fmt"
	"testing"
)

// TestPlanInvariants checks, for world 1..8 and awkward lengths, the properties the ring relies
// on: segments tile [0, n) with lengths differing by at most one; at every step each segment is
// sent by exactly one rank and received by its successor; the segment a rank sends at step s+1
// is the one it received at step s; after reduce-scatter rank r owns segment r+1, and every
// rank receives every other segment exactly once during all-gather.
func TestPlanInvariants(t *testing.T) {
	for world := 1; world <= 8; world++ {
		for _, n := range []int{0, 1, 3, 5, 7, 8, 4097, 1<<20 + 3} {
			t.Run(fmt.Sprintf("world%d_n%d", world, n), func(t *testing.T) {
				scheds := make([]Schedule, world)
				for r := range world {
					scheds[r] = Plan(world, r, n)
				}
				s0 := scheds[0]
				off := 0
				for i, sg := range s0.Segments {
					if sg.Off != off || sg.Len < n/world || sg.Len > n/world+1 {
						t.Fatalf("segment %d = %+v, want offset %d and length %d or %d", i, sg, off, n/world, n/world+1)
					}
					off += sg.Len
				}
				if off != n {
					t.Fatalf("segments cover %d elements, want %d", off, n)
				}
				for r, s := range scheds {
					if len(s.Steps) != 2*(world-1) {
						t.Fatalf("rank %d has %d steps, want %d", r, len(s.Steps), 2*(world-1))
					}
					for st := range s.Steps {
						succ := scheds[s.Next()].Steps[st]
						if succ.Recv != s.Steps[st].Send {
							t.Fatalf("step %d: rank %d sends %d but rank %d receives %d", st, r, s.Steps[st].Send, s.Next(), succ.Recv)
						}
						if st > 0 && s.Steps[st].Send != s.Steps[st-1].Recv {
							t.Fatalf("step %d: rank %d sends %d, received %d at step %d", st, r, s.Steps[st].Send, s.Steps[st-1].Recv, st-1)
						}
						wantPhase := ReduceScatter
						if st >= world-1 {
							wantPhase = AllGather
						}
						if s.Steps[st].Phase != wantPhase {
							t.Fatalf("step %d of rank %d is %v", st, r, s.Steps[st].Phase)
						}
					}
					if world > 1 {
						owned := s.Steps[world-1].Send
						if owned != (r+1)%world {
							t.Fatalf("rank %d owns segment %d after reduce-scatter, want %d", r, owned, (r+1)%world)
						}
						seen := map[int]bool{owned: true}
						for _, st := range s.Steps[world-1:] {
							if seen[st.Recv] {
								t.Fatalf("rank %d receives segment %d twice in all-gather", r, st.Recv)
							}
							seen[st.Recv] = true
						}
						if len(seen) != world {
							t.Fatalf("rank %d ends with %d of %d segments", r, len(seen), world)
						}
					}
				}
			})
		}
	}
}

// TestPlanTable pins the schedule of world 3, rank 1, n 7 (segments 3, 2, 2).
func TestPlanTable(t *testing.T) {
	s := Plan(3, 1, 7)
	want := Schedule{World: 3, Rank: 1, N: 7,
		Segments: []Segment{{0, 3}, {3, 2}, {5, 2}},
		Steps: []Step{
			{ReduceScatter, 1, 0}, {ReduceScatter, 0, 2},
			{AllGather, 2, 1}, {AllGather, 1, 0},
		}}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Fatalf("Plan(3, 1, 7) = %+v\nwant %+v", s, want)
	}
}

func TestPlanPanics(t *testing.T) {
	for _, c := range [][3]int{{0, 0, 1}, {2, 2, 1}, {2, -1, 1}, {2, 0, -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Plan%v did not panic", c)
				}
			}()
			Plan(c[0], c[1], c[2])
		}()
	}
}
