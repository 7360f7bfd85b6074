// A collapsible, searchable JSON tree (for config dumps, which run to hundreds of kilobytes).
// Children are built when a node is first opened. A search keeps only the branches with a
// matching key or value, opens them and marks the matches.

import { h, highlighted, replace, searchBox } from './dom.js';

const OPEN_DEPTH = 2;
const MAX_MATCHES = 500;

export function jsonTree(value, { id, label }) {
  const tree = h('div', { class: 'tree', id });
  const info = h('span', { class: 'muted small', id: `${id}-info` });
  const render = (query) => {
    if (!query) {
      replace(info);
      replace(tree, node(label, value, 0));
      return;
    }
    const found = { matches: 0 };
    const plan = prune(label, value, query.toLowerCase(), found);
    info.textContent = found.matches === 0 ? `no match for “${query}”`
      : found.matches > MAX_MATCHES ? `more than ${MAX_MATCHES} matches: showing the first ${MAX_MATCHES}`
        : `${found.matches} match${found.matches === 1 ? '' : 'es'}`;
    replace(tree, plan ? filtered(label, value, plan, query) : h('div', { class: 'muted' }, 'Nothing matches.'));
  };
  render('');
  return h('div', {},
    h('div', { class: 'toolbar' },
      searchBox({ id: `${id}-search`, placeholder: 'Search keys and values', delay: 150, onQuery: render }),
      info),
    tree);
}

function isContainer(v) {
  return v !== null && typeof v === 'object';
}

function entries(v) {
  return Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v);
}

/** `{3 keys}` / `[5 items]`, plus what the object is: its `@type` or `name`. */
function describe(v) {
  const n = Array.isArray(v) ? v.length : Object.keys(v).length;
  const size = Array.isArray(v) ? `[${n} item${n === 1 ? '' : 's'}]` : `{${n} key${n === 1 ? '' : 's'}}`;
  let what = '';
  if (!Array.isArray(v)) {
    if (typeof v['@type'] === 'string') what = v['@type'].split('.').pop();
    else if (typeof v.name === 'string') what = v.name;
  }
  return [h('span', { class: 'muted' }, size), what ? h('span', { class: 'what' }, what) : null];
}

function leaf(key, v, query) {
  const text = typeof v === 'string' ? JSON.stringify(v) : String(v);
  const kind = v === null ? 'null' : typeof v;
  return h('div', { class: 'leaf' },
    h('span', { class: 'key' }, highlighted(key, query)), ': ',
    h('span', { class: `v-${kind}` }, highlighted(text, query)));
}

/** The unfiltered tree: open to OPEN_DEPTH, deeper children built on first open. */
function node(key, v, depth) {
  if (!isContainer(v)) return leaf(key, v, '');
  const children = h('div', { class: 'children' });
  const details = h('details', {},
    h('summary', {}, h('span', { class: 'key' }, key), ' ', describe(v)),
    children);
  let built = false;
  const build = () => {
    if (built) return;
    built = true;
    replace(children, entries(v).map(([k, x]) => node(k, x, depth + 1)));
  };
  details.addEventListener('toggle', () => details.open && build());
  if (depth < OPEN_DEPTH) {
    details.open = true;
    build();
  }
  return details;
}

/**
 * What survives a search: `null` when nothing under (key, v) matches; otherwise whether the
 * key itself matched and which children to keep.
 */
function prune(key, v, q, found) {
  if (found.matches >= MAX_MATCHES) return null;
  const keyHit = key.toLowerCase().includes(q);
  if (!isContainer(v)) {
    const text = typeof v === 'string' ? v : String(v);
    const hit = keyHit || text.toLowerCase().includes(q);
    if (hit) found.matches += 1;
    return hit ? { keyHit, kept: null } : null;
  }
  if (keyHit) found.matches += 1;
  const kept = new Map();
  for (const [k, x] of entries(v)) {
    const p = prune(k, x, q, found);
    if (p) kept.set(k, p);
  }
  return keyHit || kept.size ? { keyHit, kept } : null;
}

function filtered(key, v, plan, query) {
  if (!isContainer(v)) return leaf(key, v, query);
  if (plan.kept.size === 0) {
    // Only the key matched: show the whole branch, closed, as the unfiltered tree would.
    const d = node(key, v, OPEN_DEPTH);
    d.querySelector('summary .key').replaceChildren(highlighted(key, query));
    return d;
  }
  const children = entries(v).filter(([k]) => plan.kept.has(k))
    .map(([k, x]) => filtered(k, x, plan.kept.get(k), query));
  return h('details', { open: true },
    h('summary', {}, h('span', { class: 'key' }, highlighted(key, query)), ' ', describe(v)),
    h('div', { class: 'children' }, children));
}
