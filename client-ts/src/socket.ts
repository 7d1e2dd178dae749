/**
 * `connect()`: a reconnecting WebSocket into one durable object, speaking the
 * JSON envelope. Calls are matched to results by id; pushed events go to
 * `on(event, fn)` listeners; anything else is a raw message.
 *
 * Delivery: a call is sent at most once. Calls made while disconnected wait in
 * a bounded queue and are sent once, in order, after the next connection opens.
 * A call that was sent but whose result did not arrive before the connection
 * dropped is rejected with `disconnected` (it may or may not have run) and is
 * never re-sent. (Exception: calls sent on a socket the server refused for
 * its token, close code 4401/4403, never reached the object; they go back to
 * the queue, for the retry with a fresh token.)
 * @module
 */

import {
  type AuthFailure,
  authFailureError,
  type ConnectionOptions,
  type ConnectionStatus,
  Connection,
  isAuthCloseCode,
} from './connection.js'
import { Emitter, type Unsubscribe } from './emitter.js'
import { decodeServerFrame, encodeAuth, encodeCall, encodePing } from './envelope.js'
import { RoostError } from './errors.js'
import type {
  CallArgs,
  EventData,
  EventName,
  MethodName,
  MethodResult,
  ObjectSchema,
  UntypedEventName,
  UntypedMethodName,
  UntypedObject,
} from './schema.js'
import { type QueryParams, segment, wsUrl } from './url.js'

/** Status of an {@link ObjectSocket}; see {@link ConnectionStatus}. */
export type SocketStatus = ConnectionStatus

/** Options of {@link connect}. */
export interface ConnectOptions extends ConnectionOptions {
  /** Server base URL, `http(s)://host:port` or `ws(s)://host:port` (a path prefix is kept). */
  url: string
  /** The object's class, e.g. `room`. */
  class: string
  /** The object's name (any UTF-8, 1..512 bytes). */
  name: string
  /** Extra query parameters for the object's `on_connect` (e.g. `{ name: 'alice' }` for `room`). */
  params?: QueryParams
  /** Most calls kept while disconnected; further calls reject with `queue_full`. Default 100. */
  maxQueuedCalls?: number
  /** Default timeout of {@link ObjectSocket.call}, in ms (0 = none). Default 30 000. */
  callTimeoutMs?: number
}

/** Options of one {@link ObjectSocket.call}. */
export interface CallOptions {
  /** Reject with `timeout` after this many ms, counted from the call (queue time included). 0 = none. */
  timeout?: number
  /** Reject with `aborted` when this signal fires (a call still queued is then never sent). */
  signal?: AbortSignal
}

/** Why a socket closed: the WebSocket close code and reason. */
export interface CloseInfo {
  /** The WebSocket close code (1006: closed without a close frame, e.g. the server died). */
  code: number
  /** The close reason sent by the server, if any. */
  reason: string
  /** Whether this WebSocket had opened (false: an attempt failed). */
  wasOpen: boolean
}

interface PendingCall {
  method: string
  args: unknown
  resolve: (value: unknown) => void
  reject: (error: RoostError) => void
  cleanup: () => void
  id: number | null
  done: boolean
}

interface SocketEvents {
  status: [status: SocketStatus]
  message: [data: string | Uint8Array]
  close: [info: CloseInfo]
  error: [error: unknown]
  'auth-failed': [failure: AuthFailure]
}

/**
 * A live, reconnecting WebSocket into one object. Create it with {@link connect}.
 * The type parameter `S` (an {@link ObjectSchema}) types {@link call} and
 * {@link on}; without it any method and event name is accepted.
 *
 * ```ts
 * const room = connect({ url: 'http://127.0.0.1:8787', class: 'room', name: 'lobby', params: { name: 'alice' } })
 * room.on('message', (m) => console.log(m))
 * await room.call('send', { text: 'hi' })
 * ```
 */
export class ObjectSocket<S extends ObjectSchema = UntypedObject> {
  /** The object's class. */
  readonly class: string
  /** The object's name. */
  readonly name: string
  private readonly connection: Connection
  private readonly lifecycle = new Emitter<SocketEvents>()
  private readonly pushes = new Emitter<Record<string, [data: unknown]>>()
  private readonly anyPush = new Emitter<{ event: [event: string, data: unknown] }>()
  private readonly queue: PendingCall[] = []
  private readonly inflight = new Map<number, PendingCall>()
  private nextId = 1
  private readonly maxQueued: number
  private readonly defaultTimeout: number

  /** Use {@link connect}. */
  constructor(options: ConnectOptions) {
    this.class = options.class
    this.name = options.name
    this.maxQueued = options.maxQueuedCalls ?? 100
    this.defaultTimeout = options.callTimeoutMs ?? 30_000
    const path = `v1/objects/${segment(options.class)}/${segment(options.name)}/ws`
    this.connection = new Connection(
      (token) => wsUrl(options.url, path, { ...options.params, token }),
      options,
      encodeAuth,
      encodePing(),
    )
    this.connection.on('status', (status) => {
      this.lifecycle.emit('status', status)
      if (status === 'closed' || status === 'unauthorized') this.failAll(this.stoppedError())
    })
    this.connection.on('open', () => this.flush())
    this.connection.on('message', (data) => this.receive(data))
    this.connection.on('close', (code, reason, wasOpen) => {
      // A refused socket never reached the object: its calls can go again.
      if (isAuthCloseCode(code)) this.requeueInflight()
      else this.failInflight()
      this.lifecycle.emit('close', { code, reason, wasOpen })
    })
    this.connection.on('error', (e) => this.lifecycle.emit('error', e))
    this.connection.on('auth-failed', (failure) => this.lifecycle.emit('auth-failed', failure))
    this.connection.start()
  }

  /**
   * `connecting`, `open`, `reconnecting`, `unauthorized` or `closed` (see
   * {@link ConnectionStatus}). Changes are reported to {@link onStatus}.
   */
  get status(): SocketStatus {
    return this.connection.status
  }

  /**
   * Why the server refused this socket's token, while {@link status} is
   * `unauthorized`; null otherwise. {@link reconnect} tries again.
   */
  get authFailure(): AuthFailure | null {
    return this.connection.authFailure
  }

  /** Number of calls waiting for a connection. */
  get queuedCalls(): number {
    return this.queue.length
  }

  /**
   * Calls `method` on the object and resolves with its result (sent only after
   * the call's writes are durable). Rejects with a {@link RoostError}: the
   * server's code (`unknown_method`, `application`, …) or a client code
   * (`timeout`, `disconnected`, `queue_full`, `closed`, `aborted`), or
   * `unauthorized`/`forbidden` when the server refused the token for good.
   *
   * With a schema (`ObjectSocket<S>`), `method` must be one of its methods,
   * `args` its argument type, and the result is its result type; untyped,
   * `call<T>(method, args)` gives the result type.
   */
  call<M extends MethodName<S>>(method: M, ...args: CallArgs<S, M, CallOptions>): Promise<MethodResult<S, M>>
  call<T = unknown>(method: UntypedMethodName<S>, args?: unknown, options?: CallOptions): Promise<T>
  call(method: string, args?: unknown, options: CallOptions = {}): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      if (this.status === 'closed' || this.status === 'unauthorized') {
        reject(this.stoppedError())
        return
      }
      if (options.signal?.aborted) {
        reject(new RoostError('aborted', 'the call was aborted'))
        return
      }
      const timeout = options.timeout ?? this.defaultTimeout
      let timer: ReturnType<typeof setTimeout> | null = null
      const onAbort = () => this.settle(call, new RoostError('aborted', 'the call was aborted'))
      const call: PendingCall = {
        method,
        args,
        resolve,
        reject,
        id: null,
        done: false,
        cleanup: () => {
          if (timer !== null) clearTimeout(timer)
          options.signal?.removeEventListener('abort', onAbort)
        },
      }
      if (timeout > 0) {
        timer = setTimeout(
          () => this.settle(call, new RoostError('timeout', `call \`${method}\` timed out after ${timeout} ms`)),
          timeout,
        )
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      if (this.connection.socket) {
        this.transmit(call)
      } else if (this.queue.length >= this.maxQueued) {
        this.settle(call, new RoostError('queue_full', `more than ${this.maxQueued} calls are waiting for a connection`))
      } else {
        this.queue.push(call)
      }
    })
  }

  /**
   * Listens for events pushed by the object (`{"type":"event","event":E,"data":D}`),
   * e.g. `message`, `join`, `history` for `room`; `error` for frames the server
   * could not handle; `auth` for an accepted in-band token refresh. Returns a
   * function that removes the listener.
   *
   * With a schema (`ObjectSocket<S>`), `event` must be one of its events (or
   * `auth`/`error`) and `data` has its type; untyped, `on<T>(event, fn)`
   * gives the data type.
   */
  on<E extends EventName<S>>(event: E, fn: (data: EventData<S, E>) => void): Unsubscribe
  on<T = unknown>(event: UntypedEventName<S>, fn: (data: T) => void): Unsubscribe
  on(event: string, fn: (data: never) => void): Unsubscribe {
    return this.pushes.on(event, fn as (data: unknown) => void)
  }

  /** Removes a listener added with {@link on}. */
  off<E extends EventName<S>>(event: E, fn: (data: EventData<S, E>) => void): void
  off<T = unknown>(event: UntypedEventName<S>, fn: (data: T) => void): void
  off(event: string, fn: (data: never) => void): void {
    this.pushes.off(event, fn as (data: unknown) => void)
  }

  /** Listens for every pushed event, whatever its name. */
  onAnyEvent(fn: (event: string, data: unknown) => void): Unsubscribe {
    return this.anyPush.on('event', fn)
  }

  /** Listens for status changes (`connecting` → `open` → `reconnecting` → … → `closed`). */
  onStatus(fn: (status: SocketStatus) => void): Unsubscribe {
    return this.lifecycle.on('status', fn)
  }

  /** Listens for raw frames that are not envelope results or events (other text, all binary). */
  onMessage(fn: (data: string | Uint8Array) => void): Unsubscribe {
    return this.lifecycle.on('message', fn)
  }

  /** Listens for each WebSocket closing (including failed attempts); reconnection follows unless closed. */
  onClose(fn: (info: CloseInfo) => void): Unsubscribe {
    return this.lifecycle.on('close', fn)
  }

  /**
   * Listens for transport errors, token callback failures, and a frame the
   * server refused as too large (a `RoostError` with code `too_large`, after
   * the `close` with code 1009; the calls in flight reject with
   * `disconnected`). Informational: reconnection continues.
   */
  onError(fn: (error: unknown) => void): Unsubscribe {
    return this.lifecycle.on('error', fn)
  }

  /**
   * Listens for the server refusing this socket's token (close code 4401 or
   * 4403, after the `onClose` of that socket). With a token callback the
   * socket asks it for a fresh token and retries once at once
   * (`failure.retrying`); otherwise, or when the retry is refused too, the
   * status becomes `unauthorized`, waiting calls reject with `unauthorized` /
   * `forbidden`, and nothing more happens until {@link reconnect}.
   */
  onAuthFailed(fn: (failure: AuthFailure) => void): Unsubscribe {
    return this.lifecycle.on('auth-failed', fn)
  }

  /**
   * Resolves once the socket is open (at once if it already is); rejects with
   * `closed` if it closes for good first, `unauthorized`/`forbidden` if the
   * server refuses its token for good, or `timeout` after `timeoutMs`.
   */
  whenOpen(timeoutMs = 0): Promise<void> {
    if (this.status === 'open') return Promise.resolve()
    if (this.status === 'closed' || this.status === 'unauthorized') return Promise.reject(this.stoppedError())
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | null = null
      const off = this.onStatus((s) => {
        if (s === 'open' || s === 'closed' || s === 'unauthorized') {
          off()
          if (timer !== null) clearTimeout(timer)
          if (s === 'open') resolve()
          else reject(this.stoppedError())
        }
      })
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          off()
          reject(new RoostError('timeout', `not open after ${timeoutMs} ms`))
        }, timeoutMs)
      }
    })
  }

  /**
   * Sends a raw text or binary frame to the object's `on_message` (not through
   * the envelope). Throws `not_open` when the socket is not open: raw frames
   * are never queued.
   */
  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    const bytes = typeof data === 'string' ? data : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data)
    if (!this.connection.send(bytes)) throw new RoostError('not_open', `cannot send while ${this.status}`)
  }

  /**
   * Drops the current connection and reconnects at once (e.g. after the
   * network came back, or, from `unauthorized`, once a new token is available).
   */
  reconnect(): void {
    this.connection.reconnect()
  }

  /**
   * Closes the socket for good: no reconnection; queued and in-flight calls
   * reject with `closed`; status becomes `closed`.
   */
  close(code = 1000, reason = ''): void {
    if (this.status === 'closed') return
    this.connection.close(code, reason)
    this.failAll(new RoostError('closed', 'the socket is closed'))
    this.pushes.clear()
    this.anyPush.clear()
    this.lifecycle.clear()
  }

  private transmit(call: PendingCall): void {
    const id = this.nextId++
    call.id = id
    this.inflight.set(id, call)
    if (!this.connection.send(encodeCall(id, call.method, call.args))) {
      this.settle(call, new RoostError('disconnected', 'the connection dropped while sending the call'))
    }
  }

  private flush(): void {
    while (this.queue.length > 0 && this.connection.socket) {
      const call = this.queue.shift() as PendingCall
      if (!call.done) this.transmit(call)
    }
  }

  private settle(call: PendingCall, error: RoostError | null, value?: unknown): void {
    if (call.done) return
    call.done = true
    call.cleanup()
    if (call.id !== null) this.inflight.delete(call.id)
    const i = this.queue.indexOf(call)
    if (i >= 0) this.queue.splice(i, 1)
    if (error) call.reject(error)
    else call.resolve(value)
  }

  private failInflight(): void {
    for (const call of [...this.inflight.values()]) {
      this.settle(
        call,
        new RoostError(
          'disconnected',
          `the connection dropped before the result of \`${call.method}\` arrived; it may or may not have run`,
        ),
      )
    }
  }

  private failAll(error: RoostError): void {
    for (const call of [...this.inflight.values(), ...this.queue]) this.settle(call, error)
  }

  /** Puts the calls sent on a refused socket back at the head of the queue, in order. */
  private requeueInflight(): void {
    const calls = [...this.inflight.values()].sort((a, b) => (a.id ?? 0) - (b.id ?? 0))
    this.inflight.clear()
    for (const call of calls) call.id = null
    this.queue.unshift(...calls.filter((c) => !c.done))
  }

  /** The error for a call on a socket that stopped: `closed`, or the token refusal of `unauthorized`. */
  private stoppedError(): RoostError {
    const failure = this.connection.authFailure
    return failure ? authFailureError(failure) : new RoostError('closed', 'the socket is closed')
  }

  private receive(data: string | Uint8Array): void {
    if (typeof data !== 'string') {
      this.lifecycle.emit('message', data)
      return
    }
    const frame = decodeServerFrame(data)
    if (!frame) {
      this.lifecycle.emit('message', data)
      return
    }
    if (frame.type === 'pong') return // the heartbeat's answer; the connection counted it
    if (frame.type === 'result') {
      const call = this.inflight.get(frame.id)
      if (!call) return // timed out or aborted meanwhile
      if ('error' in frame) this.settle(call, new RoostError(frame.error.code, frame.error.message))
      else this.settle(call, null, frame.ok)
      return
    }
    this.pushes.emit(frame.event, frame.data)
    this.anyPush.emit('event', frame.event, frame.data)
  }
}

/**
 * Opens a reconnecting WebSocket into the object `(class, name)`. Pass an
 * {@link ObjectSchema} as type parameter for typed calls and events.
 *
 * ```ts
 * import WebSocket from 'ws' // Node 20 only; browsers and Node ≥ 22 have a global one
 * interface Counter { methods: { increment(args: { by: number }): number } }
 * const counter = connect<Counter>({ url: 'http://127.0.0.1:8787', class: 'counter', name: 'visits', WebSocket })
 * console.log(await counter.call('increment', { by: 1 })) // a number
 * counter.close()
 * ```
 */
export function connect<S extends ObjectSchema = UntypedObject>(options: ConnectOptions): ObjectSocket<S> {
  return new ObjectSocket<S>(options)
}
