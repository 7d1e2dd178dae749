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

  it('typing the moment the socket reopens, with offline edits pending, is not refused (no 1008 "skips clocks")', async () => {
    const name = unique()
    const doc = new Y.Doc()
    const p = provider(name, doc)
    const closes: string[] = []
    p.on('close', ({ code, reason }) => {
      if (code !== 1006) closes.push(`${code} ${reason}`)
    })
    await p.whenSynced(10_000)
    doc.getText('t').insert(0, 'before ')
    await p.whenSaved(10_000)
    await server.stop('SIGKILL')
    doc.getText('t').insert(7, 'offline ')
    let typed = 0
    p.on('status', (status) => {
      // The user types on: the keystroke lands before the server's step 1 is answered.
      if (status === 'open' && typed++ === 0) doc.getText('t').insert(doc.getText('t').length, 'fast')
    })
    await server.startAgain()
    await p.whenSynced(15_000)
    await p.whenSaved(10_000)
    expect(closes).toEqual([])
    const other = new Y.Doc()
    await provider(name, other).whenSynced(10_000)
    expect(other.getText('t').toString()).toBe('before offline fast')
  })

  it('two clients typing through a kill -9: every edit kept, both converge, nothing shown saved is lost', async () => {
    const name = unique()
    const docs = [new Y.Doc(), new Y.Doc()]
    let attempts = 0
    class CountingWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols)
        attempts++
      }
    }
    // The default backoff (250 ms doubling to 10 s), to check it is no hot loop.
    const ps = docs.map((d) => provider(name, d, { WebSocket: CountingWebSocket as unknown as WebSocketConstructor, backoff: {} }))
    await Promise.all(ps.map((p) => p.whenSynced(10_000)))
    // What each client showed as saved, token by token.
    const shownSaved = new Set<string>()
    ps.forEach((p, i) =>
      p.on('saved', (saved) => {
        if (saved) for (const t of docs[i]!.getText('t').toString().match(/<\d:\d+>/g) ?? []) shownSaved.add(t)
      }),
    )
    const typed: string[] = []
    let n = 0
    const type = () => {
      for (let i = 0; i < 2; i++) {
        const token = `<${i}:${n}>`
        typed.push(token)
        const t = docs[i]!.getText('t')
        t.insert(t.length, token)
      }
      n++
    }
    const typing = setInterval(type, 5)
    try {
      await new Promise((r) => setTimeout(r, 500))
      await server.stop('SIGKILL')
      attempts = 0
      await new Promise((r) => setTimeout(r, 2_000))
      // Two clients, 2 s down: 250, 500, 1000 ms steps (with jitter) are at most ~5 attempts each.
      expect(attempts).toBeLessThanOrEqual(12)
      expect(ps.map((p) => p.status)).toEqual(['reconnecting', 'reconnecting'])
      await server.startAgain()
      await new Promise((r) => setTimeout(r, 300))
    } finally {
      clearInterval(typing)
    }
    await Promise.all(ps.map((p) => p.whenSynced(20_000)))
    await Promise.all(ps.map((p) => p.whenSaved(20_000)))
    await until(() => docs[0]!.getText('t').toString() === docs[1]!.getText('t').toString(), 'convergence')
    const final = docs[0]!.getText('t').toString()
    expect(typed.filter((t) => !final.includes(t))).toEqual([])

    await server.restart('SIGKILL')
    const fresh = new Y.Doc()
    await provider(name, fresh).whenSynced(10_000)
    const stored = fresh.getText('t').toString()
    expect(stored).toBe(final)
    expect(shownSaved.size).toBeGreaterThan(0)
    expect([...shownSaved].filter((t) => !stored.includes(t))).toEqual([])
  }, 60_000)
})
