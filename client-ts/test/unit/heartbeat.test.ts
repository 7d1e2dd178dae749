// The heartbeat of the shared connection layer, against an in-memory
// WebSocket: a quiet socket is pinged, an answer (or any frame) keeps it,
// silence after a ping replaces it through the normal reconnection path.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { connect, DEFAULT_HEARTBEAT, type ObjectSocket } from '../../src/index.js'
import { RoostProvider } from '../../src/yjs/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'

const fast = { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 }
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let sockets: ObjectSocket[] = []
let providers: RoostProvider[] = []

function open(options: Partial<Parameters<typeof connect>[0]> = {}): ObjectSocket {
  const s = connect({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket, backoff: fast, ...options })
  sockets.push(s)
  return s
}

const pings = (ws: FakeWebSocket) => ws.sent.filter((d) => d === '{"type":"ping"}').length

beforeEach(() => FakeWebSocket.reset())
afterEach(() => {
  for (const s of sockets) s.close()
  for (const p of providers) p.destroy()
  sockets = []
  providers = []
})

describe('heartbeat defaults', () => {
  it('notice a silent server within 30 s (the stock y-websocket provider takes 33 s)', () => {
    const { pingIntervalMs, pingTimeoutMs } = DEFAULT_HEARTBEAT
    expect(pingIntervalMs).toBeGreaterThan(0)
    expect(pingTimeoutMs).toBeGreaterThan(0)
    expect(pingIntervalMs + pingTimeoutMs).toBeLessThan(30_000)
  })
})

describe('ObjectSocket heartbeat', () => {
  it('pings a quiet socket; the pong keeps it open and is not a message', async () => {
    const s = open({ pingIntervalMs: 40, pingTimeoutMs: 200 })
    const raw: unknown[] = []
    const events: string[] = []
    s.onMessage((m) => raw.push(m))
    s.onAnyEvent((e) => events.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    for (let i = 0; i < 3; i++) {
      await until(() => pings(ws) === i + 1, 2000, `ping ${i + 1}`)
      ws.serverSend('{"type":"pong"}')
    }
    expect(s.status).toBe('open')
    expect(FakeWebSocket.instances).toHaveLength(1)
    expect(raw).toEqual([])
    expect(events).toEqual([])
  })

  it('drops a socket that hears nothing after a ping and reconnects', async () => {
    const s = open({ pingIntervalMs: 30, pingTimeoutMs: 60 })
    const statuses: string[] = []
    const closes: Array<{ code: number; reason: string; wasOpen: boolean }> = []
    const errors: unknown[] = []
    s.onStatus((st) => statuses.push(st))
    s.onClose((c) => closes.push(c))
    s.onError((e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    const dead = FakeWebSocket.last()
    dead.open()
    await until(() => s.status === 'reconnecting', 2000, 'reconnecting')
    expect(pings(dead)).toBe(1)
    expect(dead.closedWith).toEqual({ code: 4000, reason: 'no answer to ping' })
    expect(closes).toEqual([{ code: 4000, reason: 'no answer to ping', wasOpen: true }])
    expect(String(errors[0])).toMatch(/no answer to ping within 60 ms/)
    await until(() => FakeWebSocket.instances.length === 2, 2000, 'a new attempt')
    FakeWebSocket.last().open()
    expect(statuses).toEqual(['open', 'reconnecting', 'open'])
  })

  it('any frame counts as life: a busy socket is never pinged', async () => {
    const s = open({ pingIntervalMs: 150, pingTimeoutMs: 150 })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    for (let i = 0; i < 40; i++) {
      ws.serverSend('{"type":"event","event":"tick","data":null}')
      await sleep(10)
    }
    expect(pings(ws)).toBe(0)
    expect(s.status).toBe('open')
  })

  it('an answer other than the pong also keeps the socket', async () => {
    const s = open({ pingIntervalMs: 30, pingTimeoutMs: 120 })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    await until(() => pings(ws) === 1, 2000, 'a ping')
    ws.serverSend('hello')
    await until(() => pings(ws) === 2, 2000, 'a second ping')
    expect(s.status).toBe('open')
  })

  it('pingIntervalMs 0 turns the heartbeat off', async () => {
    const s = open({ pingIntervalMs: 0, pingTimeoutMs: 10 })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    await sleep(100)
    expect(ws.sent).toEqual([])
    expect(s.status).toBe('open')
  })
})

describe('RoostProvider heartbeat', () => {
  it('pings with [102], ignores the pong, and reconnects when nothing answers', async () => {
    const doc = new Y.Doc()
    const p = new RoostProvider('d', doc, { url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket, backoff: fast, pingIntervalMs: 30, pingTimeoutMs: 80 })
    providers.push(p)
    const errors: unknown[] = []
    p.on('error', (e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    const isPing = (d: string | Uint8Array) => d instanceof Uint8Array && d.length === 1 && d[0] === 102
    await until(() => ws.sent.filter(isPing).length === 1, 2000, 'a ping')
    ws.serverSend(Uint8Array.of(102))
    expect(errors).toEqual([])
    await until(() => ws.sent.filter(isPing).length === 2, 2000, 'a second ping')
    expect(p.status).toBe('open')
    await until(() => p.status === 'reconnecting', 2000, 'reconnecting')
    expect(ws.closedWith?.code).toBe(4000)
  })
})
