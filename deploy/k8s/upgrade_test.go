package k8s_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// upgradeParagraph returns README.md's "Upgrading `ddpm`" paragraph.
func upgradeParagraph(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "**Upgrading `ddpm`.**")
	if i < 0 {
		t.Fatal("README.md has no \"Upgrading `ddpm`\" paragraph")
	}
	// The paragraph ends at the next bold heading.
	rest := s[i+1:]
	if j := strings.Index(rest, "\n**"); j >= 0 {
		rest = rest[:j]
	}
	return s[i:i+1] + rest
}

var deletePods = regexp.MustCompile("(?m)^ +kubectl delete pod -l ([^ \n]+)$")

// TestImageChangeDoesNotRoll: changing the image of a running cluster (`images:`, then
// `kubectl apply -k`) must not roll the StatefulSets pod by pod, which would run coordinators
// (and trainers) of two releases in one cluster: both use updateStrategy OnDelete, and the
// README's upgrade paragraph restarts them together with a `kubectl delete pod -l` whose
// selector matches every coordinator and trainer pod.
func TestImageChangeDoesNotRoll(t *testing.T) {
	para := upgradeParagraph(t)
	m := deletePods.FindStringSubmatch(para)
	if m == nil {
		t.Fatalf("the README's upgrade paragraph gives no `kubectl delete pod -l SELECTOR` line:\n%s", para)
	}
	sel := map[string]string{}
	for _, kv := range strings.Split(m[1], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("README selector %q: %q is not key=value", m[1], kv)
		}
		sel[k] = v
	}
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		for comp, ss := range map[string]*appsv1.StatefulSet{"coordinator": c.coordinator, "trainer": c.trainer} {
			if got := ss.Spec.UpdateStrategy.Type; got != appsv1.OnDeleteStatefulSetStrategyType {
				t.Errorf("%s StatefulSet: updateStrategy %q, want OnDelete (the default RollingUpdate mixes releases)", comp, got)
			}
			if !selects(sel, ss.Spec.Template.Labels) {
				t.Errorf("README's `kubectl delete pod -l %s` misses the %s pods (labels %v)", m[1], comp, ss.Spec.Template.Labels)
			}
		}
	})
}
