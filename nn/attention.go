package nn

import (
	"fmt"
	"math"
	"unsafe"
)

// Attention is the core of the U-Net's self-attention block (the original's attn_block, one head
// over all H*W positions): for q, k, v [B, C, P] (P = H*W),
//
//	S[i,j] = sum_c q[c,i] k[c,j] / sqrt(C);  A = softmax over j of S;  y[c,i] = sum_j A[i,j] v[c,j]
//
// giving y [B, C, P]. The probabilities A [B, P, P] are kept for Backward.
type Attention[T Float] struct {
	C int

	q, k, v    []T
	b, p       int
	prob       []T // [B, P, P]
	dp         []T // [P, P] scratch
	y          []T
	dq, dk, dv []T

	la, lb          []T // the parallel loops' arguments
	lp              int
	fnSoftmax, fnDS func(lo, hi int) // their bodies, bound once (see parallelFor)
}

// Forward returns y [b, C, p]; it panics unless q, k, v each hold b*C*p elements.
func (a *Attention[T]) Forward(q, k, v []T, b, p int) []T {
	n := b * a.C * p
	if len(q) != n || len(k) != n || len(v) != n {
		panic(fmt.Sprintf("nn: Attention: lengths %d %d %d, want %d*%d*%d", len(q), len(k), len(v), b, a.C, p))
	}
	a.q, a.k, a.v, a.b, a.p = q, k, v, b, p
	a.prob = grow(a.prob, b*p*p)
	a.y = grow(a.y, n)
	c := a.C
	scale := T(1 / math.Sqrt(float64(c)))
	for s := 0; s < b; s++ {
		qs, ks, vs := q[s*c*p:(s+1)*c*p], k[s*c*p:(s+1)*c*p], v[s*c*p:(s+1)*c*p]
		pr := a.prob[s*p*p : (s+1)*p*p]
		pgemm(true, false, p, p, c, scale, qs, p, ks, p, 0, pr, p) // S = q^T k / sqrt(C)
		a.softmaxRows(pr, p)
		pgemm(false, true, c, p, p, 1, vs, p, pr, p, 0, a.y[s*c*p:(s+1)*c*p], p) // y = v A^T
	}
	return a.y
}

// softmaxRows replaces each row of m [rows, p] by its softmax (max-shifted, float64 sums).
func (a *Attention[T]) softmaxRows(m []T, p int) {
	a.la, a.lp = m, p
	a.bind()
	parallelFor(len(m)/p, len(m)*4, a.fnSoftmax)
	a.la = nil
}

func (a *Attention[T]) bind() {
	if a.fnSoftmax == nil {
		a.fnSoftmax, a.fnDS = a.softmaxRange, a.dsRange
	}
}

// softmaxRange is softmaxRows for the rows [lo, hi) of a.la.
func (a *Attention[T]) softmaxRange(lo, hi int) {
	m, p := a.la, a.lp
	for i := lo; i < hi; i++ {
		row := m[i*p : (i+1)*p]
		mx := row[0]
		for _, v := range row {
			mx = max(mx, v)
		}
		if unsafe.Sizeof(mx) == 4 {
			expShiftRow32(as[float32](row), float32(mx))
		} else {
			for j, v := range row {
				row[j] = expT(v - mx)
			}
		}
		inv := T(1 / sum64(row))
		for j := range row {
			row[j] *= inv
		}
	}
}

// dsRange turns the rows [lo, hi) of a.lb = dA into dS = A .* (dA - rowsum(A .* dA)), with
// a.la = A.
func (a *Attention[T]) dsRange(lo, hi int) {
	pr, dp, p := a.la, a.lb, a.lp
	for i := lo; i < hi; i++ {
		ar, dr := pr[i*p:(i+1)*p], dp[i*p:(i+1)*p]
		d := T(dot64(ar, dr))
		for j, v := range ar {
			dr[j] = v * (dr[j] - d)
		}
	}
}

// Backward returns dq, dk, dv [b, C, p] for dy [b, C, p]:
// dv = dy A, dA = dy^T v, dS = A .* (dA - rowsum(A .* dA)), dq = k dS^T / sqrt(C), dk = q dS / sqrt(C).
func (a *Attention[T]) Backward(dy []T) (dq, dk, dv []T) {
	b, c, p := a.b, a.C, a.p
	n := b * c * p
	if len(dy) != n {
		panic(fmt.Sprintf("nn: Attention: len(dy) = %d, want %d", len(dy), n))
	}
	a.dq, a.dk, a.dv = grow(a.dq, n), grow(a.dk, n), grow(a.dv, n)
	a.dp = grow(a.dp, p*p)
	scale := T(1 / math.Sqrt(float64(c)))
	for s := 0; s < b; s++ {
		pr := a.prob[s*p*p : (s+1)*p*p]
		dys := dy[s*c*p : (s+1)*c*p]
		pgemm(false, false, c, p, p, 1, dys, p, pr, p, 0, a.dv[s*c*p:(s+1)*c*p], p) // dv = dy A
		pgemm(true, false, p, p, c, 1, dys, p, a.v[s*c*p:(s+1)*c*p], p, 0, a.dp, p) // dA = dy^T v
		dp := a.dp
		a.la, a.lb, a.lp = pr, dp, p
		a.bind()
		parallelFor(p, p*p*3, a.fnDS)
		a.la, a.lb = nil, nil
		pgemm(false, true, c, p, p, scale, a.k[s*c*p:(s+1)*c*p], p, dp, p, 0, a.dq[s*c*p:(s+1)*c*p], p)  // dq = k dS^T / sqrt(C)
		pgemm(false, false, c, p, p, scale, a.q[s*c*p:(s+1)*c*p], p, dp, p, 0, a.dk[s*c*p:(s+1)*c*p], p) // dk = q dS / sqrt(C)
	}
	return a.dq, a.dk, a.dv
}
