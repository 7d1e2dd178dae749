/**
 * Access tokens: a fixed string or a callback asked before every connection
 * attempt and every HTTP request (so an expiring token can be refreshed).
 * @module
 */

/**
 * A token, or a function returning one (sync or async). `null`/`undefined`
 * means "no token" (the server's dev mode allows anonymous access).
 */
export type TokenSource =
  | string
  | null
  | undefined
  | (() => string | null | undefined | Promise<string | null | undefined>)

/** Resolves a {@link TokenSource} to the token to use now. */
export async function resolveToken(source: TokenSource): Promise<string | undefined> {
  const value = typeof source === 'function' ? await source() : source
  return value === null || value === undefined || value === '' ? undefined : value
}

/**
 * The `exp` claim of a JWT, in ms since the epoch, or null when `token` is not
 * a JWT with a numeric `exp` (the signature is not checked: this only decides
 * when to ask for a fresh token).
 */
export function tokenExpiryMs(token: string): number | null {
  const parts = token.split('.')
  if (parts.length !== 3 || !parts[1]) return null
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)))
    const exp = (JSON.parse(json) as { exp?: unknown }).exp
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null
  } catch {
    return null
  }
}

/**
 * When to ask for a fresh token, in ms from now, for a token expiring at
 * `expiresMs`: `marginMs` before expiry, but never before half the remaining
 * lifetime nor sooner than 1 s. Null when the token has already expired.
 */
export function refreshDelayMs(expiresMs: number, now: number, marginMs: number): number | null {
  const remaining = expiresMs - now
  if (remaining <= 0) return null
  return Math.max(1000, remaining / 2, remaining - marginMs)
}
