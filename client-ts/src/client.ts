/**
 * `createClient()`: the server's URL, the token source and the connection
 * options given once, for every object socket and HTTP call of an app (and,
 * through `<RoostClientProvider client>`, for the React hooks).
 * @module
 */

import type { ConnectionOptions } from './connection.js'
import { createHttpClient, type HttpClient, type ObjectStub } from './http.js'
import type { ObjectSchema, UntypedObject } from './schema.js'
import { connect, type ConnectOptions, type ObjectSocket } from './socket.js'

/** Options of {@link createClient}: the connection options shared by every socket, plus HTTP's. */
export interface RoostClientOptions extends ConnectionOptions {
  /** Server base URL, `http(s)://host:port` or `ws(s)://host:port` (a path prefix is kept). */
  url: string
  /** Default timeout of calls, over sockets and HTTP, in ms (0 = none). Default 30 000. */
  callTimeoutMs?: number
  /** Most calls a socket keeps while disconnected. Default 100. */
  maxQueuedCalls?: number
  /** `fetch` implementation for HTTP calls; defaults to the global one. */
  fetch?: typeof globalThis.fetch
  /** Extra headers sent with every HTTP call. */
  headers?: Record<string, string>
}

/** Per-socket options of {@link RoostClient.connect}: the object's `params` and overrides of the client's options. */
export type ClientConnectOptions = Partial<Omit<ConnectOptions, 'url' | 'class' | 'name'>>

/**
 * One server, one token source, shared options. Create it with {@link createClient}.
 *
 * ```ts
 * const roost = createClient({ url: 'https://roost.example.com', token: () => fetchToken() })
 * const room = roost.connect('room', 'lobby', { params: { name: 'alice' } })
 * await roost.object('counter', 'visits').call('increment', { by: 1 })
 * ```
 */
export class RoostClient {
  /** The options the client was created with. */
  readonly options: Readonly<RoostClientOptions>
  /** RPC over HTTP with the client's URL, token, fetch and headers. */
  readonly http: HttpClient

  /** Use {@link createClient}. */
  constructor(options: RoostClientOptions) {
    this.options = Object.freeze({ ...options })
    this.http = createHttpClient({
      url: options.url,
      token: options.token,
      fetch: options.fetch,
      headers: options.headers,
      timeoutMs: options.callTimeoutMs,
    })
  }

  /**
   * Opens a reconnecting socket into `(cls, name)` with the client's options
   * (see {@link connect}); `options` adds `params` or overrides some.
   * Pass an {@link ObjectSchema} as type parameter for typed calls and events.
   */
  connect<S extends ObjectSchema = UntypedObject>(cls: string, name: string, options: ClientConnectOptions = {}): ObjectSocket<S> {
    const { fetch: _fetch, headers: _headers, ...shared } = this.options
    return connect<S>({ ...shared, ...options, class: cls, name })
  }

  /** An HTTP stub for `(cls, name)`; see {@link HttpClient.object}. */
  object<S extends ObjectSchema = UntypedObject>(cls: string, name: string): ObjectStub<S> {
    return this.http.object<S>(cls, name)
  }
}

/** Creates a {@link RoostClient}. */
export function createClient(options: RoostClientOptions): RoostClient {
  return new RoostClient(options)
}
