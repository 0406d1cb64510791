package deploy

// The edge filter's OCI image, end to end: scripts/package-filter builds it
// (twice: the digest must not change), skopeo (Debian's, an independent
// client) pushes it to a local registry (Debian's docker-registry on an
// ephemeral 127.0.0.1 port, storage in a temp directory), and
// go-containerregistry, the library Istio's agent fetches WasmPlugin images
// with, pulls it back and applies the acceptance rules of Istio's fetcher
// (istio.io/istio pkg/wasm/imagefetcher.go): plugin.wasm comes out byte-equal
// and the digest is the one the script printed. A one-layer artifact as the
// README once documented (`oras push` of the bare module) is refused by the
// same rules.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The media type of a bare Wasm module layer (the Wasm image spec's "oci"
// variant).
const wasmLayerMediaType types.MediaType = "application/vnd.module.wasm.content.layer.v1+wasm"

// istioWasm takes the module out of an image by the rules of Istio's
// fetcher: a Docker schema 2 image must have a last layer of the Docker
// tar.gz type; otherwise an OCI image whose last layer is an OCI tar+gzip is
// the "compat" variant; otherwise exactly two layers, one of them the bare
// module, is the "oci" variant. From a tar.gz layer, the first entry whose
// base name is plugin.wasm is the module.
func istioWasm(img v1.Image) ([]byte, error) {
	manifest, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	if len(layers) == 0 {
		return nil, errors.New("no layers")
	}
	last := layers[len(layers)-1]
	lastType, err := last.MediaType()
	if err != nil {
		return nil, err
	}
	if manifest.MediaType == types.DockerManifestSchema2 {
		if lastType != types.DockerLayer {
			return nil, fmt.Errorf("docker image: last layer is %s, not %s", lastType, types.DockerLayer)
		}
		return pluginWasm(last)
	}
	if lastType == types.OCILayer {
		return pluginWasm(last)
	}
	if len(layers) != 2 {
		return nil, fmt.Errorf("not the compat variant (last layer %s, not %s) nor the oci variant (%d layers, not 2)",
			lastType, types.OCILayer, len(layers))
	}
	for _, layer := range layers {
		if mt, err := layer.MediaType(); err == nil && mt == wasmLayerMediaType {
			r, err := layer.Compressed()
			if err != nil {
				return nil, err
			}
			defer r.Close()
			return io.ReadAll(r)
		}
	}
	return nil, fmt.Errorf("oci variant without a %s layer", wasmLayerMediaType)
}

// pluginWasm reads plugin.wasm out of a tar.gz layer.
func pluginWasm(layer v1.Layer) ([]byte, error) {
	r, err := layer.Compressed()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("layer is not gzip: %w", err)
	}
	archive := tar.NewReader(gz)
	for {
		header, err := archive.Next()
		if err == io.EOF {
			return nil, errors.New("no plugin.wasm in the layer")
		}
		if err != nil {
			return nil, fmt.Errorf("layer is not a tar: %w", err)
		}
		if path.Base(header.Name) == "plugin.wasm" {
			return io.ReadAll(archive)
		}
	}
}

// packageFilter runs scripts/package-filter and returns the digest it printed.
func packageFilter(t *testing.T, wasm, out string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "package-filter"), "--wasm", wasm, "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/package-filter: %v\n%s", err, stderr.String())
	}
	digest := strings.TrimSpace(string(stdout))
	if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
		t.Fatalf("scripts/package-filter printed %q, not a sha256 digest", digest)
	}
	return digest
}

// startRegistry starts Debian's docker-registry on an ephemeral port with its
// storage in a temp directory; returns host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := tool(t, "docker-registry")
	dir := t.TempDir()
	addr := freePort(t)
	config := filepath.Join(dir, "config.yml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(
		"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: modelgate-test\n",
		filepath.Join(dir, "data"), addr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	log := startProcess(t, exec.Command(bin, "serve", config))
	waitHTTP(t, "docker-registry", "http://"+addr+"/v2/", 20*time.Second, log)
	return addr
}

func TestFilterImageRoundTripsThroughARegistryAsIstioFetchesIt(t *testing.T) {
	wasmPath := filepath.Join(targetDir(t), "wasm32-wasip1", "wasm", "modelgate_wasm_filter.wasm")
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatalf("%v: build it with scripts/build-wasm (scripts/test does)", err)
	}
	layout := filepath.Join(t.TempDir(), "layout")
	digest := packageFilter(t, wasmPath, layout)
	if again := packageFilter(t, wasmPath, filepath.Join(t.TempDir(), "again")); again != digest {
		t.Fatalf("the same module packaged twice: %s then %s (not reproducible)", digest, again)
	}
	t.Logf("scripts/package-filter: %s (%d-byte module)", digest, len(wasm))

	registry := startRegistry(t)
	ref := registry + "/modelgate/wasm-filter:0.1.0"
	push := exec.Command(tool(t, "skopeo"), "copy", "--quiet", "--preserve-digests",
		"--dest-tls-verify=false", "oci:"+layout+":0.1.0", "docker://"+ref)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}

	// As Istio's agent does for url: oci://REF (over plain HTTP here).
	for _, r := range []string{ref, registry + "/modelgate/wasm-filter@" + digest} {
		parsed, err := name.ParseReference(r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(parsed)
		if err != nil {
			t.Fatalf("pull %s: %v", r, err)
		}
		if desc.Digest.String() != digest {
			t.Fatalf("%s has digest %s, the script printed %s", r, desc.Digest, digest)
		}
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		got, err := istioWasm(img)
		if err != nil {
			t.Fatalf("%s refused by Istio's fetcher rules: %v", r, err)
		}
		if !bytes.Equal(got, wasm) {
			t.Fatalf("%s: plugin.wasm is %d bytes, not the %d-byte module", r, len(got), len(wasm))
		}
		config, err := img.ConfigFile()
		if err != nil || config.OS != "wasip1" || config.Architecture != "wasm" {
			t.Fatalf("%s: config %+v (%v)", r, config, err)
		}
	}

	// The one-layer artifact of a bare `oras push`: not an image Istio takes.
	bare := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	bare, err = mutate.AppendLayers(bare, static.NewLayer(wasm, wasmLayerMediaType))
	if err != nil {
		t.Fatal(err)
	}
	bareRef, err := name.ParseReference(registry+"/modelgate/wasm-filter:bare", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(bareRef, bare); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(bareRef)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := istioWasm(pulled); err == nil || !strings.Contains(err.Error(), "1 layers, not 2") {
		t.Fatalf("a one-layer bare module was accepted (err %v)", err)
	}
}
