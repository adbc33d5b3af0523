// The console's only way to the service: JSON calls with the operator's
// token (kept in sessionStorage: once per tab, gone when the tab closes).

const TOKEN_KEY = "modelgen.console.token";

/** A failed call: HTTP status, envelope code and message. */
export class ApiFailure extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, value);
}

/** Called when the service answers 401 to a call (token gone or changed). */
let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(res) {
  let code = 0;
  let msg = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    code = body.code ?? 0;
    msg = body.msg || msg;
    const errors = body.data && body.data.errors;
    if (Array.isArray(errors) && errors.length) {
      msg += ": " + errors.map((e) => `${e.field} ${e.message}`).join("; ");
    }
  } catch {
    // Not an envelope (a proxy's page): the status says enough.
  }
  return new ApiFailure(res.status, code, msg);
}

/**
 * Calls `path` and returns the envelope's `data`. Throws ApiFailure on any
 * answer but 2xx, and on network errors (status 0).
 * `opts.auth === false` sends no token (to learn whether one is needed).
 */
export async function call(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: opts.auth === false ? { Accept: "application/json" } : headers() };
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, 0, `the service cannot be reached (${e.message})`);
  }
  if (!res.ok) {
    const f = await failure(res);
    if (res.status === 401 && opts.auth !== false && !opts.quiet401) onUnauthorized(f);
    throw f;
  }
  const body = await res.json();
  return body.data;
}

/** Fetches image bytes with the token and returns a blob: URL for them. */
export async function blobUrl(path) {
  let res;
  try {
    res = await fetch(path, { headers: headers({ Accept: "image/*" }), cache: "no-store" });
  } catch (e) {
    throw new ApiFailure(0, 0, `the service cannot be reached (${e.message})`);
  }
  if (!res.ok) throw await failure(res);
  return URL.createObjectURL(await res.blob());
}

/** `?a=1&b=2` of the non-empty entries of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
