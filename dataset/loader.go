package dataset

import "fmt"

// LoadBatch fills dst, [hi-lo, c, h, w] float32, with the records at global positions [lo, hi)
// of the stream s (a trainer's RankSlice of a step), each flipped horizontally when flip is set
// and Flip(seed, position) says so; labels, when not nil, receives their labels (len hi-lo).
// Records are read by GOMAXPROCS goroutines. It panics if the lengths disagree or hi < lo; the
// error is that of the first failing position.
func LoadBatch(ds Dataset, s Sampler, seed uint64, flip bool, lo, hi uint64, dst []float32, labels []int) error {
	c, h, w := ds.Shape()
	d := c * h * w
	if hi < lo || len(dst) != int(hi-lo)*d || (labels != nil && len(labels) != int(hi-lo)) {
		panic(fmt.Sprintf("dataset: LoadBatch [%d, %d): len(dst) = %d, len(labels) = %d, want %d and %d",
			lo, hi, len(dst), len(labels), int(hi-lo)*d, hi-lo))
	}
	if s.Len() != ds.Len() {
		panic(fmt.Sprintf("dataset: LoadBatch: sampler over %d records, dataset has %d", s.Len(), ds.Len()))
	}
	m := int(hi - lo)
	errs := make([]error, m)
	parallelFor(m, func(k int) {
		p := lo + uint64(k)
		i := s.Index(p)
		img := dst[k*d : (k+1)*d]
		if errs[k] = ds.Image(i, img); errs[k] != nil {
			return
		}
		if flip && Flip(seed, p) {
			FlipW(img, c, h, w)
		}
		if labels != nil {
			labels[k] = ds.Label(i)
		}
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
