// Small helpers shared by the demo pages.

export const serverUrl = location.origin

export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id)
  if (!el) throw new Error(`no #${id}`)
  return el as T
}

/** A query parameter, or the fallback. */
export function param(name: string, fallback: string): string {
  const v = new URLSearchParams(location.search).get(name)
  return v && v.trim() ? v.trim() : fallback
}

/** Puts `name=value` in the address bar without reloading. */
export function setParam(name: string, value: string): void {
  const u = new URL(location.href)
  u.searchParams.set(name, value)
  history.replaceState(null, '', u)
}

/** The visitor's display name: ?name=, else remembered, else a guest name. */
export function displayName(): string {
  const fromQuery = new URLSearchParams(location.search).get('name')
  if (fromQuery && fromQuery.trim()) return fromQuery.trim().slice(0, 32)
  const saved = localStorage.getItem('roost-demo-name')
  if (saved) return saved
  const n = `guest-${Math.floor(100 + Math.random() * 900)}`
  localStorage.setItem('roost-demo-name', n)
  return n
}

export function rememberName(name: string): void {
  localStorage.setItem('roost-demo-name', name)
}

const COLORS = ['#e5484d', '#2f6fdf', '#1f8a4c', '#b7791f', '#8e4ec6', '#0e8f9c', '#d6409f', '#5b6570']

/** A stable color for a name. */
export function colorFor(name: string): string {
  let h = 0
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0
  return COLORS[h % COLORS.length]
}

/** Shows a connection status in a pill (`data-state` drives the color). */
export function showStatus(el: HTMLElement, status: string): void {
  el.dataset.state = status
  el.textContent = status
}

export function escapeText(s: string): string {
  const d = document.createElement('div')
  d.textContent = s
  return d.innerHTML
}

// --- Access tokens, for a server started with --auth-secret ---------------

const TOKEN_KEY = 'roost-demo-token'

// `?token=` is remembered (for every demo page of this origin) and taken out
// of the address bar, so that a copied link does not carry it.
{
  const u = new URL(location.href)
  const fromQuery = u.searchParams.get('token')?.trim()
  if (fromQuery) {
    localStorage.setItem(TOKEN_KEY, fromQuery)
    u.searchParams.delete('token')
    history.replaceState(null, '', u)
  }
}

/** The token the demos connect with (asked again before every attempt). */
export function demoToken(): string | undefined {
  return localStorage.getItem(TOKEN_KEY) ?? undefined
}

/** Why the server would refuse `class/name` with the current token, or null. */
export type AccessProblem = 'missing' | 'refused' | 'forbidden'

/**
 * Asks the server whether the current token opens `cls/name`. A browser is
 * never told why a WebSocket upgrade failed (the 401 is hidden behind a bare
 * `error` event), so the page asks over HTTP, where the status is visible: a
 * call whose body is not JSON is answered 401/403 when the token is refused,
 * and 400 once the token passed, before the object is touched. Null when the
 * token is fine or the server is unreachable (the socket's failure is then
 * something else).
 */
export async function accessProblem(cls: string, name: string): Promise<AccessProblem | null> {
  const token = demoToken()
  let status: number
  try {
    const r = await fetch(`/v1/objects/${encodeURIComponent(cls)}/${encodeURIComponent(name)}/call/access-check`, {
      method: 'POST',
      headers: token ? { authorization: `Bearer ${token}` } : {},
      body: '{',
    })
    status = r.status
  } catch {
    return null
  }
  if (status === 401) return token ? 'refused' : 'missing'
  if (status === 403) return 'forbidden'
  return null
}

/** The `exp` of a JWT as a date, if it has one (not verified: for messages only). */
function tokenExpiry(token: string): Date | null {
  try {
    const payload = token.split('.')[1] ?? ''
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '='))
    const exp = (JSON.parse(json) as { exp?: unknown }).exp
    return typeof exp === 'number' ? new Date(exp * 1000) : null
  } catch {
    return null
  }
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string>, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  e.append(...children)
  return e
}

/**
 * The token prompt: a card at the top of the page, shown when the server
 * refuses the page's socket for its token. It says why, shows how to mint a
 * token, and takes one; `reconnect` is then called to connect with it.
 * `check()` (on every failed attempt) decides whether to show it; `hide()`
 * once the socket is open.
 */
export function tokenPrompt(object: () => string, reconnect: () => void): { check(): void; hide(): void } {
  const message = el('p', { id: 'auth-message' })
  const input = el('input', { id: 'auth-token', type: 'password', placeholder: 'paste an access token', autocomplete: 'off', required: '', style: 'flex:1' })
  const form = el('form', { class: 'row', id: 'auth-form' }, input, el('button', { type: 'submit' }, 'Connect'))
  const mint = el('code', {})
  const card = el(
    'div',
    { class: 'card auth', id: 'auth', role: 'alert' },
    message,
    el('p', { class: 'muted' }, 'Mint one with the server\'s secret, then paste it here (or open the page with ', el('code', {}, '?token=…'), '; it is kept in this browser):'),
    el('p', {}, mint),
    form,
  )
  card.hidden = true
  const main = document.querySelector('main') ?? document.body
  main.prepend(card)

  let checking = false
  const show = (problem: AccessProblem): void => {
    const what = object()
    const token = demoToken()
    const expiry = token ? tokenExpiry(token) : null
    message.textContent =
      problem === 'missing'
        ? 'This server requires an access token (it runs with --auth-secret): the page cannot connect without one.'
        : problem === 'forbidden'
          ? `The access token in use does not open ${what}.`
          : expiry && expiry.getTime() <= Date.now()
            ? `The access token in use expired at ${expiry.toLocaleString()}.`
            : 'The server refused the access token in use (malformed, expired, or signed with another secret).'
    mint.textContent = `roost token --obj '${what.split('/')[0]}/*' --sub <your name> --perm write --ttl 7d --secret <the server's --auth-secret>`
    card.dataset.problem = problem
    card.hidden = false
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const token = input.value.trim()
    if (!token) return
    localStorage.setItem(TOKEN_KEY, token)
    input.value = ''
    card.hidden = true
    reconnect()
  })
  return {
    check() {
      if (checking) return
      checking = true
      const [cls, ...rest] = object().split('/')
      void accessProblem(cls, rest.join('/'))
        .then((problem) => {
          if (problem) show(problem)
          else card.hidden = true
        })
        .finally(() => {
          checking = false
        })
    },
    hide() {
      card.hidden = true
    },
  }
}
