// The admin API as the panel uses it. Errors carry the HTTP status and the server's message,
// so a 502 from an unreachable sidecar is shown as the control plane worded it.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const TOKEN_KEY = 'meshplane.token';

/** The admin token lives in sessionStorage: gone when the tab closes, never in localStorage. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (value) => (value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY)),
};

async function request(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { cache: 'no-store', ...init });
  } catch (e) {
    throw new ApiError(0, `the control plane did not answer (${e.message})`);
  }
  if (!response.ok) {
    const text = (await response.text()).trim();
    throw new ApiError(response.status, text || response.statusText);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path, { headers: { accept: 'application/json' } })).json();
}

export async function getText(path) {
  return (await request(path)).text();
}

/** The headers of a write: the session's token as a Bearer token when one is set. */
function writeHeaders(extra = {}) {
  const headers = { ...extra };
  const t = token.get();
  if (t) headers.authorization = `Bearer ${t}`;
  return headers;
}

/** A write route. */
export async function post(path) {
  return (await request(path, { method: 'POST', headers: writeHeaders() })).text();
}

/** A write route replacing a document: `body` as JSON, with extra `headers` (`If-Match`…). */
export async function put(path, body, headers = {}) {
  const init = {
    method: 'PUT',
    headers: writeHeaders({ 'content-type': 'application/json', accept: 'application/json', ...headers }),
    body,
  };
  return (await request(path, init)).json();
}

export const enc = encodeURIComponent;
