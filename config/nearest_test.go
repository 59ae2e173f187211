package config

import (
	"slices"
	"testing"
)

// TestNearest: the one ranking of ddpm's "did you mean" hints: the nearest candidates by edit
// distance, case folded, ties kept in the candidates' order, none past distance 2 or at the
// word's own length, and a candidate the word (4 runes or more) begins counted at distance 2.
func TestNearest(t *testing.T) {
	presets := Presets() // celebahq cifar10 fashion-mnist lsun-bedroom lsun-cat lsun-church mnist
	flags := []string{"channels", "help", "json", "resolution"}
	for _, tc := range []struct {
		word       string
		candidates []string
		want       []string
	}{
		{"resolutoin", flags, []string{"resolution"}},
		{"Resolution", flags, []string{"resolution"}},
		{"RESOLUTION", []string{"Resolution"}, []string{"Resolution"}}, // the candidate as given
		{"hepl", flags, []string{"help"}},
		{"jsn", flags, []string{"json"}},
		{"bogus", flags, nil},
		{"ab", []string{"id"}, nil},                                  // two letters both replaced
		{"a", []string{"b", "ab"}, nil},                              // one letter replaced whole; one added to a lone letter
		{"ax", []string{"ay", "bx", "a"}, []string{"ay", "bx", "a"}}, // ties, in order
		{"", flags, nil},
		{"mnst", presets, []string{"mnist"}},
		{"MNIST ", presets, []string{"mnist"}},
		{"mnïst", presets, []string{"mnist"}}, // runes, not bytes
		{"cifar", presets, []string{"cifar10"}},
		{"fashion", presets, []string{"fashion-mnist"}},
		{"lsun", presets, []string{"lsun-bedroom", "lsun-cat", "lsun-church"}},
		{"lsun-cat", presets, []string{"lsun-cat"}},
		{"lsun-ca", presets, []string{"lsun-cat"}}, // nearer than lsun-church, which it also begins
		{"msn", presets, nil},                      // a prefix needs 4 runes
		{"stpes", fieldNames(), []string{"steps"}},
		{"global_btch", fieldNames(), []string{"global_batch"}},
	} {
		if got := Nearest(tc.word, tc.candidates); !slices.Equal(got, tc.want) {
			t.Errorf("Nearest(%q, %q) = %q, want %q", tc.word, tc.candidates, got, tc.want)
		}
	}
}
