package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestReleaseRecord: a release record becomes State.Release (the newest one wins) and changes
// nothing else but the applied count; it survives a snapshot's encoding; a snapshot written
// before records decodes with none; a record without a rules version is refused.
func TestReleaseRecord(t *testing.T) {
	s := New()
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: mnistRun(t)}})
	before := s.Clone()
	for _, rel := range []Release{{Version: "v1", Rules: 1, Term: 2}, {Version: "v2", Rules: 2, Term: 5}} {
		if r := Apply(s, Command{Kind: KindRelease, Time: 2, Release: &rel}); r.Err() != nil {
			t.Fatalf("release %+v: %v", rel, r.Err())
		}
		if s.Release == nil || *s.Release != rel {
			t.Fatalf("State.Release %+v after the record %+v", s.Release, rel)
		}
	}
	rest := s.Clone()
	rest.Release, rest.Applied = nil, before.Applied
	if !bytes.Equal(rest.Encode(), before.Encode()) {
		t.Fatalf("a release record changed more than State.Release:\n%s\n%s", rest.Encode(), before.Encode())
	}

	d, err := Decode(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if d.Release == nil || *d.Release != (Release{Version: "v2", Rules: 2, Term: 5}) {
		t.Fatalf("after a snapshot round trip State.Release is %+v", d.Release)
	}
	if !bytes.Contains(s.Encode(), []byte(`"release":{"version":"v2","rules":2,"term":5}`)) {
		t.Fatalf("snapshot encodes the record otherwise: %s", s.Encode())
	}
	if enc := before.Encode(); bytes.Contains(enc, []byte(`"release"`)) {
		t.Fatalf("a state without a record writes the field: %s", enc)
	} else if old, err := Decode(enc); err != nil || old.Release != nil {
		t.Fatalf("snapshot without the field: %v, release %+v", err, old.Release)
	}

	for _, bad := range []*Release{nil, {Version: "v3"}} {
		r := Apply(s, Command{Kind: KindRelease, Time: 3, Release: bad})
		if !errors.Is(r.Err(), ErrBadCommand) || !strings.Contains(r.Message, "release record without a rules version") {
			t.Fatalf("release %+v: %v", bad, r.Err())
		}
	}
	if *s.Release != (Release{Version: "v2", Rules: 2, Term: 5}) {
		t.Fatalf("a refused record changed State.Release to %+v", s.Release)
	}
	if RulesVersion < 1 {
		t.Fatalf("RulesVersion %d: records need 1 or more", RulesVersion)
	}
}
