package deploy

// The rollout controllers' wiring against a live collector fed the lending
// incident (v1.3 regresses: REGRESSION) and the A/A scenario (v2 the same
// as v1: PASS), plus a candidate it never saw (INCONCLUSIVE):
//
//   - Argo Rollouts: examples/argo-rollouts decoded strictly into Argo's
//     types; the Rollout's analysis step turned into an AnalysisRun by
//     Argo's own code (argument resolution from the Rollout, template
//     merge, metric validation), and each measurement taken by Argo's web
//     metric provider, which evaluates the template's successCondition and
//     failureCondition with Argo's expression evaluation (expr-lang).
//     Not run: Argo's controller loop, which turns measurements into the
//     run's phase with count and the limits (its package drags in every
//     notification service), and its Secret lookup (the token is given as
//     the value it resolves to).
//   - Flagger: examples/flagger decoded strictly into Flagger's types; the
//     MetricTemplate's query rendered by Flagger's own renderer with the
//     Canary's variables and run by Flagger's Prometheus provider against
//     a real Prometheus scraping the collector. Not run: Flagger's
//     scheduler, whose thresholdRange comparison (two lines) is restated
//     here, and whose webhook call (POST, success up to HTTP 202) is too.
//   - examples/rollback-webhook: a real Alertmanager, configured with
//     examples/prometheus/alertmanager.yml, notifies it; it rolls lending
//     v1.3 back once and leaves a stale alert on aa v2 alone; and it answers
//     Flagger's confirm-promotion webhook with the verdict.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/metricproviders/webmetric"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/metrics/observers"
	"github.com/fluxcd/flagger/pkg/metrics/providers"
	log "github.com/sirupsen/logrus"
	"sigs.k8s.io/yaml"
)

// decodeExample decodes one YAML document of a repository file strictly.
func decodeExample(t *testing.T, rel string, out any) {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(mustRead(t, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	if err := strict(js, out); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

func mustRead(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(repoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// verdictCase is a candidate and what each controller must make of it.
type verdictCase struct {
	service, candidate string
	// modelgate's verdict on it.
	outcome string
	// Argo's measurement phase.
	argo v1alpha1.AnalysisPhase
	// Flagger's metric check: passes, or halts the advancement (a failed
	// check; `threshold` of them roll the canary back).
	flaggerPasses bool
}

var verdictCases = []verdictCase{
	{"lending-api", "v1.3", "VERDICT_OUTCOME_REGRESSION", v1alpha1.AnalysisPhaseFailed, false},
	{"aa-api", "v2", "VERDICT_OUTCOME_PASS", v1alpha1.AnalysisPhaseSuccessful, true},
	// Never seen: no traffic reached it yet.
	{"lending-api", "v9", "VERDICT_OUTCOME_INCONCLUSIVE", v1alpha1.AnalysisPhaseInconclusive, false},
}

func TestRolloutControllersActOnTheVerdictDuringTheIncidentReplays(t *testing.T) {
	c := incidents(t)
	for _, vc := range verdictCases {
		if got := c.verdict(t, vc.service, vc.candidate); got != vc.outcome {
			t.Fatalf("%s %s: verdict %s, want %s", vc.service, vc.candidate, got, vc.outcome)
		}
	}
	t.Run("argo-rollouts", func(t *testing.T) { testArgo(t, c) })
	t.Run("flagger-metric", func(t *testing.T) { testFlaggerMetric(t, c) })
	t.Run("rollback-webhook", func(t *testing.T) { testRollbackWebhook(t, c) })
}

func testArgo(t *testing.T, c *collector) {
	var template v1alpha1.AnalysisTemplate
	decodeExample(t, "examples/argo-rollouts/analysistemplate.yaml", &template)
	var rollout v1alpha1.Rollout
	decodeExample(t, "examples/argo-rollouts/rollout.yaml", &rollout)

	// The Rollout's analysis step, with its arguments resolved as Argo does
	// (the candidate from the pod template's version label).
	var step *v1alpha1.RolloutAnalysis
	for _, s := range rollout.Spec.Strategy.Canary.Steps {
		if s.Analysis != nil {
			step = s.Analysis
		}
	}
	if step == nil || len(step.Templates) != 1 || step.Templates[0].TemplateName != template.Name {
		t.Fatalf("the Rollout has no analysis step with template %s", template.Name)
	}
	stepArgs, err := analysisutil.BuildArgumentsForRolloutAnalysisRun(step.Args, nil, nil, &rollout)
	if err != nil {
		t.Fatal(err)
	}
	if got := *stepArgs[1].Value; stepArgs[1].Name != "candidate" || got != rollout.Spec.Template.Labels["version"] {
		t.Fatalf("the Rollout's candidate argument resolves to %s=%q, not its pod version label", stepArgs[1].Name, got)
	}

	measure := func(vc verdictCase, token string) v1alpha1.Measurement {
		t.Helper()
		args := []v1alpha1.Argument{
			{Name: "service", Value: &vc.service},
			{Name: "candidate", Value: &vc.candidate},
			// In the cluster: the Service of deploy/kubernetes, and the
			// Secret's value, which Argo's controller reads.
			{Name: "modelgate-url", Value: ptr("http://" + c.admin)},
			{Name: "token", Value: &token},
		}
		run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{&template}, nil,
			args, nil, nil, nil, nil, "lending-modelgate", "", rollout.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		if err := analysisutil.ValidateMetrics(run.Spec.Metrics); err != nil {
			t.Fatalf("Argo refuses the template's metrics: %v", err)
		}
		if len(run.Spec.Metrics) != 1 {
			t.Fatalf("%d metrics", len(run.Spec.Metrics))
		}
		metric, err := analysisutil.ResolveMetricArgs(run.Spec.Metrics[0], run.Spec.Args)
		if err != nil {
			t.Fatal(err)
		}
		client, err := webmetric.NewWebMetricHttpClient(*metric)
		if err != nil {
			t.Fatal(err)
		}
		parser, err := webmetric.NewWebMetricJsonParser(*metric)
		if err != nil {
			t.Fatal(err)
		}
		provider := webmetric.NewWebMetricProvider(*log.NewEntry(log.New()), client, parser)
		return provider.Run(run, *metric)
	}
	for _, vc := range verdictCases {
		m := measure(vc, c.token)
		t.Logf("Argo measurement for %s %s: %s (value %s) %s", vc.service, vc.candidate, m.Phase, m.Value, m.Message)
		if m.Phase != vc.argo || m.Value != fmt.Sprintf("%q", vc.outcome) {
			t.Errorf("%s %s: Argo measured %s with value %s, want %s with %q", vc.service, vc.candidate, m.Phase, m.Value, vc.argo, vc.outcome)
		}
	}
	// Without the token the verdict API refuses: an Error, not a verdict.
	if m := measure(verdictCases[1], "wrong-token"); m.Phase != v1alpha1.AnalysisPhaseError || !strings.Contains(m.Message, "401") {
		t.Errorf("with a wrong token Argo measured %s (%s), want Error with HTTP 401", m.Phase, m.Message)
	}

	// What Argo's controller makes of the measurements: these limits give
	// the run-level outcomes the template's comment promises.
	metric := template.Spec.Metrics[0]
	if metric.ConsecutiveSuccessLimit.IntValue() != 1 || metric.FailureLimit.IntValue() != 0 ||
		metric.InconclusiveLimit.IntValue() < metric.Count.IntValue() {
		t.Errorf("limits: consecutiveSuccessLimit %v (want 1: the first PASS succeeds), failureLimit %v (want 0: the first REGRESSION fails), inconclusiveLimit %v (want >= count %v: INCONCLUSIVE asks again until count)",
			metric.ConsecutiveSuccessLimit, metric.FailureLimit, metric.InconclusiveLimit, metric.Count)
	}
}

func ptr[T any](v T) *T { return &v }

// startPrometheus starts Prometheus scraping the collector every second with
// its token; returns its URL.
func startPrometheus(t *testing.T, c *collector) string {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(c.token), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "prometheus.yml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: modelgate
    authorization:
      credentials_file: %s
    static_configs:
      - targets: [%q]
`, tokenFile, c.admin)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	log := startProcess(t, exec.Command(tool(t, "prometheus"), "--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr))
	waitHTTP(t, "prometheus", "http://"+addr+"/-/ready", 30*time.Second, log)
	return "http://" + addr
}

func testFlaggerMetric(t *testing.T, c *collector) {
	var template flaggerv1.MetricTemplate
	decodeExample(t, "examples/flagger/metrictemplate.yaml", &template)
	var canary flaggerv1.Canary
	decodeExample(t, "examples/flagger/canary.yaml", &canary)
	var metric *flaggerv1.CanaryMetric
	for i, m := range canary.Spec.Analysis.Metrics {
		if m.TemplateRef != nil && m.TemplateRef.Name == template.Name {
			metric = &canary.Spec.Analysis.Metrics[i]
		}
	}
	if metric == nil || metric.ThresholdRange == nil {
		t.Fatalf("the Canary has no metric with template %s and a thresholdRange", template.Name)
	}

	prometheus := startPrometheus(t, c)
	// In the cluster: Prometheus' Service; here the test's own.
	template.Spec.Provider.Address = prometheus
	provider, err := providers.Factory{}.Provider(metric.Interval, template.Spec.Provider, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Flagger's check: the query's value within the Canary's thresholdRange
	// (pkg/controller/scheduler_metrics.go); no value halts the advancement.
	check := func(vc verdictCase) (bool, string) {
		// What Flagger's toMetricModel passes the template, with the
		// candidate's variables.
		variables := map[string]string{}
		for k, v := range metric.TemplateVariables {
			variables[k] = v
		}
		variables["service"], variables["candidate"] = vc.service, vc.candidate
		query, err := observers.RenderQuery(template.Spec.Query, flaggerv1.MetricTemplateModel{
			Name: canary.Name, Namespace: canary.Namespace, Target: canary.Spec.TargetRef.Name,
			Service: canary.Spec.TargetRef.Name, Interval: metric.Interval, Variables: variables,
		})
		if err != nil {
			t.Fatalf("Flagger cannot render the query: %v", err)
		}
		value, err := provider.RunQuery(query)
		if errors.Is(err, providers.ErrNoValuesFound) {
			return false, "no values found"
		}
		if err != nil {
			t.Fatalf("Flagger's query failed: %v\n%s", err, query)
		}
		tr := metric.ThresholdRange
		if (tr.Min != nil && value < *tr.Min) || (tr.Max != nil && value > *tr.Max) {
			return false, fmt.Sprintf("%v outside the threshold range", value)
		}
		return true, fmt.Sprintf("%v", value)
	}
	// Prometheus has scraped the regression and the A/A verdicts.
	if !eventually(30*time.Second, func() bool {
		regression, _ := check(verdictCases[0])
		pass, _ := check(verdictCases[1])
		return !regression && pass
	}) {
		t.Fatalf("Prometheus never showed the verdicts\n%s", c.log)
	}
	for _, vc := range verdictCases {
		passes, why := check(vc)
		t.Logf("Flagger check for %s %s (%s): passes=%v (%s)", vc.service, vc.candidate, vc.outcome, passes, why)
		if passes != vc.flaggerPasses {
			t.Errorf("%s %s (%s): Flagger's check passes=%v (%s), want %v", vc.service, vc.candidate, vc.outcome, passes, why, vc.flaggerPasses)
		}
	}
}

// rollbackWebhook builds and starts examples/rollback-webhook against the
// collector, its rollbacks recorded by a script; returns its URL, its log
// and the record file.
func rollbackWebhook(t *testing.T, c *collector) (string, *logBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rollback-webhook")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(repoRoot(t), "examples", "rollback-webhook")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/rollback-webhook: %v\n%s", err, out)
	}
	tokenFile := filepath.Join(dir, "token")
	record := filepath.Join(dir, "rollbacks")
	script := filepath.Join(dir, "rollback.sh")
	if err := os.WriteFile(tokenFile, []byte(c.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$*\" >> "+record+"\necho rolled back \"$1\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	log := startProcess(t, exec.Command(bin, "-listen", addr, "-collector", "http://"+c.admin,
		"-token-file", tokenFile, "-exec", script))
	waitHTTP(t, "rollback-webhook", "http://"+addr+"/healthz", 20*time.Second, log)
	return "http://" + addr, log, record
}

func rollbacks(t *testing.T, record string) []string {
	data, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func post(t *testing.T, rawURL string, body any) (int, string) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Post(rawURL, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatalf("POST %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(text))
}

// alert is one alert as Prometheus sends it for examples/prometheus/rules.yml.
func alert(service, endpoint, candidate, baseline, rule string, ends time.Time) map[string]any {
	a := map[string]any{
		"labels": map[string]string{
			"alertname": "ModelgateRegression", "severity": "critical", "job": "modelgate",
			"service_name": service, "endpoint": endpoint, "candidate_version": candidate,
			"baseline_version": baseline, "rule": rule,
		},
		"annotations": map[string]string{"summary": fmt.Sprintf("%s %s: version %s regressed (%s rule)", service, endpoint, candidate, rule)},
		"startsAt":    time.Now().Add(-time.Minute).Format(time.RFC3339),
	}
	if !ends.IsZero() {
		a["endsAt"] = ends.Format(time.RFC3339)
	}
	return a
}

// amMessage is an Alertmanager webhook notification (version 4) for one
// group of ModelgateRegression alerts.
func amMessage(status, service, candidate string) map[string]any {
	labels := map[string]string{"service_name": service, "candidate_version": candidate}
	return map[string]any{
		"version": "4", "status": status, "receiver": "rollout-controller",
		"groupKey":    fmt.Sprintf("{}/{alertname=\"ModelgateRegression\"}:{candidate_version=%q, service_name=%q}", candidate, service),
		"groupLabels": labels, "commonLabels": labels, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager.example", "truncatedAlerts": 0,
		"alerts": []map[string]any{{
			"status":      status,
			"labels":      map[string]string{"alertname": "ModelgateRegression", "service_name": service, "candidate_version": candidate, "baseline_version": "v1.2", "endpoint": "/risk-score", "rule": "sla"},
			"annotations": map[string]string{}, "startsAt": time.Now().Format(time.RFC3339), "endsAt": "0001-01-01T00:00:00Z",
			"generatorURL": "http://prometheus.example/graph", "fingerprint": "0123456789abcdef",
		}},
	}
}

func testRollbackWebhook(t *testing.T, c *collector) {
	hook, hookLog, record := rollbackWebhook(t, c)

	// A real Alertmanager with the example configuration, its webhook URLs
	// pointed at the receiver.
	dir := t.TempDir()
	config := strings.ReplaceAll(string(mustRead(t, "examples/prometheus/alertmanager.yml")), "http://127.0.0.1:8080", hook)
	if !strings.Contains(config, hook+"/hooks/modelgate-regression") {
		t.Fatalf("examples/prometheus/alertmanager.yml no longer posts to the receiver's /hooks/modelgate-regression")
	}
	configFile := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	amLog := startProcess(t, exec.Command(tool(t, "prometheus-alertmanager"), "--config.file="+configFile,
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--cluster.listen-address="))
	waitHTTP(t, "alertmanager", "http://"+addr+"/-/ready", 30*time.Second, amLog)

	// What Prometheus sends for the lending incident (two endpoints x three
	// rules), and a stale alert on the A/A candidate modelgate now passes.
	var alerts []map[string]any
	for _, endpoint := range []string{"/risk-score", "/funding-approve"} {
		for _, rule := range []string{"sla", "relative", "errors"} {
			alerts = append(alerts, alert("lending-api", endpoint, "v1.3", "v1.2", rule, time.Time{}))
		}
	}
	alerts = append(alerts, alert("aa-api", "/predict", "v2", "v1", "relative", time.Time{}))
	if status, body := post(t, "http://"+addr+"/api/v2/alerts", alerts); status != http.StatusOK {
		t.Fatalf("alertmanager refused the alerts: %d %s", status, body)
	}
	// The route's group_wait is 5 s.
	if !eventually(30*time.Second, func() bool {
		return len(rollbacks(t, record)) > 0 && strings.Contains(hookLog.String(), "not rolling back aa-api v2")
	}) {
		t.Fatalf("no rollback within 30 s; receiver log:\n%s\nalertmanager log:\n%s", hookLog, amLog)
	}
	if got := rollbacks(t, record); len(got) != 1 || got[0] != "lending-api v1.3 v1.2" {
		t.Fatalf("rollbacks %q, want one of lending-api v1.3 to v1.2", got)
	}
	if !strings.Contains(hookLog.String(), "modelgate's verdict is now VERDICT_OUTCOME_PASS") {
		t.Errorf("the stale aa-api alert was not checked against the verdict:\n%s", hookLog)
	}
	t.Logf("receiver log:\n%s", hookLog)

	// Alertmanager repeats a group's notification: acted on once.
	url := hook + "/hooks/modelgate-regression"
	if status, body := post(t, url, amMessage("firing", "lending-api", "v1.3")); status != http.StatusOK {
		t.Fatalf("repeat: %d %s", status, body)
	}
	if got := rollbacks(t, record); len(got) != 1 {
		t.Fatalf("a repeated notification rolled back again: %q", got)
	}
	// Resolved, then firing again (a second bad rollout of the same version).
	for _, status := range []string{"resolved", "firing"} {
		if code, body := post(t, url, amMessage(status, "lending-api", "v1.3")); code != http.StatusOK {
			t.Fatalf("%s: %d %s", status, code, body)
		}
	}
	if got := rollbacks(t, record); len(got) != 2 {
		t.Fatalf("after resolved and firing again: rollbacks %q, want 2", got)
	}
	// Bad input is refused with what is wrong.
	for _, bad := range []struct {
		body any
		want string
	}{
		{"not an object", "not the expected JSON"},
		{map[string]any{"version": "3", "status": "firing"}, "version \"3\""},
		{map[string]any{"version": "4", "status": "firing", "groupLabels": map[string]string{"alertname": "X"}}, "group_by: [service_name, candidate_version]"},
	} {
		if code, body := post(t, url, bad.body); code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("bad body %v: %d %q, want 400 with %q", bad.body, code, body, bad.want)
		}
	}

	// Flagger's confirm-promotion webhook: promotion only on PASS.
	var canary flaggerv1.Canary
	decodeExample(t, "examples/flagger/canary.yaml", &canary)
	var webhook *flaggerv1.CanaryWebhook
	for i, w := range canary.Spec.Analysis.Webhooks {
		if strings.HasSuffix(w.URL, "/hooks/flagger-verdict") {
			webhook = &canary.Spec.Analysis.Webhooks[i]
		}
	}
	if webhook == nil || webhook.Type != flaggerv1.ConfirmPromotionHook {
		t.Fatalf("the Canary has no confirm-promotion webhook to /hooks/flagger-verdict")
	}
	for _, vc := range verdictCases {
		payload := flaggerv1.CanaryWebhookPayload{
			Name: canary.Name, Namespace: canary.Namespace, Phase: flaggerv1.CanaryPhaseProgressing,
			Metadata: map[string]string{"service": vc.service, "candidate": vc.candidate},
		}
		code, body := post(t, hook+"/hooks/flagger-verdict", payload)
		// Flagger's callWebhook: a status over 202 is a failure.
		promotes := code <= http.StatusAccepted
		t.Logf("Flagger confirm-promotion for %s %s: HTTP %d %q", vc.service, vc.candidate, code, body)
		if promotes != (vc.outcome == "VERDICT_OUTCOME_PASS") || !strings.Contains(body, vc.outcome) {
			t.Errorf("%s %s (%s): HTTP %d %q", vc.service, vc.candidate, vc.outcome, code, body)
		}
	}
}
