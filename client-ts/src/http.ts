/**
 * RPC over HTTP for server-side code: `POST /v1/objects/{class}/{name}/call/{method}`
 * with the JSON args as body and the JSON result as reply. Errors become
 * {@link RoostError}s carrying the server's code and the HTTP status.
 * @module
 */

import { errorFromResponse, RoostError } from './errors.js'
import type { CallArgs, MethodName, MethodResult, ObjectSchema, UntypedMethodName, UntypedObject } from './schema.js'
import { resolveToken, type TokenSource } from './token.js'
import { httpUrl, segment } from './url.js'

/** Options of {@link createHttpClient}. */
export interface HttpClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8787` (a path prefix is kept). */
  url: string
  /** Token (or callback, asked before every request) sent as `Authorization: Bearer`. */
  token?: TokenSource
  /** `fetch` implementation; defaults to the global one (Node ≥ 18, browsers). */
  fetch?: typeof globalThis.fetch
  /** Default request timeout in ms (0 = none). Default 30 000. */
  timeoutMs?: number
  /** Extra headers sent with every request. */
  headers?: Record<string, string>
}

/** Options of one HTTP call. */
export interface HttpCallOptions {
  /** Timeout in ms for this request (0 = none); overrides the client's default. */
  timeout?: number
  /** Aborts the request (rejects with `aborted`). */
  signal?: AbortSignal
}

/**
 * A handle on one object for repeated calls: `client.object('counter', 'visits').call('get')`.
 * With a schema (`object<S>(…)`, see {@link ObjectSchema}) its calls are typed.
 */
export interface ObjectStub<S extends ObjectSchema = UntypedObject> {
  /** The object's class. */
  readonly class: string
  /** The object's name. */
  readonly name: string
  /**
   * Calls `method` on this object; see {@link HttpClient.call}. With a schema
   * the method name, arguments and result are typed; untyped, `call<T>`
   * gives the result type.
   */
  call<M extends MethodName<S>>(method: M, ...args: CallArgs<S, M, HttpCallOptions>): Promise<MethodResult<S, M>>
  call<T = unknown>(method: UntypedMethodName<S>, args?: unknown, options?: HttpCallOptions): Promise<T>
}

/** The client returned by {@link createHttpClient}. */
export interface HttpClient {
  /**
   * Calls `method` on the object `(class, name)` and resolves with its JSON
   * result (sent only after the call's writes are durable). Rejects with a
   * {@link RoostError}: the server's code and HTTP status, or `network`,
   * `timeout`, `aborted`, `bad_response`.
   */
  call<T = unknown>(cls: string, name: string, method: string, args?: unknown, options?: HttpCallOptions): Promise<T>
  /** A stub bound to one object; pass an {@link ObjectSchema} as type parameter for typed calls. */
  object<S extends ObjectSchema = UntypedObject>(cls: string, name: string): ObjectStub<S>
}

/**
 * Creates an HTTP RPC client (for Node services, serverless functions, scripts).
 *
 * ```ts
 * const roost = createHttpClient({ url: 'http://127.0.0.1:8787', token: process.env.ROOST_TOKEN })
 * const value = await roost.call<number>('counter', 'visits', 'increment', { by: 1 })
 * ```
 */
export function createHttpClient(options: HttpClientOptions): HttpClient {
  const doFetch = options.fetch ?? globalThis.fetch
  if (typeof doFetch !== 'function') throw new TypeError('no fetch implementation: pass the `fetch` option')

  async function call<T>(cls: string, name: string, method: string, args?: unknown, opts: HttpCallOptions = {}): Promise<T> {
    const url = httpUrl(options.url, `v1/objects/${segment(cls)}/${segment(name)}/call/${segment(method)}`)
    const token = await resolveToken(options.token)
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', ...options.headers }
    if (token) headers.authorization = `Bearer ${token}`
    if (opts.signal?.aborted) throw new RoostError('aborted', 'the call was aborted')
    const timeout = opts.timeout ?? options.timeoutMs ?? 30_000
    const controller = new AbortController()
    let timedOut = false
    const timer = timeout > 0 ? setTimeout(() => ((timedOut = true), controller.abort()), timeout) : null
    const onAbort = () => controller.abort()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      let response: Response
      try {
        response = await doFetch(url, {
          method: 'POST',
          headers,
          body: args === undefined ? '' : JSON.stringify(args),
          signal: controller.signal,
        })
      } catch (e) {
        if (timedOut) throw new RoostError('timeout', `call \`${method}\` timed out after ${timeout} ms`, { cause: e })
        if (opts.signal?.aborted) throw new RoostError('aborted', 'the call was aborted', { cause: e })
        throw new RoostError('network', `request to ${url} failed: ${String(e)}`, { cause: e })
      }
      let text: string
      try {
        text = await response.text()
      } catch (e) {
        if (timedOut) throw new RoostError('timeout', `call \`${method}\` timed out after ${timeout} ms`, { cause: e })
        if (opts.signal?.aborted) throw new RoostError('aborted', 'the call was aborted', { cause: e })
        throw new RoostError('network', `reading the response failed: ${String(e)}`, { cause: e })
      }
      if (!response.ok) throw errorFromResponse(response.status, text)
      try {
        return JSON.parse(text) as T
      } catch (e) {
        throw new RoostError('bad_response', 'the result is not JSON', { status: response.status, cause: e })
      }
    } finally {
      if (timer !== null) clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
    }
  }

  return {
    call,
    object<S extends ObjectSchema = UntypedObject>(cls: string, name: string): ObjectStub<S> {
      const stub = {
        class: cls,
        name,
        call: (method: string, args?: unknown, opts?: HttpCallOptions) => call<unknown>(cls, name, method, args, opts),
      }
      return stub as ObjectStub<S>
    },
  }
}
