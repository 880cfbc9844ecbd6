// Command validate decodes every manifest in a folder strictly against the official
// Kubernetes API types (k8s.io/api): an unknown or misspelt field, a wrong type or a
// duplicate key is an error, as `kubectl apply --validate=strict` would report, but
// offline. It then checks what ties the manifests to the image and to each other:
// probes on the worker's health port and path, a grace period that covers the drain,
// non-root with a read-only root and /tmp writable, HPA and PDB aimed at the Deployment.
//
// Usage (from this folder): go run . ..
// Exit status 1 with one line per problem ("file: problem").
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The image's contract (Dockerfile, agent/config.py).
const (
	healthPath = "/"
	imageUID   = 10001
	writableAt = "/tmp"
)

type manifests struct {
	deployments []*appsv1.Deployment
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	pdbs        []*policyv1.PodDisruptionBudget
}

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	problems := run(dir)
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Println("manifests OK")
}

func run(dir string) []string {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return []string{fmt.Sprintf("%s: no *.yaml manifests", dir)}
	}
	sort.Strings(files)
	var ms manifests
	var problems []string
	for _, f := range files {
		if err := decode(f, &ms); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", filepath.Base(f), err))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return append(problems, check(&ms)...)
}

func decode(path string, ms *manifests) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(data, []byte("\n---")) {
		return fmt.Errorf("one object per file, please")
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return err
	}
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/Deployment":
		obj := &appsv1.Deployment{}
		ms.deployments = append(ms.deployments, obj)
		return yaml.UnmarshalStrict(data, obj)
	case "autoscaling/v2/HorizontalPodAutoscaler":
		obj := &autoscalingv2.HorizontalPodAutoscaler{}
		ms.hpas = append(ms.hpas, obj)
		return yaml.UnmarshalStrict(data, obj)
	case "policy/v1/PodDisruptionBudget":
		obj := &policyv1.PodDisruptionBudget{}
		ms.pdbs = append(ms.pdbs, obj)
		return yaml.UnmarshalStrict(data, obj)
	}
	return fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
}

func check(ms *manifests) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(ms.deployments) != 1 {
		return []string{fmt.Sprintf("want one Deployment, found %d", len(ms.deployments))}
	}
	d := ms.deployments[0]
	pod := d.Spec.Template
	if d.Spec.Selector == nil {
		bad("deployment: no selector")
	} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		bad("deployment: selector does not match the pod template's labels")
	}
	if len(pod.Spec.Containers) != 1 {
		return append(problems, "deployment: want one container (the worker)")
	}
	c := pod.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	healthPort, err := strconv.Atoi(env["HEALTH_PORT"])
	if err != nil {
		bad("deployment: HEALTH_PORT must be set to a port number (got %q)", env["HEALTH_PORT"])
	}
	for name, probe := range map[string]*corev1.Probe{
		"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe,
	} {
		if probe == nil || probe.HTTPGet == nil {
			bad("deployment: %s must be an httpGet probe", name)
			continue
		}
		if probe.HTTPGet.Path != healthPath {
			bad("deployment: %s path %q, the worker answers on %q", name, probe.HTTPGet.Path, healthPath)
		}
		if port := resolvePort(c, probe.HTTPGet.Port.String()); port != healthPort {
			bad("deployment: %s port %s is %d, HEALTH_PORT is %d", name, probe.HTTPGet.Port.String(), port, healthPort)
		}
	}
	drain, err := strconv.Atoi(env["DRAIN_TIMEOUT"])
	if err != nil {
		bad("deployment: DRAIN_TIMEOUT must be set in seconds (got %q)", env["DRAIN_TIMEOUT"])
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < int64(drain) {
		bad("deployment: terminationGracePeriodSeconds must be >= DRAIN_TIMEOUT (%d)", drain)
	}
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != imageUID {
		bad("deployment: pod securityContext must be runAsNonRoot with runAsUser %d (the image's user)", imageUID)
	}
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		bad("deployment: the worker's root filesystem must be read-only")
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		bad("deployment: allowPrivilegeEscalation must be false")
	}
	tmp := false
	for _, m := range c.VolumeMounts {
		tmp = tmp || (m.MountPath == writableAt && !m.ReadOnly)
	}
	if !tmp {
		bad("deployment: %s must be a writable volume (the root is read-only)", writableAt)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		bad("deployment: CPU and memory requests must be set (the HPA scales on CPU utilisation)")
	}
	for _, h := range ms.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
			bad("hpa %s: scaleTargetRef is %s %s, not the Deployment %s", h.Name, ref.Kind, ref.Name, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			bad("hpa %s: needs 1 <= minReplicas <= maxReplicas", h.Name)
		}
	}
	for _, p := range ms.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || p.Spec.Selector == nil || !sel.Matches(labels.Set(pod.Labels)) {
			bad("pdb %s: selector does not match the Deployment's pods", p.Name)
		}
	}
	if len(ms.hpas) != 1 || len(ms.pdbs) != 1 {
		bad("want one HorizontalPodAutoscaler and one PodDisruptionBudget, found %d and %d", len(ms.hpas), len(ms.pdbs))
	}
	return problems
}

// resolvePort turns a probe's port (number or container port name) into a number.
func resolvePort(c corev1.Container, port string) int {
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return n
}
