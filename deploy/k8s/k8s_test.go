// Package k8s_test checks the Kubernetes manifests of deploy/k8s against the Kubernetes API types
// and against the ddpm binary they start: every overlay is rendered with `kubectl kustomize`,
// every document decodes strictly into its k8s.io/api type, every ddpm command line parses with
// the binary's own flag parser (DDPM_CHECK_FLAGS=1), and ports, paths, env names, the peer list
// and the run config agree between the manifests, the image recipe and the binary.
package k8s_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/dataset"
	"ddpm/internal/testutil"
	"ddpm/unet"
)

var overlays = []string{"cpu", "gpu"}

// The binary's path inside the image (Containerfile) and in every manifest's command.
const binInImage = "/usr/local/bin/ddpm"

// Fake values the kubelet would put into the downward-API env of pod ordinal 0.
const fakePodIP = "10.1.2.3"

var ddpmBin string // built once by TestMain

func TestMain(m *testing.M) {
	var err error
	if ddpmBin, err = testutil.BuildDDPM(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testutil.RemoveDDPM()
	os.Exit(code)
}

// cluster is one rendered overlay, decoded.
type cluster struct {
	name        string
	coordinator *appsv1.StatefulSet
	trainer     *appsv1.StatefulSet
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pvcs        map[string]*corev1.PersistentVolumeClaim
	netpols     map[string]*networkingv1.NetworkPolicy
	pdbs        map[string]*policyv1.PodDisruptionBudget
}

// newObject returns a pointer to the API type of apiVersion/kind; unknown kinds fail the test.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	}
	return nil, false
}

func render(t *testing.T, dir string) []byte {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatalf("kubectl is not installed (make setup installs Debian's kubectl): %v", err)
	}
	out, err := exec.Command("kubectl", "kustomize", dir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	return out
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict decodes one YAML document into its API type; unknown or duplicate fields fail.
func decodeStrict(doc []byte) (any, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	obj, ok := newObject(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, fmt.Errorf("unexpected kind %s %s (the test knows no type for it)", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// rendered caches each overlay's decoded objects: rendering costs seconds, and no test mutates
// them. Tests run sequentially (none calls t.Parallel), so the map needs no lock.
var rendered = map[string]*cluster{}

func load(t *testing.T, overlay string) *cluster {
	t.Helper()
	if c, ok := rendered[overlay]; ok {
		return c
	}
	c := loadUncached(t, overlay)
	rendered[overlay] = c
	return c
}

func loadUncached(t *testing.T, overlay string) *cluster {
	t.Helper()
	out := render(t, filepath.Join("overlays", overlay))
	c := &cluster{name: overlay, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		pvcs: map[string]*corev1.PersistentVolumeClaim{}, netpols: map[string]*networkingv1.NetworkPolicy{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}}
	n := 0
	for _, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		n++
		obj, err := decodeStrict([]byte(doc))
		if err != nil {
			t.Fatalf("overlay %s, document %d: %v", overlay, n, err)
		}
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			switch o.Name {
			case "ddpm-coordinator":
				c.coordinator = o
			case "ddpm-trainer":
				c.trainer = o
			default:
				t.Fatalf("overlay %s: unexpected StatefulSet %q", overlay, o.Name)
			}
		case *corev1.Service:
			c.services[o.Name] = o
		case *corev1.ConfigMap:
			c.configMaps[o.Name] = o
		case *corev1.PersistentVolumeClaim:
			c.pvcs[o.Name] = o
		case *networkingv1.NetworkPolicy:
			c.netpols[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			c.pdbs[o.Name] = o
		}
	}
	if c.coordinator == nil || c.trainer == nil {
		t.Fatalf("overlay %s: want StatefulSets ddpm-coordinator and ddpm-trainer", overlay)
	}
	return c
}

func forEachOverlay(t *testing.T, fn func(t *testing.T, c *cluster)) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) { fn(t, load(t, o)) })
	}
}

// TestStrictDecoderRejectsUnknownFields proves the decoder the other tests rely on is strict.
func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	good := "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  replicas: 3\n"
	if _, err := decodeStrict([]byte(good)); err != nil {
		t.Fatalf("valid document: %v", err)
	}
	for _, bad := range []string{
		strings.Replace(good, "replicas: 3", "replica: 3", 1),                 // misspelt field
		strings.Replace(good, "replicas: 3", "replicas: 3\n  replicas: 4", 1), // duplicate field
		strings.Replace(good, "replicas: 3", "template:\n    spec:\n      containers:\n      - name: a\n        imagePullPolicy: Always\n        readOnly: true", 1), // field at the wrong level
	} {
		if _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("decodeStrict accepted\n%s", bad)
		}
	}
}

func TestRenderedObjects(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		for _, name := range []string{"ddpm-coordinator", "ddpm-trainer", "ddpm-dashboard", "ddpm-trainer-metrics"} {
			if c.services[name] == nil {
				t.Errorf("Service %s is missing", name)
			}
		}
		for _, name := range []string{"ddpm-coordinator", "ddpm-trainer", "ddpm-monitoring"} {
			if c.netpols[name] == nil {
				t.Errorf("NetworkPolicy %s is missing", name)
			}
		}
		if len(c.configMaps) != 1 {
			t.Errorf("want one ConfigMap (the run config), got %d", len(c.configMaps))
		}
	})
}

// ---- the binary's view of the command lines ----

type parsed struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Flags   map[string]string `json:"flags"`
	Set     []string          `json:"set"`
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// podEnv returns the container's env as the kubelet would set it for the pod named podName.
func podEnv(t *testing.T, ctr corev1.Container, podName string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = varRef.ReplaceAllStringFunc(e.Value, func(m string) string { return env[m[2:len(m)-1]] })
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = fakePodIP
		default:
			t.Fatalf("container %s: env %s has a source the test does not model", ctr.Name, e.Name)
		}
	}
	return env
}

// expand applies Kubernetes' $(VAR) expansion to args; a reference to a variable the container
// does not define would reach the process literally, so it fails the test.
func expand(t *testing.T, ctr corev1.Container, args []string, env map[string]string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = varRef.ReplaceAllStringFunc(a, func(m string) string {
			v, ok := env[m[2:len(m)-1]]
			if !ok {
				t.Errorf("container %s: arg %q refers to %s, which its env does not define", ctr.Name, a, m)
			}
			return v
		})
	}
	return out
}

// parseWithBinary runs the real binary on args with DDPM_CHECK_FLAGS=1 and returns what its
// parser made of them.
func parseWithBinary(t *testing.T, args []string) parsed {
	t.Helper()
	cmd := exec.Command(ddpmBin, args...)
	cmd.Env = append(os.Environ(), "DDPM_CHECK_FLAGS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var p parsed
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatalf("ddpm %s printed %q: %v", strings.Join(args, " "), stdout.String(), err)
	}
	return p
}

func container(t *testing.T, sts *appsv1.StatefulSet, name string, init bool) corev1.Container {
	t.Helper()
	list := sts.Spec.Template.Spec.Containers
	if init {
		list = sts.Spec.Template.Spec.InitContainers
	}
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("StatefulSet %s has no container %q", sts.Name, name)
	return corev1.Container{}
}

func containerPort(t *testing.T, ctr corev1.Container, name string) int {
	t.Helper()
	for _, p := range ctr.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("container %s declares no port %q", ctr.Name, name)
	return 0
}

func splitPort(t *testing.T, what, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s %q: port: %v", what, addr, err)
	}
	return host, n
}

// mountPath returns where ctr mounts the volume named vol.
func mountPath(t *testing.T, ctr corev1.Container, vol string) string {
	t.Helper()
	for _, m := range ctr.VolumeMounts {
		if m.Name == vol {
			return m.MountPath
		}
	}
	t.Fatalf("container %s does not mount volume %q", ctr.Name, vol)
	return ""
}

// configPath returns the path of the run config file inside ctr: the mount of the ConfigMap
// volume plus the item's path, checking that the ConfigMap and key exist in the rendering.
func configPath(t *testing.T, c *cluster, sts *appsv1.StatefulSet, ctr corev1.Container) (string, string) {
	t.Helper()
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		cm := c.configMaps[v.ConfigMap.Name]
		if cm == nil {
			t.Fatalf("volume %s refers to ConfigMap %s, which is not rendered", v.Name, v.ConfigMap.Name)
		}
		if len(v.ConfigMap.Items) != 1 {
			t.Fatalf("volume %s: want exactly one item (run.yaml)", v.Name)
		}
		it := v.ConfigMap.Items[0]
		data, ok := cm.Data[it.Key]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %q", cm.Name, it.Key)
		}
		return mountPath(t, ctr, v.Name) + "/" + it.Path, data
	}
	t.Fatalf("StatefulSet %s mounts no ConfigMap", sts.Name)
	return "", ""
}

// runConfig loads the ConfigMap's run config with the project's own loader (strict + Validate).
func runConfig(t *testing.T, c *cluster) config.Run {
	t.Helper()
	_, data := configPath(t, c, c.coordinator, container(t, c.coordinator, "coordinator", false))
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := config.Load(p)
	if err != nil {
		t.Fatalf("the ConfigMap's run config does not load: %v", err)
	}
	return r
}

func dataDir(t *testing.T, sts *appsv1.StatefulSet, ctr corev1.Container) string {
	t.Helper()
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("StatefulSet %s: want one volumeClaimTemplate, got %d", sts.Name, len(sts.Spec.VolumeClaimTemplates))
	}
	return mountPath(t, ctr, sts.Spec.VolumeClaimTemplates[0].Name)
}

// checkDDPMEnv: every DDPM_* variable must be one the binary reads: a dataset folder override or
// DDPM_<FLAG> of a flag of this command.
func checkDDPMEnv(t *testing.T, ctr corev1.Container, p parsed) {
	t.Helper()
	for _, e := range ctr.Env {
		if !strings.HasPrefix(e.Name, "DDPM_") || e.Name == dataset.EnvMNISTDir || e.Name == dataset.EnvFashionMNISTDir {
			continue
		}
		flag := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.Name, "DDPM_")), "_", "-")
		if _, ok := p.Flags[flag]; !ok {
			t.Errorf("container %s: env %s names no flag of %q", ctr.Name, e.Name, p.Command)
		}
	}
}

// checkCerts: the pods mount the ddpm-tls secret; once the binary takes --certs (internal/tlsauth),
// the command line must point it there, or the process would start without its certificates.
func checkCerts(t *testing.T, sts *appsv1.StatefulSet, ctr corev1.Container, p parsed) {
	t.Helper()
	var vol string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "ddpm-tls" {
			vol = v.Name
		}
	}
	if vol == "" {
		t.Fatalf("StatefulSet %s does not mount the ddpm-tls secret", sts.Name)
	}
	dir := mountPath(t, ctr, vol)
	if _, ok := p.Flags["certs"]; ok && p.Flags["certs"] != dir {
		t.Errorf("%s: --certs %q, the ddpm-tls secret is mounted at %q: add --certs=%s to the args", p.Command, p.Flags["certs"], dir, dir)
	}
	if v, ok := p.Flags["insecure"]; ok && v != "false" {
		t.Errorf("%s: --insecure=%s: the cluster's links must be mutual TLS", p.Command, v)
	}
}

func coordinatorPeers(t *testing.T, c *cluster) (corev1.Container, parsed, []coordinator.Peer) {
	t.Helper()
	sts := c.coordinator
	ctr := container(t, sts, "coordinator", false)
	if len(ctr.Command) != 1 || ctr.Command[0] != binInImage {
		t.Fatalf("coordinator command %q, want [%s]", ctr.Command, binInImage)
	}
	env := podEnv(t, ctr, sts.Name+"-0")
	p := parseWithBinary(t, expand(t, ctr, ctr.Args, env))
	if p.Command != "ddpm coordinator" {
		t.Fatalf("the coordinator container runs %q", p.Command)
	}
	peers, err := coordinator.ParsePeers(p.Flags["peers"])
	if err != nil {
		t.Fatalf("--peers: %v", err)
	}
	return ctr, p, peers
}

func TestCoordinatorCommandLine(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		sts := c.coordinator
		ctr, p, peers := coordinatorPeers(t, c)
		checkDDPMEnv(t, ctr, p)
		checkCerts(t, sts, ctr, p)
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
			t.Fatalf("coordinator replicas %v, want 3", sts.Spec.Replicas)
		}
		if len(peers) != int(*sts.Spec.Replicas) {
			t.Errorf("--peers lists %d replicas, the StatefulSet runs %d", len(peers), *sts.Spec.Replicas)
		}
		raftPort, grpcPort, httpPort := containerPort(t, ctr, "raft"), containerPort(t, ctr, "grpc"), containerPort(t, ctr, "http")
		for i, peer := range peers {
			pod := fmt.Sprintf("%s-%d", sts.Name, i)
			if peer.ID != pod {
				t.Errorf("peer %d has id %q, want the pod name %q", i, peer.ID, pod)
			}
			stable := pod + "." + sts.Spec.ServiceName
			for what, addr := range map[string]string{"raft": peer.RaftAddr, "grpc": peer.GRPCAddr} {
				host, port := splitPort(t, "peer "+what, addr)
				want := map[string]int{"raft": raftPort, "grpc": grpcPort}[what]
				if host != stable || port != want {
					t.Errorf("peer %s %s address %q, want %s:%d", pod, what, addr, stable, want)
				}
			}
		}
		// Raft id = pod name: pod ordinal 0 must find itself in the list.
		if p.Flags["id"] != sts.Name+"-0" {
			t.Errorf("--id expands to %q for pod %s-0", p.Flags["id"], sts.Name)
		}
		for flag, want := range map[string]int{"raft-addr": raftPort, "grpc-addr": grpcPort, "http-addr": httpPort} {
			host, port := splitPort(t, "--"+flag, p.Flags[flag])
			if port != want {
				t.Errorf("--%s port %d, the container port is %d", flag, port, want)
			}
			if flag == "raft-addr" && host != fakePodIP {
				t.Errorf("--raft-addr host %q: raft advertises it, so it must be the pod IP", host)
			}
		}
		if p.Flags["bootstrap"] != "true" {
			t.Errorf("--bootstrap is %q; a fresh cluster needs it", p.Flags["bootstrap"])
		}
		if got, want := p.Flags["data-dir"], dataDir(t, sts, ctr); got != want {
			t.Errorf("--data-dir %q, the raft volume is mounted at %q", got, want)
		}
		if got, _ := configPath(t, c, sts, ctr); p.Flags["config"] != got {
			t.Errorf("--config %q, the run config is mounted at %q", p.Flags["config"], got)
		}
		// The headless Service gives the stable names the peers use.
		svc := c.services[sts.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s must exist, be headless and publish not-ready addresses", sts.Spec.ServiceName)
		}
		if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("coordinators must start in parallel (a quorum elects the first leader)")
		}
	})
}

func TestTrainerCommandLine(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		_, _, peers := coordinatorPeers(t, c)
		sts := c.trainer
		ctr := container(t, sts, "trainer", false)
		if len(ctr.Command) != 1 || ctr.Command[0] != binInImage {
			t.Fatalf("trainer command %q, want [%s]", ctr.Command, binInImage)
		}
		p := parseWithBinary(t, expand(t, ctr, ctr.Args, podEnv(t, ctr, sts.Name+"-0")))
		if p.Command != "ddpm trainer" {
			t.Fatalf("the trainer container runs %q", p.Command)
		}
		checkDDPMEnv(t, ctr, p)
		checkCerts(t, sts, ctr, p)
		var want []string
		for _, peer := range peers {
			want = append(want, peer.GRPCAddr)
		}
		if got := strings.Split(p.Flags["coordinator"], ","); !slices.Equal(got, want) {
			t.Errorf("--coordinator %q, want every coordinator's gRPC address %q", got, want)
		}
		host, port := splitPort(t, "--listen", p.Flags["listen"])
		if host != fakePodIP || port != containerPort(t, ctr, "ring") {
			t.Errorf("--listen %q: the ring peers dial it, so it must be podIP:%d", p.Flags["listen"], containerPort(t, ctr, "ring"))
		}
		if _, port := splitPort(t, "--http-addr", p.Flags["http-addr"]); port != containerPort(t, ctr, "http") {
			t.Errorf("--http-addr port %d (/metrics, /healthz, /readyz), the http port the probes use is %d", port, containerPort(t, ctr, "http"))
		}
		if got, want := p.Flags["data-dir"], dataDir(t, sts, ctr); got != want {
			t.Errorf("--data-dir %q, the trainer volume is mounted at %q", got, want)
		}
		if got, _ := configPath(t, c, sts, ctr); p.Flags["config"] != got {
			t.Errorf("--config %q, the run config is mounted at %q", p.Flags["config"], got)
		}
		if p.Flags["standalone"] != "false" {
			t.Errorf("trainers on Kubernetes must join the coordinators")
		}
		// A trainer that exits once its run has succeeded is restarted by the StatefulSet
		// (restartPolicy Always) until CrashLoopBackOff; it stays up instead.
		if p.Flags["stay-after-done"] != "true" {
			t.Errorf("--stay-after-done %q: without it a finished run's trainer pods crash-loop", p.Flags["stay-after-done"])
		}
		if p.Flags["id"] != sts.Name+"-0" {
			t.Errorf("--id expands to %q, want the pod name", p.Flags["id"])
		}
		svc := c.services[sts.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("Service %s must exist and be headless", sts.Spec.ServiceName)
		}
		// The two role StatefulSets read the same run config.
		_, a := configPath(t, c, c.coordinator, container(t, c.coordinator, "coordinator", false))
		_, b := configPath(t, c, sts, ctr)
		if a != b {
			t.Errorf("coordinators and trainers mount different run configs")
		}
	})
}

// prepareContainer returns the dataset init container, its parsed ddpm command line and env.
func prepareContainer(t *testing.T, c *cluster) (corev1.Container, parsed, map[string]string) {
	t.Helper()
	sts := c.trainer
	ctr := container(t, sts, "prepare-dataset", true)
	if len(ctr.Command) != 4 || ctr.Command[0] != "/bin/sh" || ctr.Command[1] != "-c" {
		t.Fatalf("prepare-dataset command %q, want /bin/sh -c SCRIPT NAME", ctr.Command)
	}
	if !strings.Contains(ctr.Command[2], binInImage+` "$@"`) {
		t.Fatalf("the prepare script must run %s with the container args", binInImage)
	}
	env := podEnv(t, ctr, sts.Name+"-0")
	p := parseWithBinary(t, expand(t, ctr, ctr.Args, env))
	if p.Command != "ddpm dataset prepare" {
		t.Fatalf("the init container runs %q", p.Command)
	}
	return ctr, p, env
}

func TestDatasetInitContainer(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		ctr, p, env := prepareContainer(t, c)
		checkDDPMEnv(t, ctr, p)
		run := runConfig(t, c)
		if env["DATASET_DIR"] != run.Dataset {
			t.Errorf("the init container prepares into %q, the run config reads %q", env["DATASET_DIR"], run.Dataset)
		}
		if want := env["DATASET_DIR"] + ".tmp"; p.Flags["out"] != want {
			t.Errorf("--out %q, want %q (prepared aside, renamed when complete)", p.Flags["out"], want)
		}
		mount := dataDir(t, c.trainer, ctr)
		if !strings.HasPrefix(run.Dataset, mount+"/") {
			t.Errorf("dataset %q is not on the trainer volume %q", run.Dataset, mount)
		}
		if len(p.Args) != 1 || p.Args[0] != env["DATASET_SOURCE"] {
			t.Errorf("prepare source %q, want DATASET_SOURCE %q", p.Args, env["DATASET_SOURCE"])
		}
		// A source other than the image's MNIST must come from a read-only volume.
		if src := env["DATASET_SOURCE"]; src != "mnist" {
			found := false
			for _, m := range ctr.VolumeMounts {
				if strings.HasPrefix(src, m.MountPath+"/") {
					found = true
					if !m.ReadOnly {
						t.Errorf("dataset source volume %s is mounted read-write", m.Name)
					}
					for _, v := range c.trainer.Spec.Template.Spec.Volumes {
						if v.Name == m.Name && (v.PersistentVolumeClaim == nil || !v.PersistentVolumeClaim.ReadOnly || c.pvcs[v.PersistentVolumeClaim.ClaimName] == nil) {
							t.Errorf("volume %s must be a read-only claim of a rendered PVC", v.Name)
						}
					}
				}
			}
			if !found {
				t.Errorf("DATASET_SOURCE %q is on no mounted volume", src)
			}
		}
	})
}

// TestDatasetInitScript runs the init container's script for real (the image's binary path
// replaced by the test's build): a half-written dataset is discarded and prepared again, a
// complete one is left alone, and the result opens with the run's dataset spec.
func TestDatasetInitScript(t *testing.T) {
	c := load(t, "cpu")
	ctr, _, env := prepareContainer(t, c)
	if env["DATASET_SOURCE"] != "mnist" {
		t.Skip("the cpu overlay no longer prepares the image's MNIST")
	}
	if _, err := dataset.MNISTDir(); err != nil {
		t.Skipf("no MNIST idx files here: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "dataset")
	env["DATASET_DIR"] = dir
	script := strings.ReplaceAll(ctr.Command[2], binInImage, ddpmBin)
	run := func() string {
		cmd := exec.Command("/bin/sh", append([]string{"-c", script, ctr.Command[3]}, expand(t, ctr, ctr.Args, env)...)...)
		cmd.Env = append(os.Environ(), "DATASET_DIR="+dir, "DATASET_SOURCE="+env["DATASET_SOURCE"])
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("init script: %v\n%s", err, out)
		}
		return string(out)
	}
	// A pod killed during an earlier prepare left both folders half-written.
	for _, d := range []string{dir, dir + ".tmp"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "shard-00000.bin"), []byte("torn"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out := run(); !strings.Contains(out, "prepared 60000 images") {
		t.Fatalf("first run did not prepare MNIST:\n%s", out)
	}
	if _, err := os.Stat(dir + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp survived: %v", dir, err)
	}
	st, err := os.Stat(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if out := run(); !strings.Contains(out, "already prepared") {
		t.Fatalf("second run did not leave the prepared dataset alone:\n%s", out)
	}
	st2, _ := os.Stat(filepath.Join(dir, "index.json"))
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("the second run rewrote index.json")
	}
	prepared, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatalf("open prepared dataset: %v", err)
	}
	orig, err := dataset.Open("mnist", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if prepared.Fingerprint() != orig.Fingerprint() {
		t.Errorf("prepared fingerprint %.12s, MNIST's %.12s", prepared.Fingerprint(), orig.Fingerprint())
	}
}

func TestRunConfig(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		run := runConfig(t, c)
		want := map[string]string{"cpu": "mnist", "gpu": "cifar10"}[c.name]
		if run.Preset != want {
			t.Errorf("preset %q, want %q", run.Preset, want)
		}
		n := int(*c.trainer.Spec.Replicas)
		if n < run.MinTrainers || n > run.MaxTrainers {
			t.Errorf("%d trainer replicas outside the run's [min_trainers %d, max_trainers %d]", n, run.MinTrainers, run.MaxTrainers)
		}
		// The grace period must outlast a step plus a checkpoint; the heartbeat timeout is the
		// cluster's own bound on how long a live trainer may be silent.
		grace := c.trainer.Spec.Template.Spec.TerminationGracePeriodSeconds
		if grace == nil || time.Duration(*grace)*time.Second <= run.HeartbeatTimeout.Std() || *grace < 60 {
			t.Errorf("trainer terminationGracePeriodSeconds %v: want >= 60 s and above heartbeat_timeout %s", grace, run.HeartbeatTimeout)
		}
	})
}

// TestTrainerVolumeHoldsTheRun: a trainer's volume ("data", /var/lib/ddpm) holds its prepared
// dataset and its checkpoint store, which keeps keep_checkpoints committed checkpoints plus the
// one being written and pages freed by pruning that bbolt reuses later (checkpoint's
// TestPruneBoundsFileSize: 6.8x one checkpoint after 100 saves with keep 3, so (keep + 4)
// checkpoints here). A smaller volume request would let a run die of a full disk at its Nth
// checkpoint. One checkpoint is the model's parameters, EMA, Adam m and v in float32.
func TestTrainerVolumeHoldsTheRun(t *testing.T) {
	// The prepared training split, in bytes: MNIST is read for real (padded to 32x32, as the
	// trainers do); CIFAR-10's train split is 50,000 images of 3x32x32 bytes.
	mnist, err := dataset.Open("mnist:train", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mc, mh, mw := mnist.Shape()
	prepared := map[string]int64{"mnist": int64(mnist.Len() * mc * mh * mw), "cifar10": 50_000 * 3 * 32 * 32}
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		run := runConfig(t, c)
		data, ok := prepared[run.Preset]
		if !ok {
			t.Fatalf("preset %q: no dataset size known to this test", run.Preset)
		}
		cfg, err := unet.Preset(run.Model)
		if err != nil {
			t.Fatal(err)
		}
		params, err := unet.NumParams(cfg)
		if err != nil {
			t.Fatal(err)
		}
		need := int64(run.KeepCheckpoints+4)*16*int64(params) + data + 1<<30 // + 1 GiB for run.yaml, logs, slack
		var got int64 = -1
		for _, pvc := range c.trainer.Spec.VolumeClaimTemplates {
			if pvc.Name == "data" {
				q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
				got = q.Value()
			}
		}
		if got < need {
			t.Errorf("trainer volume requests %d bytes; the run needs at least %d (%d checkpoints of %d parameters x 16 bytes, %d bytes of prepared data, 1 GiB)",
				got, need, run.KeepCheckpoints+4, params, data)
		}
		t.Logf("trainer volume %.1f GiB, run needs %.1f GiB", float64(got)/(1<<30), float64(need)/(1<<30))
	})
}

// podSpecs returns every pod template of the rendering, by component.
func podSpecs(c *cluster) map[string]*corev1.PodTemplateSpec {
	return map[string]*corev1.PodTemplateSpec{"coordinator": &c.coordinator.Spec.Template, "trainer": &c.trainer.Spec.Template}
}

func TestSecurityAndResources(t *testing.T) {
	image := readContainerfile(t)
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		for comp, pt := range podSpecs(c) {
			ps := pt.Spec
			if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
				t.Errorf("%s: the pods need no API token; set automountServiceAccountToken: false", comp)
			}
			psc := ps.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Fatalf("%s: pod securityContext must run as a non-root uid", comp)
			}
			if strconv.FormatInt(*psc.RunAsUser, 10) != image.uid {
				t.Errorf("%s: runAsUser %d, the image's USER is %s", comp, *psc.RunAsUser, image.uid)
			}
			if psc.FSGroup == nil {
				t.Errorf("%s: fsGroup unset: the non-root user could not write its volume", comp)
			}
			all := append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...)
			for _, ctr := range all {
				sc := ctr.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s/%s: readOnlyRootFilesystem must be true", comp, ctr.Name)
				}
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s/%s: allowPrivilegeEscalation must be false", comp, ctr.Name)
				}
				if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
					t.Errorf("%s/%s: capabilities must drop ALL", comp, ctr.Name)
				}
				if sc != nil && sc.Privileged != nil && *sc.Privileged {
					t.Errorf("%s/%s: privileged", comp, ctr.Name)
				}
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, okr := ctr.Resources.Requests[res]
					lim, okl := ctr.Resources.Limits[res]
					if !okr || !okl || req.Cmp(lim) > 0 {
						t.Errorf("%s/%s: %s needs a request no larger than its limit (got %v, %v)", comp, ctr.Name, res, req, lim)
					}
				}
				if ctr.Image != "" && !strings.HasSuffix(strings.Split(ctr.Image, ":")[len(strings.Split(ctr.Image, ":"))-2], "ddpm") {
					t.Errorf("%s/%s: image %q is not the ddpm image", comp, ctr.Name, ctr.Image)
				}
			}
			for _, ctr := range ps.Containers {
				if ctr.LivenessProbe == nil || ctr.ReadinessProbe == nil {
					t.Errorf("%s/%s: liveness and readiness probes are required", comp, ctr.Name)
				}
				for _, pr := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe, ctr.StartupProbe} {
					if pr == nil {
						continue
					}
					switch {
					case pr.HTTPGet != nil:
						containerPort(t, ctr, pr.HTTPGet.Port.String())
					case pr.TCPSocket != nil:
						containerPort(t, ctr, pr.TCPSocket.Port.String())
					default:
						t.Errorf("%s/%s: unexpected probe handler", comp, ctr.Name)
					}
				}
			}
		}
	})
}

// httpProbes checks that ctr's probes are HTTP GETs on its container port named port and
// returns their paths ("" for a probe ctr does not have).
func httpProbes(t *testing.T, ctr corev1.Container, port string) (startup, readiness, liveness string) {
	t.Helper()
	path := func(kind string, pr *corev1.Probe) string {
		if pr == nil {
			return ""
		}
		if pr.HTTPGet == nil {
			t.Fatalf("%s %s probe: want an HTTP GET (a TCP connect or exec cannot tell a wedged process)", ctr.Name, kind)
		}
		if pr.HTTPGet.Port.String() != port {
			t.Fatalf("%s %s probe on port %q, want the %q port", ctr.Name, kind, pr.HTTPGet.Port.String(), port)
		}
		containerPort(t, ctr, port)
		return pr.HTTPGet.Path
	}
	return path("startup", ctr.StartupProbe), path("readiness", ctr.ReadinessProbe), path("liveness", ctr.LivenessProbe)
}

// startDDPM starts the binary with args. stop sends SIGTERM and waits (SIGKILL after 10 s); it
// also runs at the end of the test.
func startDDPM(t *testing.T, args ...string) (logs *testutil.SyncBuffer, stop func()) {
	t.Helper()
	cmd := exec.Command(ddpmBin, args...)
	logs = &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return logs, stop
}

// get GETs url and returns its status code and body (code 0: no answer, with the error).
func get(url string) (int, string, error) {
	cl := &http.Client{Timeout: time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitStatus GETs url until it answers code, for up to 20 s, and returns the body.
func waitStatus(t *testing.T, url string, code int, logs ...*testutil.SyncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, body, err := get(url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			var out strings.Builder
			for _, l := range logs {
				out.WriteString(l.String())
			}
			t.Fatalf("GET %s: %d %q (%v), want %d within 20 s\n%s", url, got, body, err, code, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProbesHitRealEndpoints runs a real trainer and a real one-replica coordinator on loopback
// and asks them the manifests' probe paths on the ports the probes name (TestCoordinatorCommandLine
// and TestTrainerCommandLine tie those ports to --http-addr): the trainer's startup and liveness
// path answers 200 while it waits for coordinators that are not up yet, its readiness path 503;
// once the coordinator admits it (a standby waiting for min_trainers) readiness answers 200; when
// the coordinator is gone, readiness returns to 503 within the heartbeat timeout while liveness
// stays 200: waiting on the cluster is no reason to restart a trainer.
func TestProbesHitRealEndpoints(t *testing.T) {
	c := load(t, "cpu")
	coordCtr := container(t, c.coordinator, "coordinator", false)
	_, cReady, cLive := httpProbes(t, coordCtr, "http")
	trCtr := container(t, c.trainer, "trainer", false)
	tStart, tReady, tLive := httpProbes(t, trCtr, "http")
	if tStart != "/healthz" || tLive != "/healthz" || tReady != "/readyz" {
		t.Fatalf("trainer probes: startup %q, liveness %q, readiness %q; want /healthz, /healthz, /readyz", tStart, tLive, tReady)
	}

	// The overlay's run, on the MNIST copy the binary knows, with two trainers needed (so the one
	// here waits as a member instead of training) and a short heartbeat timeout.
	run := runConfig(t, c)
	mnist, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Dataset, run.DatasetFingerprint = mnist.Dataset, ""
	run.MinTrainers, run.MaxTrainers = 2, max(2, run.MaxTrainers)
	run.HeartbeatTimeout = config.Duration(time.Second)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfg, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 5)
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	raft, grpc, coordHTTP, ring, trHTTP := addr(ports[0]), addr(ports[1]), addr(ports[2]), addr(ports[3]), addr(ports[4])
	// Plain text on loopback: the probes are what is tested.
	trLogs, _ := startDDPM(t, "trainer", "--id", "ddpm-trainer-0", "--coordinator", grpc, "--listen", ring,
		"--http-addr", trHTTP, "--data-dir", filepath.Join(dir, "trainer"), "--config", cfg, "--insecure")
	tr := "http://" + trHTTP

	// Up (dataset open, model built), joining coordinators that are not there: live, not ready.
	body := waitStatus(t, tr+tStart, http.StatusOK, trLogs)
	if !strings.HasPrefix(body, "ok: joining the cluster") {
		t.Errorf("GET %s while joining: %q", tStart, body)
	}
	if code, body, err := get(tr + tReady); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not a member: joining the cluster") {
		t.Fatalf("GET %s while joining: %d %q (%v), want 503 not a member", tReady, code, body, err)
	}

	coLogs, stopCoord := startDDPM(t, "coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpc,
		"--http-addr", coordHTTP, "--peers", "c0="+raft+"="+grpc, "--data-dir", filepath.Join(dir, "coordinator"),
		"--bootstrap", "--config", cfg, "--insecure")
	co := "http://" + coordHTTP
	waitStatus(t, co+cReady, http.StatusOK, coLogs)
	waitStatus(t, co+cLive, http.StatusOK, coLogs)

	// Admitted, waiting for a second trainer: ready and live.
	body = waitStatus(t, tr+tReady, http.StatusOK, trLogs, coLogs)
	if !strings.HasPrefix(body, "ok: waiting for an assignment (for ") {
		t.Errorf("GET %s of a member: %q", tReady, body)
	}
	if code, body, err := get(tr + tLive); code != http.StatusOK || !strings.HasPrefix(body, "ok: waiting for an assignment") {
		t.Fatalf("GET %s of a member: %d %q (%v)", tLive, code, body, err)
	}

	// The coordinator goes away: no longer a member within the heartbeat timeout, still live.
	stopCoord()
	t0 := time.Now()
	body = waitStatus(t, tr+tReady, http.StatusServiceUnavailable, trLogs)
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("readiness turned 503 %v after the coordinator stopped; heartbeat_timeout is 1s", d)
	}
	if !strings.HasPrefix(body, "not a member: no heartbeat acknowledged for ") {
		t.Errorf("GET %s without coordinators: %q", tReady, body)
	}
	if code, body, err := get(tr + tLive); code != http.StatusOK || !strings.HasPrefix(body, "ok: waiting for an assignment") {
		t.Fatalf("GET %s without coordinators: %d %q (%v), want 200: waiting is live", tLive, code, body, err)
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestServicesAndPDB(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		pods := podSpecs(c)
		for name, svc := range c.services {
			var matched []string
			for comp, pt := range pods {
				if selects(svc.Spec.Selector, pt.Labels) {
					matched = append(matched, comp)
				}
			}
			if len(matched) != 1 {
				t.Errorf("Service %s selects %v; want exactly one component", name, matched)
				continue
			}
			pt := pods[matched[0]]
			for _, sp := range svc.Spec.Ports {
				ok := false
				for _, ctr := range pt.Spec.Containers {
					for _, cp := range ctr.Ports {
						if cp.Name == sp.TargetPort.String() && cp.ContainerPort == sp.Port {
							ok = true
						}
					}
				}
				if !ok {
					t.Errorf("Service %s port %s (%d -> %s) matches no container port of the %s pods", name, sp.Name, sp.Port, sp.TargetPort.String(), matched[0])
				}
			}
		}
		dash := c.services["ddpm-dashboard"]
		if dash == nil || !selects(dash.Spec.Selector, c.coordinator.Spec.Template.Labels) {
			t.Errorf("ddpm-dashboard must front the coordinators")
		}
		if len(c.pdbs) != 1 {
			t.Fatalf("want one PodDisruptionBudget, got %d", len(c.pdbs))
		}
		for name, pdb := range c.pdbs {
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
				t.Errorf("PDB %s: want maxUnavailable 1", name)
			}
			if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, c.coordinator.Spec.Template.Labels) ||
				selects(pdb.Spec.Selector.MatchLabels, c.trainer.Spec.Template.Labels) {
				t.Errorf("PDB %s must select the coordinators only", name)
			}
		}
	})
}

type edge struct {
	from, to string
	port     int
}

func TestNetworkPolicy(t *testing.T) {
	forEachOverlay(t, func(t *testing.T, c *cluster) {
		pods := podSpecs(c)
		component := func(sel map[string]string) string {
			var m []string
			for comp, pt := range pods {
				if selects(sel, pt.Labels) {
					m = append(m, comp)
				}
			}
			if len(m) != 1 {
				return ""
			}
			return m[0]
		}
		portsOf := func(comp string) map[int]bool {
			out := map[int]bool{}
			for _, ctr := range pods[comp].Spec.Containers {
				for _, p := range ctr.Ports {
					out[int(p.ContainerPort)] = true
				}
			}
			return out
		}
		coord := container(t, c.coordinator, "coordinator", false)
		tr := container(t, c.trainer, "trainer", false)
		want := map[edge]bool{
			{"coordinator", "coordinator", containerPort(t, coord, "raft")}: true,
			{"coordinator", "coordinator", containerPort(t, coord, "grpc")}: true,
			{"trainer", "coordinator", containerPort(t, coord, "grpc")}:     true,
			{"trainer", "trainer", containerPort(t, tr, "ring")}:            true,
		}
		ingress, egress := map[edge]bool{}, map[edge]bool{}
		for _, name := range []string{"ddpm-coordinator", "ddpm-trainer"} {
			np := c.netpols[name]
			if np == nil {
				t.Fatalf("NetworkPolicy %s is missing", name)
			}
			self := component(np.Spec.PodSelector.MatchLabels)
			if self == "" {
				t.Fatalf("NetworkPolicy %s selects no single component", name)
			}
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				t.Errorf("NetworkPolicy %s must restrict ingress and egress", name)
			}
			for _, r := range np.Spec.Ingress {
				for _, peer := range r.From {
					if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
						t.Errorf("%s: ingress from %+v: only ddpm pods may connect", name, peer)
						continue
					}
					for _, p := range r.Ports {
						ingress[edge{component(peer.PodSelector.MatchLabels), self, p.Port.IntValue()}] = true
					}
				}
			}
			for _, r := range np.Spec.Egress {
				for _, peer := range r.To {
					dns := peer.PodSelector != nil && peer.PodSelector.MatchLabels["k8s-app"] == "kube-dns"
					if dns {
						for _, p := range r.Ports {
							if p.Port.IntValue() != 53 {
								t.Errorf("%s: DNS egress on port %d", name, p.Port.IntValue())
							}
						}
						continue
					}
					if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
						t.Errorf("%s: egress to %+v: only ddpm pods and DNS are allowed", name, peer)
						continue
					}
					for _, p := range r.Ports {
						egress[edge{self, component(peer.PodSelector.MatchLabels), p.Port.IntValue()}] = true
					}
				}
			}
		}
		for what, got := range map[string]map[edge]bool{"ingress": ingress, "egress": egress} {
			for e := range got {
				if !want[e] {
					t.Errorf("%s allows %s -> %s on %d, which the cluster does not use", what, e.from, e.to, e.port)
				}
			}
			for e := range want {
				if !got[e] {
					t.Errorf("%s does not allow %s -> %s on %d, which the cluster needs", what, e.from, e.to, e.port)
				}
			}
		}
		// The monitoring policy opens only HTTP ports that exist.
		mon := c.netpols["ddpm-monitoring"]
		for _, r := range mon.Spec.Ingress {
			for _, p := range r.Ports {
				if !portsOf("coordinator")[p.Port.IntValue()] && !portsOf("trainer")[p.Port.IntValue()] {
					t.Errorf("ddpm-monitoring opens port %d, which no container declares", p.Port.IntValue())
				}
				if want[edge{"trainer", "trainer", p.Port.IntValue()}] || want[edge{"coordinator", "coordinator", p.Port.IntValue()}] || want[edge{"trainer", "coordinator", p.Port.IntValue()}] {
					t.Errorf("ddpm-monitoring opens cluster port %d to outsiders", p.Port.IntValue())
				}
			}
		}
	})
}

func TestGPUOverlay(t *testing.T) {
	c := load(t, "gpu")
	ps := c.trainer.Spec.Template.Spec
	tr := container(t, c.trainer, "trainer", false)
	if q, ok := tr.Resources.Limits["nvidia.com/gpu"]; !ok || q.Value() != 1 {
		t.Errorf("trainer limits nvidia.com/gpu = %v, want 1", tr.Resources.Limits["nvidia.com/gpu"])
	}
	tolerated := false
	for _, tol := range ps.Tolerations {
		if tol.Key == "nvidia.com/gpu" && tol.Operator == corev1.TolerationOpExists && tol.Effect == corev1.TaintEffectNoSchedule {
			tolerated = true
		}
	}
	if !tolerated || len(ps.NodeSelector) == 0 {
		t.Errorf("the gpu trainers need a nodeSelector and the nvidia.com/gpu toleration")
	}
	// The cifar10 U-Net and CIFAR-10 take longer to load than MNIST and the tiny U-Net: the
	// startup probe (on the same /healthz) allows 10 minutes, the base 5.
	if st, _, _ := httpProbes(t, tr, "http"); st != "/healthz" {
		t.Errorf("gpu trainer startup probe path %q, want /healthz", st)
	}
	budget := func(p *corev1.Probe) int32 { return p.PeriodSeconds * p.FailureThreshold }
	if got := budget(tr.StartupProbe); got != 600 {
		t.Errorf("gpu trainer startup probe allows %d s, want 600", got)
	}
	if got := budget(container(t, load(t, "cpu").trainer, "trainer", false).StartupProbe); got != 300 {
		t.Errorf("cpu trainer startup probe allows %d s, want 300", got)
	}
	coordPS := c.coordinator.Spec.Template.Spec
	if len(coordPS.Tolerations) != 0 || len(coordPS.NodeSelector) != 0 {
		t.Errorf("coordinators need no GPU node")
	}
	cpu := load(t, "cpu")
	if _, ok := container(t, cpu.trainer, "trainer", false).Resources.Limits["nvidia.com/gpu"]; ok {
		t.Errorf("the cpu overlay requests a GPU")
	}
}

// ---- the image recipe ----

type containerfile struct {
	uid string
}

func readContainerfile(t *testing.T) containerfile {
	t.Helper()
	b, err := os.ReadFile("../../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var cf containerfile
	if m := regexp.MustCompile(`(?m)^USER (\d+)(:\d+)?$`).FindStringSubmatch(text); m != nil {
		cf.uid = m[1]
	} else {
		t.Fatalf("Containerfile: no numeric USER")
	}
	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(text, -1)); n < 2 {
		t.Errorf("Containerfile has %d stages; want a build and a runtime stage", n)
	}
	if !regexp.MustCompile(`(?m)^COPY --from=build \S+ ` + regexp.QuoteMeta(binInImage) + `$`).MatchString(text) {
		t.Errorf("Containerfile does not install the binary at %s", binInImage)
	}
	m := regexp.MustCompile(`(?m)^ENV ` + regexp.QuoteMeta(dataset.EnvMNISTDir) + `=(\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Errorf("Containerfile does not set %s (the image has no Go module cache)", dataset.EnvMNISTDir)
	} else if !strings.Contains(text, "/out/mnist/ "+m[1]) {
		t.Errorf("%s=%s is not where the MNIST files are copied", dataset.EnvMNISTDir, m[1])
	}
	return cf
}

func TestContainerfile(t *testing.T) { readContainerfile(t) }
