// Checks protocol/vectors/ (shared with protocol/tests/vectors.rs) against the
// client's encoders and decoders, and the Yjs payloads against yjs itself.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { decodeServerFrame, encodeAuth, encodeCall, encodePing as encodeJsonPing, errorFromResponse } from '../../src/index.js'
import {
  decodeMessage,
  encodeAwareness,
  encodePing,
  encodeQueryAwareness,
  encodeRefresh,
  encodeSaved,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
} from '../../src/yjs/index.js'

const dir = fileURLToPath(new URL('../../../protocol/vectors/', import.meta.url))
const envelope = JSON.parse(readFileSync(`${dir}envelope.json`, 'utf8'))
const yjs = JSON.parse(readFileSync(`${dir}yjs.json`, 'utf8'))

/** `[name, vector]` rows for it.each. */
const cases = (list: any[]): Array<[string, any]> => list.map((v) => [v.name, v])
const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))
const toHex = (u: Uint8Array) => Buffer.from(u).toString('hex')

describe('envelope vectors', () => {
  it.each(cases(envelope.client_frames))('client frame %s encodes byte-exact', (_n, v: any) => {
    expect(encodeCall(v.frame.id, v.frame.method, v.frame.args)).toBe(v.text)
  })

  it.each(cases(envelope.auth_client_frames))('auth frame %s encodes byte-exact', (_n, v: any) => {
    expect(encodeAuth(v.token)).toBe(v.text)
  })

  it.each(cases(envelope.ping_client_frames))('ping frame %s encodes byte-exact', (_n, v: any) => {
    expect(encodeJsonPing()).toBe(v.text)
  })

  it.each(cases(envelope.server_frames))('server frame %s decodes', (_n, v: any) => {
    const f = v.frame
    const decoded = decodeServerFrame(v.text)
    if (f.type === 'pong') expect(decoded).toEqual({ type: 'pong' })
    else if (f.type === 'event') expect(decoded).toEqual({ type: 'event', event: f.event, data: f.data })
    else if ('error' in f) expect(decoded).toEqual({ type: 'result', id: f.id, error: f.error })
    else expect(decoded).toEqual({ type: 'result', id: f.id, ok: f.ok })
  })

  it('a result without `ok` means null', () => {
    expect(decodeServerFrame('{"type":"result","id":3}')).toEqual({ type: 'result', id: 3, ok: null })
  })

  it.each(cases(envelope.other_client_frames))('%s is not a server envelope', (_n, v: any) => {
    expect(decodeServerFrame(v.text)).toBeNull()
  })

  it.each(cases(envelope.error_bodies))('error body %s', (_n, v: any) => {
    const e = errorFromResponse(v.status, v.text)
    expect(e.code).toBe(v.code)
    expect(e.message).toBe(v.message)
    expect(e.status).toBe(v.status)
  })
})

describe('yjs vectors', () => {
  const byName = new Map<string, any>(cases(yjs.messages))

  it.each(cases(yjs.messages))('%s encodes and decodes byte-exact', (_n, v: any) => {
    const bytes = hex(v.hex)
    const msg = decodeMessage(bytes)
    const payload = v.payload_hex === undefined ? undefined : hex(v.payload_hex)
    let encoded: Uint8Array
    switch (v.message_type) {
      case 0: {
        const type = ['sync-step1', 'sync-step2', 'sync-update'][v.sync_type]
        expect(msg.type).toBe(type)
        const got = msg.type === 'sync-step1' ? msg.stateVector : (msg as { update: Uint8Array }).update
        expect(toHex(got)).toBe(v.payload_hex)
        encoded = [encodeSyncStep1, encodeSyncStep2, encodeSyncUpdate][v.sync_type]!(payload!)
        break
      }
      case 1:
        expect(msg).toEqual({ type: 'awareness', update: payload })
        encoded = encodeAwareness(payload!)
        break
      case 3:
        expect(msg).toEqual({ type: 'query-awareness' })
        encoded = encodeQueryAwareness()
        break
      case 100:
        expect(msg).toEqual({ type: 'saved', count: v.count })
        encoded = encodeSaved(v.count)
        break
      case 101:
        expect(msg).toEqual({ type: 'refresh', token: v.token })
        encoded = encodeRefresh(v.token)
        break
      case 102:
        expect(msg).toEqual({ type: 'ping' })
        encoded = encodePing()
        break
      default:
        throw new Error(`unexpected type ${v.message_type}`)
    }
    expect(toHex(encoded)).toBe(v.hex)
  })

  it.each(cases(yjs.messages.filter((v: any) => v.text)))('%s applies to the documented text', (_n, v: any) => {
    const doc = new Y.Doc()
    if (v.text.base) Y.applyUpdate(doc, hex(byName.get(v.text.base).payload_hex))
    Y.applyUpdate(doc, hex(v.payload_hex))
    expect(doc.getText(v.text.name).toString()).toBe(v.text.after)
  })

  it.each(cases(yjs.messages.filter((v: any) => v.state_vector)))('%s state vector', (_n, v: any) => {
    const sv = Y.decodeStateVector(hex(v.payload_hex))
    expect(Object.fromEntries([...sv].map(([k, c]) => [String(k), c]))).toEqual(v.state_vector)
  })

  it.each(cases(yjs.messages.filter((v: any) => v.awareness)))('%s awareness entries', (_n, v: any) => {
    const doc = new Y.Doc()
    doc.clientID = 999
    const aw = new awarenessProtocol.Awareness(doc)
    try {
      if (v.awareness[0].state === null) {
        // A removal only applies to a client we know: apply the matching "alice" update first.
        awarenessProtocol.applyAwarenessUpdate(aw, hex(byName.get('awareness_alice').payload_hex), 'test')
      }
      awarenessProtocol.applyAwarenessUpdate(aw, hex(v.payload_hex), 'test')
      for (const e of v.awareness) {
        expect(aw.meta.get(e.client_id)?.clock).toBe(e.clock)
        expect(aw.getStates().get(e.client_id) ?? null).toEqual(e.state)
      }
    } finally {
      aw.destroy()
    }
  })
})

describe('decodeMessage on bad input', () => {
  it.each([
    ['empty', ''],
    ['truncated varUint', '80'],
    ['truncated payload', '000105aa'],
    ['unknown sync type', '000500'],
    ['overlong varUint', 'ffffffffffffffffff01'],
  ])('%s is malformed, never a throw', (_n, h) => {
    expect(decodeMessage(hex(h)).type).toBe('malformed')
  })

  it('unknown message types are reported as unknown', () => {
    expect(decodeMessage(hex('0500'))).toEqual({ type: 'unknown', messageType: 5 })
  })
})
