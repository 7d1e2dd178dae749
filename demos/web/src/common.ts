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
