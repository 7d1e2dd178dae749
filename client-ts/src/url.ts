/**
 * Building request URLs from a server base URL.
 * @module
 */

/** Query parameters; `undefined` values are left out. */
export type QueryParams = Record<string, string | number | boolean | undefined>

function base(url: string): URL {
  const u = new URL(url)
  if (!u.pathname.endsWith('/')) u.pathname += '/'
  u.search = ''
  u.hash = ''
  return u
}

/** Encodes one path segment (object names may contain `/`, spaces, any UTF-8). */
export function segment(value: string): string {
  return encodeURIComponent(value)
}

function build(baseUrl: string, path: string, params: QueryParams | undefined): URL {
  const u = new URL(path.replace(/^\//, ''), base(baseUrl))
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined) u.searchParams.set(k, String(v))
  }
  return u
}

/**
 * `http(s)://` or `ws(s)://` base + path → a `ws(s)://` URL.
 * A path prefix in the base (a reverse proxy mount point) is kept.
 */
export function wsUrl(baseUrl: string, path: string, params?: QueryParams): string {
  const u = build(baseUrl, path, params)
  if (u.protocol === 'http:') u.protocol = 'ws:'
  else if (u.protocol === 'https:') u.protocol = 'wss:'
  return u.toString()
}

/** `http(s)://` or `ws(s)://` base + path → an `http(s)://` URL. */
export function httpUrl(baseUrl: string, path: string, params?: QueryParams): string {
  const u = build(baseUrl, path, params)
  if (u.protocol === 'ws:') u.protocol = 'http:'
  else if (u.protocol === 'wss:') u.protocol = 'https:'
  return u.toString()
}
