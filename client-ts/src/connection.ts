/**
 * One logical connection that survives server restarts: it opens a WebSocket,
 * and when that closes unexpectedly it opens another after an exponential,
 * jittered delay, asking the token source again each time. It also keeps a
 * heartbeat: a socket quiet for a while is sent a ping, and one that then
 * hears nothing at all is taken for dead and replaced (see
 * {@link ConnectionOptions.pingIntervalMs}). Shared by {@link ObjectSocket}
 * and the Yjs provider; it knows nothing about what travels over the socket
 * beyond the ping frame each of them gives it.
 *
 * A socket the server closes with 4401 or 4403 had its token refused (see
 * {@link AUTH_CLOSE_CODES}): the connection reports `auth-failed`, asks a
 * token callback once more and retries at once, and otherwise stops in the
 * status `unauthorized` instead of retrying forever.
 * @module
 */

import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from './backoff.js'
import { Emitter, type Unsubscribe } from './emitter.js'
import { RoostError } from './errors.js'
import { refreshDelayMs, resolveToken, tokenExpiryMs, type TokenSource } from './token.js'
import { messageData, OPEN, resolveWebSocket, type WebSocketConstructor, type WebSocketLike } from './websocket.js'

/**
 * Where a connection is in its life:
 * - `connecting`: the first attempt is under way;
 * - `open`: a WebSocket is open;
 * - `reconnecting`: the last WebSocket closed or an attempt failed; another
 *   attempt is scheduled or under way;
 * - `unauthorized`: the server refused the token (close code 4401 or 4403,
 *   see {@link AuthFailure}) and no retry is left: there was no token
 *   callback, or a fresh token from it was refused too. Nothing happens until
 *   you reconnect (`ObjectSocket.reconnect()`, `RoostProvider.connect()`),
 *   e.g. after the user signed in again;
 * - `closed`: `close()` was called, or `maxRetries` attempts failed. Final.
 */
export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'unauthorized' | 'closed'

/**
 * The WebSocket close codes with which the server refuses a socket's token
 * (it accepts the upgrade, then closes at once with one of these and a
 * human-readable reason, so that a browser can see why):
 * - `4401` unauthenticated: the token is missing, malformed, expired or
 *   wrongly signed;
 * - `4403` forbidden: the token is valid but not for this object, or revoked.
 */
export const AUTH_CLOSE_CODES: Readonly<{ unauthenticated: 4401; forbidden: 4403 }> = Object.freeze({
  unauthenticated: 4401,
  forbidden: 4403,
})

/** What an `auth-failed` event carries: the server refused the token of a socket. */
export interface AuthFailure {
  /** 4401 (unauthenticated) or 4403 (forbidden); see {@link AUTH_CLOSE_CODES}. */
  code: 4401 | 4403
  /** The server's reason, for humans (e.g. `token expired`). */
  reason: string
  /**
   * True when the connection now asks the token callback for a fresh token
   * and tries once more at once; false when it gives up (status
   * `unauthorized`): there is no token callback, or this was already the
   * retry (two refusals with no accepted connection in between).
   */
  retrying: boolean
}

/** The close code with which the server refuses a frame, Yjs update or document that is too large. */
const CLOSE_TOO_LARGE = 1009

/** Whether `code` is one of the {@link AUTH_CLOSE_CODES}. */
export function isAuthCloseCode(code: number): code is 4401 | 4403 {
  return code === AUTH_CLOSE_CODES.unauthenticated || code === AUTH_CLOSE_CODES.forbidden
}

/**
 * The {@link RoostError} for a refused token: code `unauthorized` (4401) or
 * `forbidden` (4403), with the server's reason as message.
 */
export function authFailureError(failure: Pick<AuthFailure, 'code' | 'reason'>): RoostError {
  const forbidden = failure.code === AUTH_CLOSE_CODES.forbidden
  return new RoostError(
    forbidden ? 'forbidden' : 'unauthorized',
    failure.reason || (forbidden ? 'the token does not allow this object' : 'the token was refused'),
  )
}

/** Options shared by every reconnecting connection. */
export interface ConnectionOptions {
  /** Token (or callback) sent as `?token=` on every connection attempt. */
  token?: TokenSource
  /** WebSocket constructor; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor
  /** Reconnection delays. */
  backoff?: BackoffOptions
  /** Give up on an attempt that has not opened after this many ms. Default 10 000. */
  connectTimeoutMs?: number
  /**
   * With a token *callback* whose tokens are JWTs with an `exp` claim, a fresh
   * token is fetched this long before the current one expires and sent over
   * the open socket (in-band refresh), so the server does not close it.
   * Default 60 000. Set to 0 to disable in-band refresh (the server then
   * closes the socket at expiry and the client reconnects with a new token).
   */
  tokenRefreshMarginMs?: number
  /**
   * A connection that stayed open at least this long resets the backoff to its
   * initial delay. Default 5 000 (so a server that accepts and immediately
   * drops connections does not cause a tight reconnect loop).
   */
  minUptimeMs?: number
  /**
   * Heartbeat: when nothing has arrived on an open socket for this long, a
   * ping is sent, which the server answers at once. Browsers cannot see the
   * server's own WebSocket pings, so without this a server that froze, or a
   * network path that vanished without a close, leaves the socket `open`
   * forever. Default 10 000 ({@link DEFAULT_HEARTBEAT}); 0 turns the heartbeat off.
   */
  pingIntervalMs?: number
  /**
   * After a ping, how long to wait for anything at all to arrive (the pong,
   * or any other frame) before the socket is taken for dead: it is closed
   * (code 4000, reason `no answer to ping`) and replaced through the usual
   * reconnection (status `reconnecting`, backoff). Default 10 000, so with the
   * defaults a silent server is noticed at most 20 s after its last frame.
   * On a very slow uplink, raise it above the time to upload the largest
   * frame a client sends: the ping waits behind it.
   */
  pingTimeoutMs?: number
}

/** The defaults of {@link ConnectionOptions.pingIntervalMs} and {@link ConnectionOptions.pingTimeoutMs}. */
export const DEFAULT_HEARTBEAT: Readonly<{ pingIntervalMs: number; pingTimeoutMs: number }> = Object.freeze({
  pingIntervalMs: 10_000,
  pingTimeoutMs: 10_000,
})

/**
 * The longest delay `setTimeout` honours (2^31 − 1 ms, about 24.8 days);
 * browsers and Node fire a longer one at once.
 */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1

/**
 * A clock for the heartbeat that a change of the wall clock cannot move (a
 * step back would otherwise make a frame heard after a ping look older).
 */
function monotonicMs(): number {
  return globalThis.performance?.now() ?? Date.now()
}

/** Events of a {@link Connection}. */
export interface ConnectionEvents {
  status: [status: ConnectionStatus]
  open: [socket: WebSocketLike]
  message: [data: string | Uint8Array]
  close: [code: number, reason: string, wasOpen: boolean]
  error: [error: unknown]
  /** A fresh token was sent in-band on the open socket. */
  refresh: [token: string]
  /** The server refused the token (close code 4401/4403); emitted after `close`, before the status change. */
  'auth-failed': [failure: AuthFailure]
}

/** A reconnecting WebSocket. Internal building block; see {@link ObjectSocket} and `RoostProvider`. */
export class Connection {
  private readonly events = new Emitter<ConnectionEvents>()
  private readonly ctor: WebSocketConstructor
  private ws: WebSocketLike | null = null
  private current = 0
  private attempt = 0
  private everOpened = false
  private openedAt = 0
  /** Whether `ws` (the current socket) reached `open`. */
  private wsOpen = false
  private retryTimer: ReturnType<typeof setTimeout> | null = null
  private _status: ConnectionStatus = 'connecting'
  private started = false
  /** The token the current socket was opened (or last refreshed) with. */
  private token: string | undefined
  private refreshTimer: ReturnType<typeof setTimeout> | null = null
  /** When the current socket last received a frame (`monotonicMs`). */
  private heardAt = 0
  /** When the heartbeat ping now awaiting an answer was sent, or null. */
  private pingedAt: number | null = null
  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null
  /** The token was refused and the one retry spent, with no accepted connection since. */
  private authRetried = false
  /** The refusal that put the connection in `unauthorized`. */
  private authFailed: AuthFailure | null = null
  private onlineListener = false

  /**
   * `buildUrl` turns the token of this attempt (if any) into the WebSocket
   * URL; `refreshFrame` encodes a fresh token for in-band refresh on an open
   * socket (omit it to never refresh in-band); `pingFrame` is the protocol's
   * heartbeat ping (omit it for no heartbeat). The server's answer is a
   * message like any other: the owner ignores it; here it counts as life.
   */
  constructor(
    private readonly buildUrl: (token: string | undefined) => string,
    private readonly options: ConnectionOptions = {},
    private readonly refreshFrame?: (token: string) => string | Uint8Array,
    private readonly pingFrame?: string | Uint8Array,
  ) {
    this.ctor = resolveWebSocket(options.WebSocket)
  }

  get status(): ConnectionStatus {
    return this._status
  }

  /** The refusal that stopped the connection while the status is `unauthorized`, else null. */
  get authFailure(): AuthFailure | null {
    return this._status === 'unauthorized' ? this.authFailed : null
  }

  /** The open WebSocket, or null. */
  get socket(): WebSocketLike | null {
    return this.ws && this.ws.readyState === OPEN && this._status === 'open' ? this.ws : null
  }

  on<K extends keyof ConnectionEvents>(event: K, fn: (...args: ConnectionEvents[K]) => void): Unsubscribe {
    return this.events.on(event, fn)
  }

  /** Starts the first attempt (idempotent). */
  start(): void {
    if (this.started || this._status === 'closed') return
    this.started = true
    this.listenOnline(true)
    void this.attemptNow()
  }

  /**
   * In browsers, retry at once when the network comes back instead of
   * waiting out the backoff delay; listened to while the connection may retry.
   */
  private listenOnline(on: boolean): void {
    if (on === this.onlineListener) return
    const target = globalThis as {
      addEventListener?: (t: string, fn: () => void) => void
      removeEventListener?: (t: string, fn: () => void) => void
    }
    if (on) {
      if (typeof target.addEventListener !== 'function' || typeof (globalThis as { window?: unknown }).window === 'undefined') return
      target.addEventListener('online', this.onOnline)
    } else if (typeof target.removeEventListener === 'function') {
      target.removeEventListener('online', this.onOnline)
    }
    this.onlineListener = on
  }

  private readonly onOnline = (): void => {
    if (this._status === 'reconnecting' && this.retryTimer !== null) {
      this.clearRetry()
      void this.attemptNow()
    }
  }

  /** Sends on the open socket; returns false when there is none. */
  send(data: string | Uint8Array): boolean {
    const ws = this.socket
    if (!ws) return false
    try {
      ws.send(data)
      return true
    } catch (e) {
      this.events.emit('error', e)
      return false
    }
  }

  /**
   * Drops the current socket (if any) and tries again right away; also
   * starts again after `unauthorized` (with a full retry of the token).
   */
  reconnect(): void {
    if (this._status === 'closed') return
    this.started = true
    this.clearRetry()
    this.current++ // an attempt still waiting for its token is dropped
    const ws = this.ws
    if (ws) this.detach(ws, 4000, 'reconnect', false)
    this.attempt = 0
    this.authRetried = false
    this.listenOnline(true)
    this.setStatus(this.everOpened ? 'reconnecting' : 'connecting')
    void this.attemptNow()
  }

  /** Closes for good: no further attempts. Status becomes `closed`. */
  close(code = 1000, reason = ''): void {
    if (this._status === 'closed') return
    this.clearRetry()
    this.current++
    const ws = this.ws
    this.setStatus('closed')
    if (ws) this.detach(ws, code, reason, false)
    this.events.clear()
  }

  private setStatus(status: ConnectionStatus): void {
    if (status === this._status) return
    this._status = status
    if (status === 'closed' || status === 'unauthorized') {
      this.clearRefresh()
      this.clearHeartbeat()
      this.listenOnline(false)
    }
    this.events.emit('status', status)
  }

  private clearRefresh(): void {
    if (this.refreshTimer !== null) {
      clearTimeout(this.refreshTimer)
      this.refreshTimer = null
    }
  }

  /** Schedules the in-band refresh of `token` on the socket `ws`, if it is a JWT and refresh is on. */
  private scheduleRefresh(ws: WebSocketLike, token: string | undefined): void {
    this.clearRefresh()
    const margin = this.options.tokenRefreshMarginMs ?? 60_000
    if (!this.refreshFrame || margin <= 0 || typeof this.options.token !== 'function' || !token) return
    const expires = tokenExpiryMs(token)
    if (expires === null) return
    const delay = refreshDelayMs(expires, Date.now(), margin)
    if (delay === null) return
    // Timers fire at once for delays above MAX_TIMER_DELAY_MS: a token valid
    // for weeks would otherwise be refreshed in a loop. Wait in steps.
    if (delay > MAX_TIMER_DELAY_MS) {
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = null
        if (this.ws === ws) this.scheduleRefresh(ws, token)
      }, MAX_TIMER_DELAY_MS)
      return
    }
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null
      void this.refresh(ws)
    }, delay)
  }

  private async refresh(ws: WebSocketLike): Promise<void> {
    let fresh: string | undefined
    try {
      fresh = await resolveToken(this.options.token)
    } catch (e) {
      if (this.ws === ws) this.events.emit('error', e)
    }
    if (this.ws !== ws || this._status !== 'open' || !this.refreshFrame) return
    if (fresh && fresh !== this.token) {
      this.token = fresh
      if (this.send(this.refreshFrame(fresh))) this.events.emit('refresh', fresh)
    }
    // Same token (or none): look again later; an expired one is simply left
    // to the server, which closes the socket, and the reconnect fetches anew.
    this.scheduleRefresh(ws, this.token)
  }

  private clearHeartbeat(): void {
    if (this.heartbeatTimer !== null) {
      clearTimeout(this.heartbeatTimer)
      this.heartbeatTimer = null
    }
    this.pingedAt = null
  }

  /** Starts the heartbeat of the socket `ws`, which just opened (if there is a ping frame and it is on). */
  private startHeartbeat(ws: WebSocketLike): void {
    this.clearHeartbeat()
    this.heardAt = monotonicMs()
    const interval = this.options.pingIntervalMs ?? DEFAULT_HEARTBEAT.pingIntervalMs
    if (this.pingFrame === undefined || !(interval > 0)) return
    this.armHeartbeat(ws, interval)
  }

  private armHeartbeat(ws: WebSocketLike, delay: number): void {
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = null
      this.beat(ws)
    }, delay)
  }

  /**
   * One heartbeat check of `ws`. Quiet for `pingIntervalMs`: send a ping.
   * Nothing at all heard since the ping, `pingTimeoutMs` later: the socket is
   * dead. It compares timestamps instead of restarting a timer per message,
   * so a busy socket costs nothing; a timer that fires late (a throttled
   * background tab) only delays the verdict, never makes a false one, since
   * every frame that did arrive counts.
   */
  private beat(ws: WebSocketLike): void {
    if (this.ws !== ws || this._status !== 'open' || this.pingFrame === undefined) return
    const interval = this.options.pingIntervalMs ?? DEFAULT_HEARTBEAT.pingIntervalMs
    const timeout = this.options.pingTimeoutMs ?? DEFAULT_HEARTBEAT.pingTimeoutMs
    const now = monotonicMs()
    if (this.pingedAt !== null) {
      if (this.heardAt < this.pingedAt) {
        this.events.emit('error', new Error(`no answer to ping within ${timeout} ms; reconnecting`))
        this.detach(ws, 4000, 'no answer to ping', true)
        return
      }
      this.pingedAt = null
    }
    const quiet = now - this.heardAt
    if (quiet < interval) {
      this.armHeartbeat(ws, interval - quiet)
      return
    }
    // A failed send means the socket is closing; its close event follows.
    if (!this.send(this.pingFrame)) return
    this.pingedAt = now
    this.armHeartbeat(ws, timeout)
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer)
      this.retryTimer = null
    }
  }

  private async attemptNow(): Promise<void> {
    const id = ++this.current
    let token: string | undefined
    try {
      token = await resolveToken(this.options.token)
    } catch (e) {
      if (id !== this.current || this._status === 'closed') return
      this.events.emit('error', e)
      this.scheduleRetry()
      return
    }
    if (id !== this.current || this._status === 'closed') return
    this.token = token
    let ws: WebSocketLike
    try {
      ws = new this.ctor(this.buildUrl(token))
    } catch (e) {
      this.events.emit('error', e)
      this.scheduleRetry()
      return
    }
    this.ws = ws
    this.wsOpen = false
    ws.binaryType = 'arraybuffer'
    const timeoutMs = this.options.connectTimeoutMs ?? 10_000
    const connectTimer = setTimeout(() => {
      if (this.ws === ws && this._status !== 'open') {
        this.events.emit('error', new Error(`connection attempt timed out after ${timeoutMs} ms`))
        this.detach(ws, 4000, 'connect timeout', true)
      }
    }, timeoutMs)
    ws.onopen = () => {
      clearTimeout(connectTimer)
      if (this.ws !== ws) return
      this.everOpened = true
      this.wsOpen = true
      this.openedAt = Date.now()
      this.setStatus('open')
      this.scheduleRefresh(ws, this.token)
      this.startHeartbeat(ws)
      this.events.emit('open', ws)
    }
    ws.onmessage = (event: { data: unknown }) => {
      if (this.ws !== ws) return
      this.heardAt = monotonicMs()
      const data = messageData(event.data)
      if (data !== null) this.events.emit('message', data)
    }
    ws.onerror = (event: unknown) => {
      if (this.ws !== ws) return
      this.events.emit('error', (event as { error?: unknown }).error ?? event)
    }
    ws.onclose = (event: { code?: number; reason?: string }) => {
      clearTimeout(connectTimer)
      if (this.ws !== ws) return
      this.lost(event.code ?? 1006, event.reason ?? '')
    }
  }

  /** Forgets `ws` (closing it); when `retry`, handles it as a lost connection. */
  private detach(ws: WebSocketLike, code: number, reason: string, retry: boolean): void {
    this.clearRefresh()
    this.clearHeartbeat()
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null
    // Silence late errors from a socket we no longer listen to.
    ws.onerror = () => {}
    try {
      ws.close(code, reason)
    } catch {
      // closing a CONNECTING socket may throw in some implementations
    }
    if (this.ws === ws) {
      if (retry) this.lost(code, reason)
      else {
        this.ws = null
        this.events.emit('close', code, reason, this.wsOpen)
      }
    }
  }

  private lost(code: number, reason: string): void {
    const wasOpen = this.wsOpen
    this.clearRefresh()
    this.clearHeartbeat()
    this.ws = null
    if (isAuthCloseCode(code)) {
      this.refused(code, reason, wasOpen)
      return
    }
    // A socket that opened and was not refused: its token was accepted.
    if (wasOpen) this.authRetried = false
    if (wasOpen && Date.now() - this.openedAt >= (this.options.minUptimeMs ?? 5_000)) this.attempt = 0
    this.events.emit('close', code, reason, wasOpen)
    if (code === CLOSE_TOO_LARGE) {
      // Retrying is right (the limit may be raised, a Yjs change deleted),
      // but a Yjs provider re-sends the refused change on every connection:
      // say why, beyond the close event.
      this.events.emit('error', new RoostError('too_large', `the server refused a frame as too large (close 1009): ${reason || 'no reason given'}`))
    }
    if (this._status === 'closed') return
    this.scheduleRetry()
  }

  /**
   * The server refused the token (4401/4403): with a token callback and the
   * retry unspent, ask it again and retry at once (no backoff: the refusal
   * was immediate and says nothing about the server's health); else stop.
   */
  private refused(code: 4401 | 4403, reason: string, wasOpen: boolean): void {
    const retrying = typeof this.options.token === 'function' && !this.authRetried
    const failure: AuthFailure = { code, reason, retrying }
    const id = this.current
    this.events.emit('close', code, reason, wasOpen)
    if (this._status === 'closed' || id !== this.current) return // a listener closed or reconnected
    this.events.emit('auth-failed', failure)
    if ((this._status as ConnectionStatus) === 'closed' || id !== this.current) return
    this.clearRetry()
    if (retrying) {
      this.authRetried = true
      this.setStatus('reconnecting')
      void this.attemptNow()
    } else {
      this.current++ // nothing may still be under way
      this.authFailed = failure
      this.setStatus('unauthorized')
    }
  }

  private scheduleRetry(): void {
    if (this._status === 'closed') return
    const backoff = { ...DEFAULT_BACKOFF, ...this.options.backoff }
    if (this.attempt >= backoff.maxRetries) {
      this.setStatus('closed')
      return
    }
    const delay = backoffDelay(this.attempt, backoff)
    this.attempt++
    this.setStatus('reconnecting')
    this.clearRetry()
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      void this.attemptNow()
    }, delay)
  }
}
