// The service list (searchable as you type) and one service's page: its instances and the
// proxies of that service.

import { enc, getJson } from './api.js';
import { ago, badge, errorBox, h, highlighted, replace, searchBox, section, table } from './dom.js';

const REFRESH_MS = 5000;

export function servicesPage(scope) {
  let services = [];
  let query = '';
  const rows = h('tbody');
  const count = h('span', { class: 'muted', id: 'service-count' });
  const status = h('div');

  const render = () => {
    const q = query.toLowerCase();
    const shown = services.filter((s) =>
      !q || s.name.toLowerCase().includes(q) || s.tags.some((t) => t.toLowerCase().includes(q)));
    count.textContent = query
      ? `${shown.length} of ${services.length} services`
      : `${services.length} services`;
    replace(rows, shown.length
      ? shown.map((s) => serviceRow(s, query))
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' },
        services.length ? `No service matches “${query}”.` : 'The registry has no services yet.')));
  };

  scope.every(REFRESH_MS, async () => {
    try {
      services = await getJson('/api/services');
      services.sort((a, b) => a.name.localeCompare(b.name));
      replace(status);
    } catch (e) {
      replace(status, errorBox(e));
    }
    render();
  });

  return h('div', {},
    h('div', { class: 'page-head' }, h('h1', {}, 'Services'), count),
    searchBox({
      id: 'service-search', placeholder: 'Search services and tags',
      onQuery: (q) => { query = q; render(); },
    }),
    status,
    h('section', { class: 'card' },
      h('table', { id: 'services' },
        h('thead', {}, h('tr', {}, ['Service', 'Healthy', 'Instances', 'Tags'].map((x) => h('th', {}, x)))),
        rows)));
}

function serviceRow(s, query) {
  const healthy = s.passing === s.instances ? 'passing' : s.passing === 0 ? 'critical' : 'warning';
  return h('tr', { 'data-service': s.name },
    h('td', {}, h('a', { href: `#/services/${enc(s.name)}` }, highlighted(s.name, query))),
    h('td', {}, h('span', { class: `badge badge-${healthy}` }, `${s.passing}/${s.instances}`)),
    h('td', {}, s.instances),
    h('td', {}, tags(s.tags, query)));
}

function tags(list, query) {
  return list.length
    ? list.map((t) => h('span', { class: 'tag' }, highlighted(t, query)))
    : h('span', { class: 'muted' }, '—');
}

export function servicePage(scope, name) {
  const body = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  scope.every(REFRESH_MS, async () => {
    try {
      const detail = await getJson(`/api/services/${enc(name)}`);
      replace(body, instancesCard(detail), proxiesCard(detail.proxies));
    } catch (e) {
      replace(body, errorBox(e));
    }
  });
  return h('div', {},
    h('div', { class: 'page-head' },
      h('a', { href: '#/services', class: 'back' }, '← Services'),
      h('h1', {}, name)),
    body);
}

/** A link to a Grafana dashboard, opened beside the panel. */
function dashboardLink(href, id) {
  return h('a', { href, id, class: 'dashboard-link', target: '_blank', rel: 'noopener' }, 'Dashboard ↗');
}

function instancesCard(detail) {
  const dashboards = detail.instance_dashboard
    ? (i) => [h('td', {}, dashboardLink(detail.instance_dashboard + encodeURIComponent(i.id)))]
    : () => [];
  const rows = detail.instances.map((i) => h('tr', { 'data-instance': i.id },
    h('td', {}, h('code', {}, i.id)),
    h('td', {}, h('code', {}, `${i.address}:${i.port}`)),
    h('td', {}, tags(i.tags, '')),
    h('td', {}, i.weight),
    h('td', {}, badge(i.health)),
    h('td', {}, i.datacenter),
    h('td', {}, i.node),
    ...dashboards(i)));
  const headers = ['Instance', 'Address', 'Tags', 'Weight', 'Health', 'Datacenter', 'Node'];
  if (detail.instance_dashboard) headers.push('Grafana');
  return section(`Instances (${detail.instances.length})`,
    detail.dashboard
      ? h('p', {}, 'Traffic, errors and latency of the service and its callers: ',
        dashboardLink(detail.dashboard, 'service-dashboard'))
      : h('span', {}),
    table(headers,
      rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'No instances.')),
      { id: 'instances' }),
    h('p', { class: 'muted small' }, `Registry modify index ${detail.modify_index}.`));
}

function proxiesCard(proxies) {
  return section(`Proxies (${proxies.length})`, proxyTable(proxies, '', 'service-proxies'));
}

/** Connected proxies; shared by the service page and the proxy list. */
export function proxyTable(proxies, query, id) {
  const rows = proxies.map((p) => h('tr', { 'data-proxy': p.node_id },
    h('td', {}, h('a', { href: `#/proxies/${enc(p.node_id)}` }, highlighted(p.node_id, query))),
    h('td', {}, h('a', { href: `#/services/${enc(p.service)}` }, highlighted(p.service, query))),
    h('td', {}, badge(p.sync)),
    h('td', {}, h('code', {}, p.group)),
    h('td', {}, p.protocol),
    h('td', {}, h('code', {}, p.connected_to)),
    h('td', {}, ago(p.connected_since))));
  return table(['Proxy (node id)', 'Service', 'Sync', 'Group', 'xDS', 'Connected to', 'Since'],
    rows.length ? rows : h('tr', {}, h('td', { colspan: 7, class: 'muted' },
      'No proxy of this kind is connected to this control plane.')),
    { id });
}
