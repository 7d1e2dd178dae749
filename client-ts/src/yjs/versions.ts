/**
 * Named versions of a Yjs document (`/v1/yjs/{doc}/versions`): save the
 * document under a name, list, read one as a Yjs update, restore one (the
 * server applies an update on top, so every connected client converges to
 * it) and delete one.
 *
 * ```ts
 * const versions = createVersionsClient({ url: 'http://127.0.0.1:8787', token })
 * await versions.create('contract', 'sent to client')
 * await versions.restore('contract', 'sent to client')
 * ```
 * @module
 */

import { errorFromResponse, RoostError } from '../errors.js'
import { resolveToken, type TokenSource } from '../token.js'
import { httpUrl, segment } from '../url.js'

/** Options of {@link createVersionsClient}. */
export interface VersionsClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8787`. */
  url: string
  /** Token (or callback) sent as `Authorization: Bearer`. */
  token?: TokenSource
  /** `fetch` implementation; defaults to the global one. */
  fetch?: typeof globalThis.fetch
}

/** One saved version, as listed. */
export interface VersionInfo {
  /** Its name (1 to 128 bytes). */
  name: string
  /** When it was saved (ms since the epoch). */
  created_ms: number
  /** Its size as a Yjs update, in bytes. */
  bytes: number
}

/** The client returned by {@link createVersionsClient}. */
export interface VersionsClient {
  /** Saves the document as it is now under `name` (HTTP 409 if taken). */
  create(doc: string, name: string): Promise<VersionInfo>
  /** The document's versions, oldest first. */
  list(doc: string): Promise<VersionInfo[]>
  /** One version as a Yjs v1 update (`Y.applyUpdate(new Y.Doc(), bytes)`). */
  read(doc: string, name: string): Promise<Uint8Array>
  /** Makes the document equal to the version again, as a new update. */
  restore(doc: string, name: string): Promise<void>
  /** Deletes a version (`not_found` if there is none). */
  remove(doc: string, name: string): Promise<void>
}

/** Creates a client for the named versions of Yjs documents. */
export function createVersionsClient(options: VersionsClientOptions): VersionsClient {
  const doFetch = options.fetch ?? globalThis.fetch
  if (typeof doFetch !== 'function') throw new TypeError('no fetch implementation: pass the `fetch` option')

  async function request(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {}
    const token = await resolveToken(options.token)
    if (token) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const url = httpUrl(options.url, path)
    let response: Response
    try {
      response = await doFetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    } catch (e) {
      throw new RoostError('network', `request to ${url} failed: ${String(e)}`, { cause: e })
    }
    if (!response.ok) throw errorFromResponse(response.status, await response.text())
    return response
  }
  const base = (doc: string) => `v1/yjs/${segment(doc)}/versions`
  const one = (doc: string, name: string) => `${base(doc)}/${segment(name)}`

  return {
    async create(doc, name) {
      return (await (await request('POST', base(doc), { name })).json()) as VersionInfo
    },
    async list(doc) {
      const body = (await (await request('GET', base(doc))).json()) as { versions: VersionInfo[] }
      return body.versions
    },
    async read(doc, name) {
      return new Uint8Array(await (await request('GET', one(doc, name))).arrayBuffer())
    },
    async restore(doc, name) {
      await request('POST', `${one(doc, name)}/restore`)
    },
    async remove(doc, name) {
      await request('DELETE', one(doc, name))
    },
  }
}
