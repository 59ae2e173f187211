package allreduce

import "fmt"

// Phase names the two halves of the ring algorithm.
type Phase uint8

const (
	// ReduceScatter steps add the received segment into the local one.
	ReduceScatter Phase = iota
	// AllGather steps overwrite the local segment with the received, fully reduced one.
	AllGather
)

func (p Phase) String() string {
	if p == ReduceScatter {
		return "reduce-scatter"
	}
	return "all-gather"
}

// Segment is the element range [Off, Off+Len) of the buffer.
type Segment struct{ Off, Len int }

// Step is one of the 2(N-1) ring steps as seen by one rank: it sends segment Send to its
// successor and receives segment Recv from its predecessor.
type Step struct {
	Phase      Phase
	Send, Recv int // segment indices
}

// Schedule is one rank's view of the ring all-reduce of n float32 elements over world ranks
// (the Baidu/Horovod ring; Patarasuk & Yuan 2009). Segments splits [0, n) into world
// contiguous ranges whose lengths differ by at most one (the first n%world are one longer);
// Steps holds the world-1 reduce-scatter steps followed by the world-1 all-gather steps.
//
// Reduce-scatter step s: rank r sends segment (r-s) mod N and adds the received segment
// (r-s-1) mod N into its own, so after N-1 steps rank r holds the full sum of segment
// (r+1) mod N, accumulated in the fixed ring order (r+1)+(r+2)+...+r. All-gather step s:
// rank r sends segment (r+1-s) mod N and copies the received segment (r-s) mod N. Each
// rank sends and receives 2(N-1)/N of the buffer, the bandwidth lower bound. The segment
// sent at step s+1 is the one received at step s, which is what lets sub-chunks pipeline.
type Schedule struct {
	World, Rank, N int
	Segments       []Segment
	Steps          []Step
}

// Next is the rank this schedule sends to; Prev the rank it receives from.
func (s Schedule) Next() int { return (s.Rank + 1) % s.World }

// Prev is the rank this schedule receives from.
func (s Schedule) Prev() int { return (s.Rank - 1 + s.World) % s.World }

// Plan returns rank's schedule for an all-reduce of n elements over world ranks. It is pure.
// World 1 has one segment and no steps. It panics if world < 1, rank is outside [0, world) or
// n < 0.
func Plan(world, rank, n int) Schedule {
	if world < 1 || rank < 0 || rank >= world || n < 0 {
		panic(fmt.Sprintf("allreduce: Plan(world=%d, rank=%d, n=%d): need world >= 1, 0 <= rank < world, n >= 0", world, rank, n))
	}
	s := Schedule{World: world, Rank: rank, N: n, Segments: make([]Segment, world)}
	q, rem := n/world, n%world
	off := 0
	for i := range s.Segments {
		l := q
		if i < rem {
			l++
		}
		s.Segments[i] = Segment{Off: off, Len: l}
		off += l
	}
	mod := func(i int) int { return ((i % world) + world) % world }
	s.Steps = make([]Step, 0, 2*(world-1))
	for st := 0; st < world-1; st++ {
		s.Steps = append(s.Steps, Step{Phase: ReduceScatter, Send: mod(rank - st), Recv: mod(rank - st - 1)})
	}
	for st := 0; st < world-1; st++ {
		s.Steps = append(s.Steps, Step{Phase: AllGather, Send: mod(rank + 1 - st), Recv: mod(rank - st)})
	}
	return s
}

// chunks returns how many sub-chunks of at most chunkElems elements segment seg splits into
// (zero for an empty segment).
func (s Schedule) chunks(seg, chunkElems int) int {
	l := s.Segments[seg].Len
	return (l + chunkElems - 1) / chunkElems
}

// chunkRange returns the element range of sub-chunk c of segment seg.
func (s Schedule) chunkRange(seg, c, chunkElems int) (off, n int) {
	sg := s.Segments[seg]
	off = sg.Off + c*chunkElems
	n = min(chunkElems, sg.Off+sg.Len-off)
	return off, n
}
