// One proxy: who it is, whether it is in sync (per resource type), its traffic, its log
// level, the certificates it uses, its live config dump (from Envoy, through the control plane), the control plane's
// snapshot of its group, and all its stats. A proxyless gRPC client has no Envoy: only who it
// is, its sync status and its group's snapshot.

import { enc, getJson } from './api.js';
import { ago, badge, errorBox, h, loading, replace, section, table, version } from './dom.js';
import { loggingSection } from './logging.js';
import { snapshotSection } from './snapshot.js';
import { statsSection } from './stats.js';
import { trafficSection } from './traffic.js';
import { jsonTree } from './tree.js';

export function proxyPage(scope, id) {
  const head = h('div', { class: 'page-head' },
    h('a', { href: '#/proxies', class: 'back' }, '← Proxies'),
    h('h1', {}, id));
  const overview = h('div', {}, loading());
  const logging = h('div');
  const envoy = h('div');
  const stats = h('div');
  const snapshot = h('div');
  let group = null;
  let kind = null;

  scope.every(5000, async () => {
    try {
      const proxies = await getJson('/api/proxies');
      const p = proxies.find((x) => x.node_id === id);
      if (!p) {
        replace(overview, errorBox(new Error(`proxy ${id} is not connected to this control plane`),
          'Showing what was last known; checking again every 5 s.'));
        return;
      }
      replace(overview, summaryCard(p), syncCard(p));
      // What is diagnosed through the sidecar's admin relay exists only for an Envoy: a
      // proxyless gRPC client (its xDS client names itself `gRPC …`) has no Envoy to ask.
      const proxyless = (p.client || '').startsWith('gRPC ');
      if (kind !== proxyless) {
        kind = proxyless;
        if (proxyless) {
          replace(logging);
          replace(stats);
          replace(envoy, section('No Envoy',
            h('p', { id: 'proxyless-note', class: 'muted' },
              'A proxyless gRPC client: its gRPC library speaks xDS itself, with no Envoy or sidecar '
              + 'to diagnose (traffic, log level, certificates, config dump and stats are an Envoy\'s). '
              + 'Its xDS status is above; what the control plane serves its group is below.')));
        } else {
          replace(logging, loggingSection(id));
          replace(envoy, trafficSection(scope, id), certificatesSection(scope, id), configDumpSection(id));
          replace(stats, statsSection(id));
        }
      }
      if (group !== p.group) {
        group = p.group;
        replace(snapshot, snapshotSection(group));
      }
    } catch (e) {
      replace(overview, errorBox(e));
    }
  });

  return h('div', {},
    head,
    h('div', { class: 'columns' }, overview, logging),
    envoy,
    snapshot,
    stats);
}

function summaryCard(p) {
  const row = (k, v) => h('tr', {}, h('th', {}, k), h('td', {}, v));
  return section('Proxy',
    h('table', { class: 'kv' }, h('tbody', {},
      row('Service', h('a', { href: `#/services/${enc(p.service)}` }, p.service)),
      row('Sync', badge(p.sync)),
      row('Group', h('code', {}, p.group)),
      row('Connected to', h('code', {}, p.connected_to)),
      row('From', h('code', {}, p.remote_addr || '—')),
      row('Protocol', p.protocol),
      row('Client', p.client || '—'),
      row('Connected', ago(p.connected_since)))));
}

function syncCard(p) {
  const rows = Object.entries(p.types).map(([type, t]) => h('tr', { 'data-type': type },
    h('td', {}, h('strong', {}, type)),
    h('td', {}, badge(t.sync)),
    h('td', {}, version(t.sent_version)),
    h('td', {}, version(t.acked_version)),
    h('td', { class: 'num' }, t.responses),
    h('td', { class: 'num' }, t.nacks),
    h('td', {}, t.last_nack
      ? h('div', { class: 'nack' }, h('div', {}, 'version ', version(t.last_nack.version), ', ', ago(t.last_nack.at)),
        h('div', { class: 'nack-message' }, t.last_nack.message))
      : h('span', { class: 'muted' }, '—'))));
  return section('Sync status',
    table(['Type', 'Sync', 'Sent', 'ACKed', 'Pushes', 'NACKs', 'Last NACK'], rows, { id: 'sync-status' }));
}

// The certificates Envoy uses (public details only): its identity and the trust bundle,
// refreshed every 30 s so a rotation shows up.
function certificatesSection(scope, id) {
  const body = h('div', {}, loading('Asking the sidecar which certificates Envoy uses'));
  scope.every(30000, async () => {
    try {
      const certs = await getJson(`/api/proxies/${enc(id)}/certs`);
      const rows = certs.map((c) => h('tr', { 'data-role': c.role },
        h('td', {}, c.role),
        h('td', {}, c.uris.length ? c.uris.map((u) => h('div', {}, h('code', {}, u))) : h('span', { class: 'muted' }, '—')),
        h('td', {}, h('code', {}, c.serial)),
        h('td', {}, c.expires),
        h('td', { class: 'num' }, c.days_until_expiration ?? '—')));
      replace(body, certs.length
        ? table(['Role', 'Identity (URI SAN)', 'Serial', 'Expires', 'Days left'], rows, { id: 'certs' })
        : h('p', { class: 'muted' }, 'Envoy uses no certificate yet.'));
    } catch (e) {
      replace(body, errorBox(e));
    }
  });
  return section('Certificates (mTLS)', body);
}

function configDumpSection(id) {
  const body = h('div', { id: 'config-dump' }, loading('Fetching the config dump from the sidecar'));
  const load = async () => {
    replace(body, loading('Fetching the config dump from the sidecar'));
    try {
      const dump = await getJson(`/api/proxies/${enc(id)}/config_dump`);
      replace(body, jsonTree(dump, { id: 'config-tree', label: 'config_dump' }));
    } catch (e) {
      replace(body, errorBox(e));
    }
  };
  load();
  return section('Config dump (live, from Envoy)',
    h('div', { class: 'toolbar' },
      h('span', { class: 'muted small' }, 'What the sidecar is actually running, fetched through the control plane.'),
      h('button', { type: 'button', class: 'secondary', onclick: load }, 'Reload')),
    body);
}
