// The provider against an in-process y-websocket "server" on a FakeWebSocket:
// sync, updates, awareness, and the `saved` signal driven by type-100 frames.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { RoostProvider, decodeMessage, encodeSaved, encodeSyncStep1, encodeSyncStep2, encodeSyncUpdate, encodeAwareness } from '../../src/yjs/index.js'
import { RoostError } from '../../src/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'

/** Plays the server for one FakeWebSocket; acknowledges durability only when told to. */
class FakeServer {
  received = 0
  constructor(
    readonly ws: FakeWebSocket,
    readonly doc: Y.Doc,
    readonly sendStep1 = true,
  ) {}

  open(): void {
    this.ws.open()
    if (this.sendStep1) this.ws.serverSend(encodeSyncStep1(Y.encodeStateVector(this.doc)))
  }

  /** Handles everything the client sent since the last call. */
  process(): void {
    const frames = this.ws.sent.splice(0)
    for (const f of frames) {
      if (typeof f === 'string') continue
      const m = decodeMessage(f)
      if (m.type === 'sync-step1') this.ws.serverSend(encodeSyncStep2(Y.encodeStateAsUpdate(this.doc, m.stateVector)))
      else if (m.type === 'sync-step2' || m.type === 'sync-update') {
        Y.applyUpdate(this.doc, m.update)
        this.received++
      }
    }
  }

  ackAll(): void {
    this.ws.serverSend(encodeSaved(this.received))
  }
}

const opts = { url: 'ws://127.0.0.1:9', WebSocket: FakeWebSocket, backoff: { initialDelayMs: 5, jitter: 0 } }
let providers: RoostProvider[] = []
function provider(doc: Y.Doc, extra: Record<string, unknown> = {}): RoostProvider {
  const p = new RoostProvider('notes/1', doc, { ...opts, ...extra })
  providers.push(p)
  return p
}

beforeEach(() => FakeWebSocket.reset())
afterEach(() => {
  for (const p of providers) p.destroy()
  providers = []
})

describe('RoostProvider', () => {
  it('connects to /v1/yjs/{doc}?saved=1 with the token', async () => {
    provider(new Y.Doc(), { token: () => 'tk', params: { x: '1' } })
    await until(() => FakeWebSocket.instances.length === 1)
    const url = new URL(FakeWebSocket.last().url)
    expect(url.pathname).toBe('/v1/yjs/notes%2F1')
    expect(url.searchParams.get('saved')).toBe('1')
    expect(url.searchParams.get('token')).toBe('tk')
    expect(url.searchParams.get('x')).toBe('1')
  })

  it('syncs both ways and reports synced', async () => {
    const serverDoc = new Y.Doc()
    serverDoc.getText('t').insert(0, 'server')
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'client ')
    const p = provider(doc)
    const syncs: boolean[] = []
    p.on('synced', (s) => syncs.push(s))
    await until(() => FakeWebSocket.instances.length === 1)
    const server = new FakeServer(FakeWebSocket.last(), serverDoc)
    server.open()
    server.process()
    expect(p.synced).toBe(true)
    expect(doc.getText('t').toString()).toBe(serverDoc.getText('t').toString())
    expect(serverDoc.getText('t').toString()).toContain('client')
    expect(syncs).toEqual([true])
    // remote update
    const other = new Y.Doc()
    Y.applyUpdate(other, Y.encodeStateAsUpdate(serverDoc))
    other.on('update', (u: Uint8Array) => server.ws.serverSend(encodeSyncUpdate(u)))
    other.getText('t').insert(0, '>')
    expect(doc.getText('t').toString().startsWith('>')).toBe(true)
    // a remote update is not echoed back
    expect(server.ws.sent).toEqual([])
  })

  it('is saved only after the server acknowledges every step-2/update message', async () => {
    const doc = new Y.Doc()
    const p = provider(doc)
    expect(p.saved).toBe(true) // nothing local yet
    await until(() => FakeWebSocket.instances.length === 1)
    const server = new FakeServer(FakeWebSocket.last(), new Y.Doc())
    server.open()
    expect(p.saved).toBe(true) // our step 2 answering the server's step 1 was empty
    server.process()
    server.ackAll()
    expect(p.saved).toBe(true)
    const savedEvents: boolean[] = []
    p.on('saved', (s) => savedEvents.push(s))
    doc.getText('t').insert(0, 'a')
    doc.getText('t').insert(1, 'b')
    expect(p.saved).toBe(false)
    server.process()
    expect(server.received).toBe(3)
    server.ws.serverSend(encodeSaved(2))
    expect(p.saved).toBe(false)
    server.ws.serverSend(encodeSaved(3))
    expect(p.saved).toBe(true)
    expect(savedEvents).toEqual([false, true])
    await expect(p.whenSaved(100)).resolves.toBeUndefined()
  })

  it('changes made offline or unacknowledged are re-sent on reconnect before saved', async () => {
    const doc = new Y.Doc()
    const p = provider(doc)
    await until(() => FakeWebSocket.instances.length === 1)
    const serverDoc = new Y.Doc()
    let server = new FakeServer(FakeWebSocket.last(), serverDoc)
    server.open()
    server.process()
    server.ackAll()
    doc.getText('t').insert(0, 'lost?') // sent, never acknowledged
    server.ws.serverClose(1012)
    expect(p.saved).toBe(false)
    expect(p.synced).toBe(false)
    doc.getText('t').insert(0, 'offline ') // not sent at all
    await until(() => FakeWebSocket.instances.length === 2, 2000, 'reconnect')
    // The new server lost the unacknowledged update.
    const fresh = new Y.Doc()
    server = new FakeServer(FakeWebSocket.last(), fresh)
    server.open()
    server.process()
    expect(fresh.getText('t').toString()).toBe('offline lost?')
    expect(p.saved).toBe(false)
    server.ackAll()
    expect(p.saved).toBe(true)
  })

  it('a change the server refuses as too large (1009) is reported as a `too_large` error, and stays unsaved', async () => {
    const doc = new Y.Doc()
    const p = provider(doc)
    const errors: unknown[] = []
    p.on('error', (e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    const server = new FakeServer(FakeWebSocket.last(), new Y.Doc())
    server.open()
    server.process()
    doc.getText('t').insert(0, 'x'.repeat(5000))
    server.ws.serverClose(1009, 'update is 5015 bytes; the limit is 1000')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(RoostError)
    expect(errors[0]).toMatchObject({ code: 'too_large' })
    expect((errors[0] as RoostError).message).toContain('update is 5015 bytes; the limit is 1000')
    expect(p.saved).toBe(false)
    // Other closes are not errors of their own.
    await until(() => FakeWebSocket.instances.length === 2, 2000, 'reconnect')
    FakeWebSocket.last().open()
    FakeWebSocket.last().serverClose(1012, 'server restarting')
    expect(errors).toHaveLength(1)
  })

  it('with offline changes pending, an edit made before the server\'s step 1 is answered waits for the step 2', async () => {
    // Sent alone, its clocks would start past what the server holds of this
    // client (the offline changes are not there yet): Roost refuses such an
    // update and closes the socket with 1008 ("update skips clocks").
    const doc = new Y.Doc()
    const p = provider(doc)
    await until(() => FakeWebSocket.instances.length === 1)
    const serverDoc = new Y.Doc()
    let server = new FakeServer(FakeWebSocket.last(), serverDoc)
    server.open()
    server.process()
    server.ws.serverClose(1006)
    doc.getText('t').insert(0, 'offline ')
    await until(() => FakeWebSocket.instances.length === 2, 2000, 'reconnect')
    server = new FakeServer(FakeWebSocket.last(), serverDoc, false)
    server.open()
    doc.getText('t').insert(8, 'fast')
    const early = server.ws.sent.filter((f) => typeof f !== 'string').map((f) => decodeMessage(f as Uint8Array).type)
    expect(early).not.toContain('sync-update')
    expect(p.saved).toBe(false)
    server.ws.serverSend(encodeSyncStep1(Y.encodeStateVector(serverDoc)))
    server.process()
    expect(serverDoc.getText('t').toString()).toBe('offline fast')
    server.ackAll()
    expect(p.saved).toBe(true)
    // Once the step 2 is out, edits go one by one again.
    doc.getText('t').insert(0, '!')
    expect(server.ws.sent.map((f) => decodeMessage(f as Uint8Array).type)).toEqual(['sync-update'])
  })

  it('falls back to sending the whole state when the server sends no step 1', async () => {
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'before connect')
    const p = provider(doc)
    expect(p.saved).toBe(false)
    await until(() => FakeWebSocket.instances.length === 1)
    const serverDoc = new Y.Doc()
    const server = new FakeServer(FakeWebSocket.last(), serverDoc, false)
    server.open()
    server.process() // answers our step 1 with a step 2
    server.process() // our full-state update
    expect(serverDoc.getText('t').toString()).toBe('before connect')
    server.ackAll()
    expect(p.saved).toBe(true)
  })

  it('relays awareness and answers queries; removes remote states on disconnect', async () => {
    const doc = new Y.Doc()
    const p = provider(doc)
    p.awareness.setLocalState({ name: 'alice' })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    const types = () => ws.sent.splice(0).map((f) => decodeMessage(f as Uint8Array).type)
    expect(types()).toEqual(['sync-step1', 'awareness'])
    const remoteDoc = new Y.Doc()
    const remote = new awarenessProtocol.Awareness(remoteDoc)
    remote.setLocalState({ name: 'bob' })
    ws.serverSend(encodeAwareness(awarenessProtocol.encodeAwarenessUpdate(remote, [remoteDoc.clientID])))
    expect(p.awareness.getStates().get(remoteDoc.clientID)).toEqual({ name: 'bob' })
    expect(types()).toEqual([]) // not echoed
    ws.serverSend(new Uint8Array([3]))
    expect(types()).toEqual(['awareness'])
    p.awareness.setLocalState({ name: 'alice2' })
    expect(types()).toEqual(['awareness'])
    ws.serverClose()
    expect(p.awareness.getStates().has(remoteDoc.clientID)).toBe(false)
    remote.destroy()
  })

  it('ignores unknown message types and reports malformed frames', async () => {
    const p = provider(new Y.Doc())
    const errors: unknown[] = []
    p.on('error', (e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    ws.serverSend(new Uint8Array([42, 1, 2]))
    expect(errors).toHaveLength(0)
    ws.serverSend(new Uint8Array([0, 1, 9]))
    expect(errors).toHaveLength(1)
  })

  it('destroy() sends the awareness removal, closes, and stops listening', async () => {
    const doc = new Y.Doc()
    const p = provider(doc)
    p.awareness.setLocalState({ name: 'alice' })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    ws.sent.splice(0)
    p.destroy()
    expect(ws.sent.map((f) => decodeMessage(f as Uint8Array).type)).toEqual(['awareness'])
    expect(ws.readyState).toBe(3)
    expect(p.status).toBe('closed')
    doc.getText('t').insert(0, 'x')
    await new Promise((r) => setTimeout(r, 20))
    expect(FakeWebSocket.instances).toHaveLength(1)
  })

  it('disconnect() and connect() again', async () => {
    const p = provider(new Y.Doc())
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    p.disconnect()
    expect(p.status).toBe('closed')
    p.connect()
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().open()
    expect(p.status).toBe('open')
  })

  it('destroy() rejects pending whenSynced/whenSaved', async () => {
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'x')
    const p = provider(doc)
    const synced = p.whenSynced()
    const saved = p.whenSaved()
    p.destroy()
    await expect(synced).rejects.toMatchObject({ code: 'closed' })
    await expect(saved).rejects.toMatchObject({ code: 'closed' })
    await expect(p.whenSynced()).rejects.toMatchObject({ code: 'closed' })
  })
})
