package config

import "testing"

// TestEditDistance: the Levenshtein distances the "did you mean" hints rank by, in runes.
func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "abc", 3}, {"json", "json", 0}, {"jsn", "json", 1},
		{"resolutoin", "resolution", 2}, {"kitten", "sitting", 3}, {"ab", "id", 2}, {"ä", "a", 1},
	} {
		if got := EditDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("EditDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
