package deploy

// The Kubernetes manifests (deploy/kubernetes) and the Istio example
// (examples/istio), decoded strictly: every document into its Kubernetes API
// type (k8s.io/api) or, for Istio's resources, the metadata into
// k8s.io/apimachinery's ObjectMeta and the spec into Istio's own API message
// (istio.io/api, protojson), with unknown and duplicate fields refused. Then
// what ties them together: selectors, named ports, volumes, the Secret and
// ConfigMap they name, the paths the collector's configuration points at,
// the Istio cluster names of the Service, and the configuration itself
// checked by the real binary.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	telemetryv1 "istio.io/api/telemetry/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// doc is one YAML document of a file.
type doc struct {
	file string
	json []byte
	meta metav1.TypeMeta
}

func (d doc) String() string {
	return fmt.Sprintf("%s (%s %s)", d.file, d.meta.APIVersion, d.meta.Kind)
}

// documents reads every YAML document of the files matching glob.
func documents(t *testing.T, glob string) []doc {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), glob))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", glob, err)
	}
	var docs []doc
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot(t), file)
		reader := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			raw, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			if len(bytes.TrimSpace(stripComments(raw))) == 0 {
				continue
			}
			js, err := yaml.YAMLToJSONStrict(raw)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			d := doc{file: rel, json: js}
			if err := json.Unmarshal(js, &d.meta); err != nil || d.meta.Kind == "" || d.meta.APIVersion == "" {
				t.Fatalf("%s: a document without apiVersion and kind (%v):\n%s", rel, err, raw)
			}
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(raw []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// strict decodes JSON into out, refusing unknown fields and trailing data.
func strict(data []byte, out any) error {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(out); err != nil {
		return err
	}
	if decoder.More() {
		return errors.New("trailing data")
	}
	return nil
}

// istioObject is an Istio resource: Kubernetes metadata, an Istio API spec.
type istioObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec"`
}

// decodeIstio decodes an Istio resource's spec strictly into its API message.
func decodeIstio(d doc, spec proto.Message) (metav1.ObjectMeta, error) {
	var object istioObject
	if err := strict(d.json, &object); err != nil {
		return object.ObjectMeta, err
	}
	// protojson refuses unknown fields unless told to discard them.
	return object.ObjectMeta, protojson.Unmarshal(object.Spec, spec)
}

// kubeObjects holds the decoded manifests by kind.
type kubeObjects struct {
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	services        []corev1.Service
	statefulSets    []appsv1.StatefulSet
}

// add decodes data strictly into a new item of list.
func add[T any](list *[]T, data []byte) error {
	var item T
	if err := strict(data, &item); err != nil {
		return err
	}
	*list = append(*list, item)
	return nil
}

func decodeKube(t *testing.T, docs []doc) kubeObjects {
	t.Helper()
	var objects kubeObjects
	for _, d := range docs {
		var err error
		switch d.meta.APIVersion + " " + d.meta.Kind {
		case "v1 Namespace":
			err = add(&objects.namespaces, d.json)
		case "v1 ServiceAccount":
			err = add(&objects.serviceAccounts, d.json)
		case "v1 ConfigMap":
			err = add(&objects.configMaps, d.json)
		case "v1 Secret":
			err = add(&objects.secrets, d.json)
		case "v1 Service":
			err = add(&objects.services, d.json)
		case "apps/v1 StatefulSet":
			err = add(&objects.statefulSets, d.json)
		default:
			t.Fatalf("%s: a kind this test does not know: add it", d)
		}
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	return objects
}

func TestStrictDecodingRefusesUnknownAndDuplicateFields(t *testing.T) {
	// The decoders above must fail on a typo, or the tests below prove nothing.
	var pod corev1.PodSpec
	if err := strict([]byte(`{"enableServiceLink": false}`), &pod); err == nil {
		t.Fatal("unknown field enableServiceLink accepted")
	}
	if _, err := yaml.YAMLToJSONStrict([]byte("a: 1\na: 2\n")); err == nil {
		t.Fatal("duplicate key accepted")
	}
	var plugin extensionsv1alpha1.WasmPlugin
	if err := protojson.Unmarshal([]byte(`{"url": "oci://x", "pluginConfg": {}}`), &plugin); err == nil {
		t.Fatal("unknown WasmPlugin field pluginConfg accepted")
	}
}

func named[T any](t *testing.T, items []T, name func(T) string, want string) T {
	t.Helper()
	for _, item := range items {
		if name(item) == want {
			return item
		}
	}
	t.Fatalf("no %T named %q", *new(T), want)
	return *new(T)
}

func TestKubernetesManifestsAreValidAndWiredTogether(t *testing.T) {
	docs := documents(t, "deploy/kubernetes/*.yaml")
	objects := decodeKube(t, docs)
	if len(objects.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want the collector's one", len(objects.statefulSets))
	}
	sts := objects.statefulSets[0]
	pod := sts.Spec.Template.Spec
	const namespace = "observability"
	named(t, objects.namespaces, func(n corev1.Namespace) string { return n.Name }, namespace)

	// Everything in one namespace; selectors select the pod.
	labels := sts.Spec.Template.Labels
	matches := func(selector map[string]string) bool {
		for k, v := range selector {
			if labels[k] != v {
				return false
			}
		}
		return len(selector) > 0
	}
	if sts.Spec.Selector == nil || !matches(sts.Spec.Selector.MatchLabels) {
		t.Errorf("StatefulSet selector %v does not select its pod template %v", sts.Spec.Selector, labels)
	}
	for _, d := range docs {
		var object struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(d.json, &object); err != nil {
			t.Fatal(err)
		}
		if d.meta.Kind != "Namespace" && object.Metadata.Namespace != namespace {
			t.Errorf("%s %s in namespace %q, not %s", d, object.Metadata.Name, object.Metadata.Namespace, namespace)
		}
	}

	// The kubelet's service-link variables (MODELGATE_SERVICE_HOST...) stay
	// out of the collector's environment.
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false: a Service named modelgate puts MODELGATE_* variables into the pod")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("the pod may run as root")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	container := pod.Containers[0]
	if sc := container.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container's root filesystem is writable or it may escalate privileges")
	}
	ports := map[string]int32{}
	for _, p := range container.Ports {
		ports[p.Name] = p.ContainerPort
	}

	// Probes on the admin port: /healthz for liveness (and startup),
	// /readyz for readiness.
	for _, probe := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", container.LivenessProbe, "/healthz"},
		{"startupProbe", container.StartupProbe, "/healthz"},
		{"readinessProbe", container.ReadinessProbe, "/readyz"},
	} {
		if probe.probe == nil || probe.probe.HTTPGet == nil || probe.probe.HTTPGet.Path != probe.path ||
			probe.probe.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s: want GET %s on the admin port, have %+v", probe.what, probe.path, probe.probe)
		}
	}

	// Services: every target port is a named container port; OTLP/gRPC on
	// 4317 says appProtocol grpc (Istio speaks HTTP/2 to it only then).
	service := named(t, objects.services, func(s corev1.Service) string { return s.Name }, "modelgate")
	headless := named(t, objects.services, func(s corev1.Service) string { return s.Name }, sts.Spec.ServiceName)
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet serviceName %s is not headless", headless.Name)
	}
	for _, s := range []corev1.Service{service, headless} {
		if !matches(s.Spec.Selector) {
			t.Errorf("Service %s selector %v does not select the pod %v", s.Name, s.Spec.Selector, labels)
		}
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.StrVal]; !ok {
				t.Errorf("Service %s port %s: targetPort %q is no container port (%v)", s.Name, p.Name, p.TargetPort.String(), ports)
			}
			if p.Port == 4317 && (p.AppProtocol == nil || *p.AppProtocol != "grpc") {
				t.Errorf("Service %s port 4317 without appProtocol: grpc", s.Name)
			}
		}
	}

	// Volumes: each mount has its volume; the ConfigMap and the Secret exist.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	claims := map[string]bool{}
	for _, c := range sts.Spec.VolumeClaimTemplates {
		claims[c.Name] = true
	}
	mounts := map[string]string{}
	for _, m := range container.VolumeMounts {
		mounts[m.Name] = m.MountPath
		if _, ok := volumes[m.Name]; !ok && !claims[m.Name] {
			t.Errorf("volumeMount %s has no volume or volume claim template", m.Name)
		}
	}
	var configMap corev1.ConfigMap
	var configKey string
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			configMap = named(t, objects.configMaps, func(c corev1.ConfigMap) string { return c.Name }, v.ConfigMap.Name)
			configKey = mounts[v.Name]
		case v.Secret != nil:
			secret := named(t, objects.secrets, func(s corev1.Secret) string { return s.Name }, v.Secret.SecretName)
			if _, ok := secret.StringData["token"]; !ok {
				t.Errorf("Secret %s has no token key", secret.Name)
			}
		}
	}

	// The container is started with the mounted configuration file.
	if len(container.Args) != 2 || container.Args[0] != "--config" || filepath.Dir(container.Args[1]) != configKey {
		t.Fatalf("args %v do not name a file in the config volume (%s)", container.Args, configKey)
	}
	configText, ok := configMap.Data[filepath.Base(container.Args[1])]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", configMap.Name, filepath.Base(container.Args[1]))
	}

	// The real binary accepts that configuration, and it points at the
	// mounted token and snapshot volume and listens on the Service's ports.
	configFile := filepath.Join(t.TempDir(), "modelgate.yaml")
	if err := os.WriteFile(configFile, []byte(configText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(modelgateBin(t), "--config", configFile, "config")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("modelgate refuses the ConfigMap's configuration: %v\n%s", err, out)
	}
	var effective struct {
		Receiver struct {
			GrpcListen string `json:"grpc_listen"`
			HTTPListen string `json:"http_listen"`
		} `json:"receiver"`
		Admin struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Auth struct {
			TokenFile string `json:"token_file"`
		} `json:"auth"`
		Snapshot struct {
			Dir string `json:"dir"`
		} `json:"snapshot"`
	}
	if err := yaml.Unmarshal(out, &effective); err != nil {
		t.Fatalf("modelgate config: %v\n%s", err, out)
	}
	for listen, port := range map[string]string{
		effective.Receiver.GrpcListen: "otlp-grpc", effective.Receiver.HTTPListen: "otlp-http", effective.Admin.Listen: "admin",
	} {
		if listen != fmt.Sprintf("0.0.0.0:%d", ports[port]) {
			t.Errorf("modelgate listens on %s, the %s container port is %d", listen, port, ports[port])
		}
	}
	if want := filepath.Join(mounts["token"], "token"); effective.Auth.TokenFile != want {
		t.Errorf("auth.token_file %s, the Secret is mounted as %s", effective.Auth.TokenFile, want)
	}
	if effective.Snapshot.Dir != mounts["snapshot"] || !claims["snapshot"] {
		t.Errorf("snapshot.dir %s, the snapshot volume claim is mounted at %s", effective.Snapshot.Dir, mounts["snapshot"])
	}

	// The container image runs as the same user and exposes the same ports.
	containerfile, err := os.ReadFile(repoFile(t, "deploy/container/Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	user := fmt.Sprintf("USER %d:%d", *pod.SecurityContext.RunAsUser, *pod.SecurityContext.RunAsGroup)
	expose := fmt.Sprintf("EXPOSE %d %d %d", ports["otlp-grpc"], ports["otlp-http"], ports["admin"])
	for _, line := range []string{user, expose} {
		if !slices.Contains(strings.Split(string(containerfile), "\n"), line) {
			t.Errorf("deploy/container/Containerfile has no line %q", line)
		}
	}

	// The Istio example reaches this Service: its Envoy cluster names are
	// Istio's outbound names of the Service's OTLP/gRPC and admin ports.
	servicePorts := map[string]int32{}
	for _, p := range service.Spec.Ports {
		servicePorts[p.Name] = p.Port
	}
	host := fmt.Sprintf("%s.%s.svc.cluster.local", service.Name, service.Namespace)
	for _, f := range istioFilters(t) {
		// OTLP/HTTP export goes to the Service's otlp-http port, gRPC to otlp-grpc.
		collectorPort := "otlp-grpc"
		if f.config["export_protocol"] == "http" {
			collectorPort = "otlp-http"
		}
		for key, port := range map[string]string{"collector_cluster": collectorPort, "query_cluster": "admin"} {
			if want := fmt.Sprintf("outbound|%d||%s", servicePorts[port], host); f.config[key] != want {
				t.Errorf("%s %s is %v, the Service's %s port is %s", f.file, key, f.config[key], port, want)
			}
		}
		for _, key := range []string{"query_authority", "collector_authority"} {
			if v, ok := f.config[key]; ok && v != host {
				t.Errorf("%s %s is %v, want %s", f.file, key, v, host)
			}
		}
		// The image reference scripts/package-filter's output is pushed to.
		if !regexp.MustCompile(`^oci://[^/]+/.+:[A-Za-z0-9_][A-Za-z0-9._-]*$`).MatchString(f.url) {
			t.Errorf("%s: url %q is not an oci:// image reference", f.file, f.url)
		}
	}
}

// istioFilter is the edge filter as one Istio resource loads it.
type istioFilter struct {
	file   string
	url    string
	config map[string]any
}

// istioFilters decodes examples/istio strictly and returns the filter of
// each WasmPlugin and TrafficExtension (its successor, Istio 1.30+).
func istioFilters(t *testing.T) []istioFilter {
	t.Helper()
	var filters []istioFilter
	for _, d := range documents(t, "examples/istio/*.yaml") {
		var spec proto.Message
		switch d.meta.APIVersion + " " + d.meta.Kind {
		case "extensions.istio.io/v1alpha1 WasmPlugin":
			spec = &extensionsv1alpha1.WasmPlugin{}
		case "extensions.istio.io/v1alpha1 TrafficExtension":
			spec = &extensionsv1alpha1.TrafficExtension{}
		case "networking.istio.io/v1 DestinationRule":
			spec = &networkingv1.DestinationRule{}
		case "networking.istio.io/v1 VirtualService":
			spec = &networkingv1.VirtualService{}
		case "telemetry.istio.io/v1 Telemetry":
			spec = &telemetryv1.Telemetry{}
		default:
			t.Fatalf("%s: a kind this test does not know: add it", d)
		}
		if _, err := decodeIstio(d, spec); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		switch s := spec.(type) {
		case *extensionsv1alpha1.WasmPlugin:
			filters = append(filters, istioFilter{d.file, s.GetUrl(), s.GetPluginConfig().AsMap()})
		case *extensionsv1alpha1.TrafficExtension:
			if s.GetWasm() == nil {
				t.Fatalf("%s: no wasm filter", d)
			}
			filters = append(filters, istioFilter{d.file, s.GetWasm().GetUrl(), s.GetWasm().GetPluginConfig().AsMap()})
		}
	}
	if len(filters) == 0 {
		t.Fatal("examples/istio has no WasmPlugin or TrafficExtension")
	}
	return filters
}
