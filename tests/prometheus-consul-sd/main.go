// Command prometheus-consul-sd runs Prometheus's own Consul service discovery and target
// relabelling (the packages the Prometheus server uses, at the version go.mod pins) on the
// scrape jobs of a Prometheus configuration, and prints the targets Prometheus would scrape.
//
// Debian's Prometheus is built without Consul discovery, so Meshplane's tests use this to
// check the shipped deploy/prometheus/consul-sd.yml against the embedded registry: the same
// HTTP calls (/v1/agent/self, blocking /v1/catalog/services and /v1/health/service/:name),
// the same labels, the same relabelling.
//
//	prometheus-consul-sd -config deploy/prometheus/consul-sd.yml -server 127.0.0.1:8500 \
//	    -want 3 -timeout 20s
//
// It prints one JSON object per line, {"job", "address", "scheme", "metrics_path", "labels"},
// for every target kept, once every job has found at least -want targets in total (or the
// timeout passed: exit status 1, with what was found on stderr).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"
)

type scrapeConfig struct {
	JobName        string             `yaml:"job_name"`
	MetricsPath    string             `yaml:"metrics_path"`
	Scheme         string             `yaml:"scheme"`
	ConsulSD       []*consul.SDConfig `yaml:"consul_sd_configs"`
	RelabelConfigs []*relabel.Config  `yaml:"relabel_configs"`
}

type promConfig struct {
	ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
}

type target struct {
	Job         string            `json:"job"`
	Address     string            `json:"address"`
	Scheme      string            `json:"scheme"`
	MetricsPath string            `json:"metrics_path"`
	Labels      map[string]string `json:"labels"`
}

func main() {
	configPath := flag.String("config", "", "Prometheus configuration file")
	server := flag.String("server", "", "replaces every consul_sd_configs server (host:port)")
	want := flag.Int("want", 1, "targets to wait for, over all jobs")
	timeout := flag.Duration("timeout", 20*time.Second, "how long to wait for them")
	flag.Parse()
	if err := run(*configPath, *server, *want, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "prometheus-consul-sd:", err)
		os.Exit(1)
	}
}

func run(path, server string, want int, timeout time.Duration) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg promConfig
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		// Other top-level sections (global, rule_files...) are not ours to check.
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	refresh := discovery.NewRefreshMetrics(prometheus.NewRegistry())

	var mu sync.Mutex
	// job -> discoverer index -> source -> group
	found := map[string]map[int]map[string]*targetgroup.Group{}
	changed := make(chan struct{}, 1)
	jobs := 0
	for _, sc := range cfg.ScrapeConfigs {
		for i, sd := range sc.ConsulSD {
			for _, rc := range sc.RelabelConfigs {
				if err := rc.Validate(model.UTF8Validation); err != nil {
					return fmt.Errorf("job %s: %w", sc.JobName, err)
				}
			}
			if server != "" {
				sd.Server = server
			}
			metrics := sd.NewDiscovererMetrics(prometheus.NewRegistry(), refresh)
			if err := metrics.Register(); err != nil {
				return err
			}
			d, err := consul.NewDiscovery(sd, logger, metrics)
			if err != nil {
				return fmt.Errorf("job %s: %w", sc.JobName, err)
			}
			jobs++
			ch := make(chan []*targetgroup.Group)
			go d.Run(ctx, ch)
			go func(job string, i int) {
				for {
					select {
					case <-ctx.Done():
						return
					case groups := <-ch:
						mu.Lock()
						if found[job] == nil {
							found[job] = map[int]map[string]*targetgroup.Group{}
						}
						if found[job][i] == nil {
							found[job][i] = map[string]*targetgroup.Group{}
						}
						for _, g := range groups {
							found[job][i][g.Source] = g
						}
						mu.Unlock()
						select {
						case changed <- struct{}{}:
						default:
						}
					}
				}
			}(sc.JobName, i)
		}
	}
	if jobs == 0 {
		return fmt.Errorf("%s has no consul_sd_configs", path)
	}
	for {
		mu.Lock()
		targets := relabelAll(cfg, found)
		mu.Unlock()
		if len(targets) >= want {
			enc := json.NewEncoder(os.Stdout)
			for _, t := range targets {
				if err := enc.Encode(t); err != nil {
					return err
				}
			}
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			out, _ := json.Marshal(targets)
			return fmt.Errorf("found %d targets, wanted %d, within %s: %s", len(targets), want, timeout, out)
		}
	}
}

// relabelAll turns discovered groups into targets as Prometheus's scrape manager does:
// group labels under target labels, the job's defaults, the job's relabel_configs, then
// `instance` defaulting to the address and the `__` labels dropped.
func relabelAll(cfg promConfig, found map[string]map[int]map[string]*targetgroup.Group) []target {
	var out []target
	for _, sc := range cfg.ScrapeConfigs {
		scheme, path := sc.Scheme, sc.MetricsPath
		if scheme == "" {
			scheme = "http"
		}
		if path == "" {
			path = "/metrics"
		}
		for _, bySource := range found[sc.JobName] {
			for _, g := range bySource {
				for _, t := range g.Targets {
					lb := labels.NewBuilder(labels.EmptyLabels())
					for k, v := range g.Labels {
						lb.Set(string(k), string(v))
					}
					for k, v := range t {
						lb.Set(string(k), string(v))
					}
					for k, v := range map[string]string{
						model.JobLabel:         sc.JobName,
						model.SchemeLabel:      scheme,
						model.MetricsPathLabel: path,
					} {
						if lb.Get(k) == "" {
							lb.Set(k, v)
						}
					}
					if !relabel.ProcessBuilder(lb, sc.RelabelConfigs...) {
						continue
					}
					ls := lb.Labels()
					t := target{
						Job:         ls.Get(model.JobLabel),
						Address:     ls.Get(model.AddressLabel),
						Scheme:      ls.Get(model.SchemeLabel),
						MetricsPath: ls.Get(model.MetricsPathLabel),
						Labels:      map[string]string{},
					}
					ls.Range(func(l labels.Label) {
						if !strings.HasPrefix(l.Name, model.ReservedLabelPrefix) {
							t.Labels[l.Name] = l.Value
						}
					})
					if t.Labels[model.InstanceLabel] == "" {
						t.Labels[model.InstanceLabel] = t.Address
					}
					out = append(out, t)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Job+out[i].Address < out[j].Job+out[j].Address
	})
	return out
}
