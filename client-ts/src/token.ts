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
