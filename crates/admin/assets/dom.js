// Building DOM nodes without innerHTML: every string from the API ends up as text, never markup.

import { token } from './api.js';

/**
 * h('a', { href: '#/x', class: 'link', onclick: fn }, 'text', child, [more])
 * Attributes starting with `on` become event listeners; `null`/`false` children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(['path', 'line', 'text', 'g', 'rect', 'circle', 'title']);

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A visible error: the HTTP status and the server's own message. */
export function errorBox(err, hint) {
  const status = err && err.status ? `HTTP ${err.status}: ` : '';
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, status), err && err.message ? err.message : String(err),
    hint ? h('div', { class: 'hint' }, hint) : null);
}

export function loading(what = 'Loading') {
  return h('div', { class: 'loading' }, `${what}…`);
}

/** SYNCED / STALE / NACKED / NOT_SENT, passing / warning / critical, true / false. */
export function badge(value) {
  const text = value === true ? 'consistent' : value === false ? 'different' : String(value);
  return h('span', { class: `badge badge-${text.toLowerCase().replace(/[^a-z]+/g, '-')}` }, text);
}

/** `text` with every case-insensitive occurrence of `query` wrapped in <mark>. */
export function highlighted(text, query) {
  if (!query) return document.createTextNode(text);
  const frag = document.createDocumentFragment();
  const lower = text.toLowerCase();
  const q = query.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(q); i !== -1; i = lower.indexOf(q, at)) {
    if (i > at) frag.appendChild(document.createTextNode(text.slice(at, i)));
    frag.appendChild(h('mark', {}, text.slice(i, i + q.length)));
    at = i + q.length;
  }
  if (at < text.length) frag.appendChild(document.createTextNode(text.slice(at)));
  return frag;
}

/** A search box that calls `onQuery` as the user types (debounced for big documents). */
export function searchBox({ id, placeholder, onQuery, delay = 0 }) {
  let timer = null;
  return h('input', {
    type: 'search', id, placeholder, class: 'search', autocomplete: 'off', spellcheck: 'false',
    'aria-label': placeholder,
    oninput: (e) => {
      clearTimeout(timer);
      const q = e.target.value.trim();
      if (delay) timer = setTimeout(() => onQuery(q), delay);
      else onQuery(q);
    },
  });
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows));
}

export function ago(unixSeconds) {
  if (!unixSeconds) return '—';
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function bytes(n) {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} kB`;
}

/** Shortens long content versions (digests) for tables; the full value stays in the tooltip. */
export function version(v) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
  return h('code', { title: v }, v.length > 12 ? `${v.slice(0, 12)}…` : v);
}

/** The admin token's input (`#admin-token`), kept in the session as it is typed. */
export function tokenInput() {
  return h('input', {
    type: 'password', id: 'admin-token', autocomplete: 'off', value: token.get(),
    placeholder: 'Admin token (if the control plane has one)', 'aria-label': 'Admin token',
    oninput: (e) => token.set(e.target.value.trim()),
  });
}
