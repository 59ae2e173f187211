package config

import "strings"

// NearestMaxDistance is the largest edit distance at which Nearest takes a word for a typo of a
// candidate, as cobra's SuggestionsMinimumDistance of 2 that ddpm sets for mistyped subcommands.
const NearestMaxDistance = 2

// Nearest returns the candidates that word is likely a typo of, for a "did you mean" hint of
// ddpm (an unknown flag, config key, preset or built-in dataset name): those at the smallest
// EditDistance from word, compared without regard to case, ties kept in the order of
// candidates. A candidate is near when its distance is at most NearestMaxDistance and less
// than word's length in runes (a word replaced whole is no typo: "ab" of "id"), or when word
// (of 4 runes or more) begins it ("fashion" of "fashion-mnist"), which counts as distance
// NearestMaxDistance. Nil when none is near.
func Nearest(word string, candidates []string) []string {
	typed := strings.ToLower(word)
	n := len([]rune(typed))
	best := min(NearestMaxDistance, n-1)
	var near []string
	for _, c := range candidates {
		folded := strings.ToLower(c)
		d := EditDistance(typed, folded)
		if n >= 4 && strings.HasPrefix(folded, typed) {
			d = min(d, NearestMaxDistance)
		}
		switch {
		case d > best:
		case d < best:
			best, near = d, []string{c}
		default:
			near = append(near, c)
		}
	}
	return near
}
