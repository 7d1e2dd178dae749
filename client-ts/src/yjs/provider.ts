/**
 * `RoostProvider`: syncs a `Y.Doc` with a Roost document over `/v1/yjs/{doc}`
 * (the y-websocket protocol), relays awareness, reconnects, and reports two
 * signals: `synced` (the server's state has been applied locally) and `saved`
 * (every local change sent so far is durably stored on the server, as told by
 * the `saved` extension, message type 100).
 *
 * How `saved` is computed (see `protocol/PROTOCOL.md`): on each connection the
 * provider counts the sync step-2 and update messages it sends; the server
 * answers `[100, varUint(n)]` when the first `n` are on disk. `saved` is true
 * when the acknowledged count has reached the last message that carried local
 * changes (an empty step 2 is counted but not waited for) and no local change
 * is waiting to be sent. A change made while disconnected, or sent but not
 * acknowledged before the connection dropped, makes `saved` false until a
 * later connection has re-sent it (in the step 2 answering the server's
 * step 1) and the server has acknowledged that. Until that step 2 is out,
 * new local changes are not sent one by one (their clocks would start past
 * what the server holds, and Roost refuses such an update): the step 2
 * carries them too.
 * @module
 */

import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import {
  type AuthFailure,
  authFailureError,
  Connection,
  type ConnectionOptions,
  type ConnectionStatus,
} from '../connection.js'
import { Emitter, type Unsubscribe } from '../emitter.js'
import { RoostError } from '../errors.js'
import type { CloseInfo } from '../socket.js'
import { type QueryParams, segment, wsUrl } from '../url.js'
import {
  decodeMessage,
  encodeAwareness,
  encodePing,
  encodeRefresh,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
} from './messages.js'

/** Status of a {@link RoostProvider}; see `ConnectionStatus` in the core entry point. */
export type ProviderStatus = ConnectionStatus

/** Options of {@link RoostProvider}. */
export interface RoostProviderOptions extends ConnectionOptions {
  /** Server base URL, `http(s)://host:port` or `ws(s)://host:port` (a path prefix is kept). */
  url: string
  /** Extra query parameters on the WebSocket URL. */
  params?: QueryParams
  /** Use this awareness instance instead of creating one (the provider then does not destroy it). */
  awareness?: awarenessProtocol.Awareness
  /** Connect at once (default true); with false, call {@link RoostProvider.connect} later. */
  connect?: boolean
}

/** Events of a {@link RoostProvider}. */
export interface ProviderEvents {
  /** The connection status changed. */
  status: [status: ProviderStatus]
  /** `synced` changed: true once the server's step 2 has been applied on this connection. */
  synced: [synced: boolean]
  /** `saved` changed: true when every local change sent so far is durable on the server. */
  saved: [saved: boolean]
  /** A WebSocket closed (reconnection follows unless destroyed or disconnected). */
  close: [info: CloseInfo]
  /**
   * Transport errors, undecodable frames, updates that failed to apply,
   * permission denied, and a change the server refused as too large (a
   * `RoostError` with code `too_large`, after the `close` with code 1009: the
   * provider keeps reconnecting, but `saved` stays false while the document
   * holds that change).
   */
  error: [error: unknown]
  /**
   * The server refused the token (close code 4401 or 4403, after that
   * socket's `close`). With a token callback the provider asks it for a fresh
   * token and retries once at once (`failure.retrying`); otherwise, or when
   * the retry is refused too, the status becomes `unauthorized` and the
   * provider waits for {@link RoostProvider.connect}.
   */
  'auth-failed': [failure: AuthFailure]
}

/**
 * Connects a `Y.Doc` to the Roost document `docName`.
 *
 * ```ts
 * const doc = new Y.Doc()
 * const provider = new RoostProvider('notes', doc, { url: 'http://127.0.0.1:8787' })
 * provider.on('saved', (saved) => (badge.textContent = saved ? 'Saved' : 'Saving…'))
 * doc.getText('body').insert(0, 'hello')
 * ```
 */
export class RoostProvider {
  /** The document's name on the server. */
  readonly docName: string
  /** The synced document. */
  readonly doc: Y.Doc
  /** Presence (cursors, names) of everyone on this document, relayed through the server. */
  readonly awareness: awarenessProtocol.Awareness
  private readonly options: RoostProviderOptions
  private readonly ownsAwareness: boolean
  private readonly events = new Emitter<ProviderEvents>()
  private conn: Connection | null = null
  private _status: ProviderStatus = 'closed'
  private _synced = false
  private _saved: boolean
  /** Step-2/update messages sent on the current connection. */
  private sent = 0
  /** How many of those the server reported durable. */
  private acked = 0
  /** The count the server must acknowledge: the last sent message that carried local changes. */
  private needed = 0
  /** Whether the server's step 1 arrived on the current connection (and we answered it). */
  private answeredStep1 = false
  /** Local changes exist that no message on the current connection has carried yet. */
  private unsent: boolean
  private destroyed = false
  private authFailed: AuthFailure | null = null
  /** Rejecters of pending `whenSynced`/`whenSaved` promises, rejected by `destroy()`. */
  private readonly waiters = new Set<(error: RoostError) => void>()

  constructor(docName: string, doc: Y.Doc, options: RoostProviderOptions) {
    this.docName = docName
    this.doc = doc
    this.options = options
    this.ownsAwareness = options.awareness === undefined
    this.awareness = options.awareness ?? new awarenessProtocol.Awareness(doc)
    // A document that already holds content may hold changes the server lacks.
    this.unsent = doc.store.clients.size > 0
    this._saved = !this.unsent
    doc.on('update', this.onDocUpdate)
    doc.on('destroy', this.onDocDestroy)
    this.awareness.on('update', this.onAwarenessUpdate)
    if (options.connect !== false) this.connect()
  }

  /**
   * `connecting`, `open`, `reconnecting`, `unauthorized` (the server refused
   * the token; `connect()` tries again) or `closed` (after `disconnect()`/`destroy()`,
   * or `maxRetries` failed attempts).
   */
  get status(): ProviderStatus {
    return this._status
  }

  /** Why the server refused the token, while {@link status} is `unauthorized`; null otherwise. */
  get authFailure(): AuthFailure | null {
    return this._status === 'unauthorized' ? this.authFailed : null
  }

  /** True once the server's state has been applied on the current connection. */
  get synced(): boolean {
    return this._synced
  }

  /**
   * True when every local change made so far has been acknowledged by the
   * server as durably stored (a `saved` message covering it arrived).
   */
  get saved(): boolean {
    return this._saved
  }

  /** Listens for an event; returns a function that removes the listener. */
  on<K extends keyof ProviderEvents>(event: K, fn: (...args: ProviderEvents[K]) => void): Unsubscribe {
    return this.events.on(event, fn)
  }

  /** Removes a listener added with {@link on}. */
  off<K extends keyof ProviderEvents>(event: K, fn: (...args: ProviderEvents[K]) => void): void {
    this.events.off(event, fn)
  }

  /**
   * Resolves when `synced` is true (at once if it is); rejects with `timeout`
   * after `timeoutMs` (0 = never), `closed` if the provider is destroyed
   * first, or `unauthorized`/`forbidden` if the server refuses the token for good.
   */
  whenSynced(timeoutMs = 0): Promise<void> {
    return this.when('synced', () => this._synced, timeoutMs)
  }

  /**
   * Resolves when `saved` is true (at once if it is); rejects with `timeout`
   * after `timeoutMs` (0 = never), `closed` if the provider is destroyed
   * first, or `unauthorized`/`forbidden` if the server refuses the token for good.
   */
  whenSaved(timeoutMs = 0): Promise<void> {
    return this.when('saved', () => this._saved, timeoutMs)
  }

  /** Opens the connection (after `connect: false`, `disconnect()`, or status `unauthorized`). */
  connect(): void {
    if (this.destroyed || this.conn) return
    const path = `v1/yjs/${segment(this.docName)}`
    const conn = new Connection(
      (token) => wsUrl(this.options.url, path, { ...this.options.params, saved: 1, token }),
      this.options,
      encodeRefresh,
      encodePing(),
    )
    this.conn = conn
    conn.on('status', (s) => {
      if (this.conn !== conn) return
      // After `maxRetries` failed attempts, or a token refused for good, the
      // connection gives up; forget it so that `connect()` can start a new one.
      if (s === 'closed' || s === 'unauthorized') this.conn = null
      if (s === 'unauthorized') {
        this.authFailed = conn.authFailure
        this.setStatus(s)
        const error = authFailureError(this.authFailed ?? { code: 4401, reason: '' })
        for (const reject of [...this.waiters]) reject(error)
        return
      }
      this.setStatus(s)
    })
    conn.on('auth-failed', (failure) => this.events.emit('auth-failed', failure))
    conn.on('open', () => this.onOpen())
    conn.on('message', (data) => this.onMessage(data))
    conn.on('close', (code, reason, wasOpen) => this.onClose({ code, reason, wasOpen }))
    conn.on('error', (e) => this.events.emit('error', e))
    this.setStatus('connecting')
    conn.start()
  }

  /** Closes the connection without destroying the provider; `connect()` opens it again. */
  disconnect(): void {
    const conn = this.conn
    if (!conn) {
      if (this._status === 'unauthorized') this.setStatus('closed')
      return
    }
    this.conn = null
    conn.close()
    this.afterClose({ code: 1000, reason: 'disconnect', wasOpen: false })
    this.setStatus('closed')
  }

  /** Disconnects, stops listening to the document, and destroys the awareness it created. */
  destroy(): void {
    if (this.destroyed) return
    // Tell the others we left (the server also drops a closed socket's awareness).
    this.sendLocalAwarenessRemoval()
    this.disconnect()
    this.destroyed = true
    this.doc.off('update', this.onDocUpdate)
    this.doc.off('destroy', this.onDocDestroy)
    this.awareness.off('update', this.onAwarenessUpdate)
    if (this.ownsAwareness) this.awareness.destroy()
    for (const reject of [...this.waiters]) reject(new RoostError('closed', 'the provider was destroyed'))
    this.events.clear()
  }

  private when(event: 'synced' | 'saved', done: () => boolean, timeoutMs: number): Promise<void> {
    if (done()) return Promise.resolve()
    if (this.destroyed) return Promise.reject(new RoostError('closed', 'the provider was destroyed'))
    const refused = this.authFailure
    if (refused) return Promise.reject(authFailureError(refused))
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | null = null
      const finish = (error: RoostError | null) => {
        off()
        this.waiters.delete(fail)
        if (timer !== null) clearTimeout(timer)
        if (error) reject(error)
        else resolve()
      }
      const fail = (error: RoostError) => finish(error)
      const off = this.events.on(event, (v) => {
        if (v) finish(null)
      })
      this.waiters.add(fail)
      if (timeoutMs > 0) {
        timer = setTimeout(() => finish(new RoostError('timeout', `not ${event} after ${timeoutMs} ms`)), timeoutMs)
      }
    })
  }

  private setStatus(status: ProviderStatus): void {
    if (status === this._status) return
    this._status = status
    this.events.emit('status', status)
  }

  private setSynced(synced: boolean): void {
    if (synced === this._synced) return
    this._synced = synced
    this.events.emit('synced', synced)
  }

  private updateSaved(): void {
    const saved = !this.unsent && this.acked >= this.needed
    if (saved === this._saved) return
    this._saved = saved
    this.events.emit('saved', saved)
  }

  private send(bytes: Uint8Array): boolean {
    return this.conn?.send(bytes) ?? false
  }

  /**
   * Sends a step-2 or update message and counts it for the `saved` extension.
   * `carriesChanges` false (an empty step 2) still counts, but `saved` need
   * not wait for its acknowledgement.
   */
  private sendCounted(bytes: Uint8Array, carriesChanges = true): boolean {
    if (!this.send(bytes)) return false
    this.sent++
    if (carriesChanges) this.needed = this.sent
    return true
  }

  private onOpen(): void {
    this.sent = 0
    this.acked = 0
    this.needed = 0
    this.answeredStep1 = false
    this.send(encodeSyncStep1(Y.encodeStateVector(this.doc)))
    if (this.awareness.getLocalState() !== null) {
      this.send(encodeAwareness(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [this.doc.clientID])))
    }
  }

  private onClose(info: CloseInfo): void {
    this.afterClose(info)
    this.events.emit('close', info)
  }

  private afterClose(_info: CloseInfo): void {
    // Whatever was sent but not acknowledged may be lost: it is re-sent in
    // the step 2 of the next connection.
    if (this.acked < this.needed) this.unsent = true
    this.sent = 0
    this.acked = 0
    this.needed = 0
    this.setSynced(false)
    this.updateSaved()
    const others = [...this.awareness.getStates().keys()].filter((c) => c !== this.doc.clientID)
    if (others.length > 0) awarenessProtocol.removeAwarenessStates(this.awareness, others, this)
  }

  private onMessage(data: string | Uint8Array): void {
    if (typeof data === 'string') return
    const msg = decodeMessage(data)
    switch (msg.type) {
      case 'sync-step1': {
        // The step 2 carries everything the server lacks, offline changes included.
        const update = Y.encodeStateAsUpdate(this.doc, msg.stateVector)
        const empty = update.length === 2 && update[0] === 0 && update[1] === 0
        if (this.sendCounted(encodeSyncStep2(update), !empty)) this.unsent = false
        this.answeredStep1 = true
        this.updateSaved()
        return
      }
      case 'sync-step2':
      case 'sync-update': {
        try {
          Y.applyUpdate(this.doc, msg.update, this)
        } catch (e) {
          this.events.emit('error', e)
          return
        }
        if (msg.type === 'sync-step2') {
          this.setSynced(true)
          if (this.unsent && !this.answeredStep1) {
            // The server did not ask with a step 1 of its own: send the whole
            // state so that changes made while offline reach it.
            if (this.sendCounted(encodeSyncUpdate(Y.encodeStateAsUpdate(this.doc)))) this.unsent = false
            this.updateSaved()
          }
        }
        return
      }
      case 'awareness':
        try {
          awarenessProtocol.applyAwarenessUpdate(this.awareness, msg.update, this)
        } catch (e) {
          this.events.emit('error', e)
        }
        return
      case 'query-awareness':
        this.send(
          encodeAwareness(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [...this.awareness.getStates().keys()])),
        )
        return
      case 'saved':
        if (msg.count > this.acked) this.acked = msg.count
        this.updateSaved()
        return
      case 'auth':
        if (msg.denied) this.events.emit('error', new RoostError('forbidden', msg.reason || 'permission denied'))
        return
      case 'malformed':
        this.events.emit('error', new RoostError('bad_response', `malformed message: ${msg.reason}`))
        return
      case 'ping':
        return // the heartbeat's pong; the connection counted it as life
      case 'unknown':
      case 'refresh':
        return // stock y-websocket behaviour: ignore message types we do not know
    }
  }

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin === this) return
    // With earlier changes not yet carried on this connection, this update
    // alone would skip clocks the server lacks (refused with 1008): it waits
    // for the step 2 (or the whole-state fallback), which carries both.
    if (this.unsent || !this.sendCounted(encodeSyncUpdate(update))) this.unsent = true
    this.updateSaved()
  }

  private readonly onDocDestroy = (): void => this.destroy()

  private readonly onAwarenessUpdate = (
    { added, updated, removed }: { added: number[]; updated: number[]; removed: number[] },
    origin: unknown,
  ): void => {
    if (origin === this) return
    const changed = added.concat(updated, removed)
    if (changed.length === 0) return
    this.send(encodeAwareness(awarenessProtocol.encodeAwarenessUpdate(this.awareness, changed)))
  }

  private sendLocalAwarenessRemoval(): void {
    if (this.conn?.socket && this.awareness.getLocalState() !== null) {
      awarenessProtocol.removeAwarenessStates(this.awareness, [this.doc.clientID], 'disconnect')
    }
  }
}
