// RoostProvider against the real roost binary's /v1/yjs/{doc} endpoint.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'
import type { WebSocketConstructor } from '../../src/index.js'
import { RoostProvider, type RoostProviderOptions } from '../../src/yjs/index.js'
import { recordingWebSocket } from '../helpers/recording-ws.js'
import { RoostServer } from './roost.js'
import { until } from '../helpers/until.js'

const WS = WebSocket as unknown as WebSocketConstructor
let server: RoostServer
const providers: RoostProvider[] = []
const unique = () => `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`

function provider(name: string, doc: Y.Doc, extra: Partial<RoostProviderOptions> = {}): RoostProvider {
  const p = new RoostProvider(name, doc, {
    url: server.url,
    WebSocket: WS,
    backoff: { initialDelayMs: 50, maxDelayMs: 500 },
    ...extra,
  })
  providers.push(p)
  return p
}

beforeAll(async () => {
  server = await RoostServer.start()
})

afterAll(async () => {
  for (const p of providers) p.destroy()
  await server?.dispose()
})

describe('RoostProvider against roost', () => {
  it('two providers converge, with awareness', async () => {
    const name = unique()
    const a = new Y.Doc()
    const b = new Y.Doc()
    const pa = provider(name, a)
    const pb = provider(name, b)
    await Promise.all([pa.whenSynced(10_000), pb.whenSynced(10_000)])
    a.getText('t').insert(0, 'hello ')
    b.getText('t').insert(0, 'world ')
    a.getMap('m').set('k', 1)
    await until(
      () => a.getText('t').toString() === b.getText('t').toString() && b.getMap('m').get('k') === 1,
      'convergence',
    )
    expect(a.getText('t').toString()).toContain('hello')
    expect(a.getText('t').toString()).toContain('world')

    pa.awareness.setLocalState({ user: 'alice' })
    await until(() => (pb.awareness.getStates().get(a.clientID) as any)?.user === 'alice', 'awareness')
    await Promise.all([pa.whenSaved(10_000), pb.whenSaved(10_000)])
  })

  it('saved only after the server acknowledges, and the acknowledged state survives kill -9', async () => {
    const name = unique()
    const rec = recordingWebSocket()
    const doc = new Y.Doc()
    const p = provider(name, doc, { WebSocket: rec.WebSocket as unknown as WebSocketConstructor })
    await p.whenSynced(10_000)
    const checks: Array<{ maxSaved: number; updates: number; savedFrames: number }> = []
    p.on('saved', (saved) => {
      const log = rec.logs.at(-1)!
      if (saved) checks.push({ maxSaved: log.maxSaved, updates: log.counted, savedFrames: log.savedFrames })
    })
    for (let i = 0; i < 20; i++) doc.getText('t').insert(doc.getText('t').length, `line ${i}\n`)
    expect(p.saved).toBe(false)
    await p.whenSaved(10_000)
    expect(checks.length).toBeGreaterThan(0)
    for (const c of checks) {
      expect(c.savedFrames).toBeGreaterThan(0)
      // Every counted message sent so far was acknowledged when `saved` turned true.
      expect(c.maxSaved).toBeGreaterThanOrEqual(c.updates)
    }
    const expected = doc.getText('t').toString()

    await server.restart('SIGKILL')
    const fresh = new Y.Doc()
    const q = provider(name, fresh)
    await q.whenSynced(10_000)
    expect(fresh.getText('t').toString()).toBe(expected)
  })

  it('reconnects after a restart; edits made while the server was down are saved afterwards', async () => {
    const name = unique()
    const doc = new Y.Doc()
    const p = provider(name, doc)
    await p.whenSynced(10_000)
    doc.getText('t').insert(0, 'before ')
    await p.whenSaved(10_000)
    await server.stop('SIGKILL')
    await until(() => p.status === 'reconnecting', 'reconnecting')
    doc.getText('t').insert(doc.getText('t').length, 'offline')
    expect(p.saved).toBe(false)
    await server.startAgain()
    await p.whenSynced(15_000)
    await p.whenSaved(10_000)
    expect(p.status).toBe('open')
    const other = new Y.Doc()
    const q = provider(name, other)
    await q.whenSynced(10_000)
    expect(other.getText('t').toString()).toBe('before offline')
  })
})
