// HTTP traffic of one proxy, charted: samples /api/proxies/ID/traffic every 2 s while the page
// is open, keeps the last 5 minutes, and turns cumulative counters into rates.

import { enc, getJson } from './api.js';
import { errorBox, h, replace, section } from './dom.js';
import { lineChart } from './chart.js';

const PERIOD_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;

export function trafficSection(scope, id) {
  const samples = [];
  const charts = {
    requests: lineChart({ id: 'chart-requests', title: 'Requests', unit: 'req/s', series: ['ingress', 'egress'] }),
    errors: lineChart({ id: 'chart-errors', title: '5xx responses', unit: '5xx/s', series: ['ingress', 'egress'] }),
    ingress: lineChart({ id: 'chart-latency-ingress', title: 'Ingress latency', unit: 'ms', series: ['p50', 'p99'] }),
    egress: lineChart({ id: 'chart-latency-egress', title: 'Egress latency', unit: 'ms', series: ['p50', 'p99'] }),
  };
  const status = h('div');

  const draw = () => {
    const now = samples.length ? samples[samples.length - 1].at_ms : Date.now();
    // The window grows with the samples (at least a minute, at most five), so a page opened a
    // moment ago shows its first points across the chart rather than squeezed at the right edge.
    const span = samples.length ? now - samples[0].at_ms : 0;
    const window = Math.min(WINDOW_MS, Math.max(60_000, span));
    charts.requests.draw([rates(samples, 'ingress', 'requests'), rates(samples, 'egress', 'requests')], now, window);
    charts.errors.draw([rates(samples, 'ingress', 'errors_5xx'), rates(samples, 'egress', 'errors_5xx')], now, window);
    charts.ingress.draw([gauge(samples, 'ingress', 'p50_ms'), gauge(samples, 'ingress', 'p99_ms')], now, window);
    charts.egress.draw([gauge(samples, 'egress', 'p50_ms'), gauge(samples, 'egress', 'p99_ms')], now, window);
  };

  scope.every(PERIOD_MS, async () => {
    try {
      const sample = await getJson(`/api/proxies/${enc(id)}/traffic`);
      samples.push(sample);
      // Samples use the control plane's clock (at_ms), so browser clock skew cannot distort rates.
      while (samples.length && samples[0].at_ms < sample.at_ms - WINDOW_MS) samples.shift();
      replace(status);
    } catch (e) {
      replace(status, errorBox(e, 'Retrying every 2 s; the charts keep the samples they have.'));
    }
    draw();
  });

  return section('HTTP traffic (sampled every 2 s while this page is open; up to the last 5 minutes)',
    status,
    h('div', { class: 'charts', id: 'traffic-charts' },
      charts.requests.node, charts.errors.node, charts.ingress.node, charts.egress.node));
}

/** Per-second rate between successive samples; a counter that went down (Envoy restarted) leaves a gap. */
export function rates(samples, direction, counter) {
  const out = [];
  for (let i = 1; i < samples.length; i += 1) {
    const [a, b] = [samples[i - 1], samples[i]];
    const dt = (b.at_ms - a.at_ms) / 1000;
    const dv = b[direction][counter] - a[direction][counter];
    out.push({ t: b.at_ms, v: dt > 0 && dv >= 0 ? dv / dt : null });
  }
  return out;
}

function gauge(samples, direction, field) {
  return samples.map((s) => ({ t: s.at_ms, v: s[direction][field] ?? null }));
}
