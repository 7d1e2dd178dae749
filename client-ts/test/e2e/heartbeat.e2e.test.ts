// The heartbeat against the real roost binary: a server frozen with SIGSTOP
// (sockets stay open, nothing answers) moves RoostProvider and ObjectSocket
// to `reconnecting` within the ping interval plus timeout; after SIGCONT they
// come back, sync, and nothing written meanwhile is lost.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { connect, type ObjectSocket, type WebSocketConstructor } from '../../src/index.js'
import { RoostProvider, type RoostProviderOptions } from '../../src/yjs/index.js'
import { RoostServer } from './roost.js'

const WS = WebSocket as unknown as WebSocketConstructor
/** Short heartbeat settings: a frozen server is noticed within about 1.5 s. */
const quick = { pingIntervalMs: 500, pingTimeoutMs: 1000, connectTimeoutMs: 2000, backoff: { initialDelayMs: 50, maxDelayMs: 500 } }
/** Generous bound on noticing (1.5 s expected), for a loaded 2-core machine. */
const NOTICE_MS = 6000
let server: RoostServer
const providers: RoostProvider[] = []
const sockets: ObjectSocket[] = []

function provider(name: string, doc: Y.Doc, extra: Partial<RoostProviderOptions> = {}): RoostProvider {
  const p = new RoostProvider(name, doc, { url: server.url, WebSocket: WS, ...quick, ...extra })
  providers.push(p)
  return p
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<number> {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
  return Date.now() - start
}

/** Runs `body` with the server frozen; it is always thawed afterwards. */
async function whileFrozen(body: () => Promise<void>): Promise<void> {
  server.freeze(true)
  try {
    await body()
  } finally {
    server.freeze(false)
  }
}

beforeAll(async () => {
  server = await RoostServer.start()
})

afterAll(async () => {
  for (const p of providers) p.destroy()
  for (const s of sockets) s.close()
  await server?.dispose()
})

describe('heartbeat against a frozen roost', () => {
  it('RoostProvider notices a SIGSTOPped server, then reconnects and syncs after SIGCONT', async () => {
    const name = `hb-${Date.now().toString(36)}`
    const doc = new Y.Doc()
    const p = provider(name, doc)
    // Without a heartbeat the same freeze goes unnoticed (the reason for it).
    const blind = provider(name, new Y.Doc(), { pingIntervalMs: 0 })
    await Promise.all([p.whenSynced(10_000), blind.whenSynced(10_000)])
    doc.getText('t').insert(0, 'before ')
    await p.whenSaved(10_000)
    const statuses: string[] = []
    p.on('status', (s) => statuses.push(s))
    await whileFrozen(async () => {
      const took = await until(() => p.status === 'reconnecting', 'reconnecting', NOTICE_MS)
      expect(took).toBeLessThan(NOTICE_MS)
      expect(blind.status).toBe('open')
      // Edits made meanwhile wait for the next connection.
      doc.getText('t').insert(7, 'frozen')
      expect(p.saved).toBe(false)
    })
    await until(() => p.status === 'open', 'open again', 15_000)
    await p.whenSynced(10_000)
    await p.whenSaved(10_000)
    expect(statuses.slice(0, 1)).toEqual(['reconnecting'])
    expect(statuses.at(-1)).toBe('open')
    const fresh = new Y.Doc()
    await provider(name, fresh).whenSynced(10_000)
    expect(fresh.getText('t').toString()).toBe('before frozen')
  })

  it('with default settings, RoostProvider notices within 30 s (y-websocket: 33 s)', async () => {
    const doc = new Y.Doc()
    const p = new RoostProvider(`hb-default-${Date.now().toString(36)}`, doc, { url: server.url, WebSocket: WS })
    providers.push(p)
    await p.whenSynced(10_000)
    doc.getText('t').insert(0, 'x')
    // Freeze right after the server's last frame (the `saved` ack): the worst case.
    await p.whenSaved(10_000)
    await whileFrozen(async () => {
      const took = await until(() => p.status === 'reconnecting', 'reconnecting', 30_000)
      expect(took).toBeLessThan(30_000)
    })
    await until(() => p.status === 'open', 'open again', 15_000)
    await p.whenSynced(10_000)
  }, 60_000)

  it('ObjectSocket notices a SIGSTOPped server, then reconnects and calls after SIGCONT', async () => {
    const room = connect({ url: server.url, class: 'room', name: 'hb', params: { name: 'ann' }, WebSocket: WS, ...quick })
    sockets.push(room)
    await room.whenOpen(10_000)
    expect(await room.call('who')).toEqual(['ann'])
    const closes: number[] = []
    room.onClose((c) => closes.push(c.code))
    await whileFrozen(async () => {
      await until(() => room.status === 'reconnecting', 'reconnecting', NOTICE_MS)
    })
    expect(closes[0]).toBe(4000)
    await room.whenOpen(15_000)
    expect(await room.call('send', { text: 'back' })).toHaveProperty('id')
  })
})
