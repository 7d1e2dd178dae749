// In-band token refresh: a JWT's `exp` decides when the token callback is asked
// again; the fresh token goes over the open socket instead of reconnecting.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { connect, type ObjectSocket, tokenExpiryMs } from '../../src/index.js'
import { refreshDelayMs } from '../../src/token.js'
import { decodeMessage, RoostProvider } from '../../src/yjs/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'

/** An unsigned JWT-shaped token expiring `inMs` from now (the client never checks signatures). */
function jwt(inMs: number, tag = ''): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ obj: ['room/r'], perm: 'write', exp: (Date.now() + inMs) / 1000, tag })}.sig`
}

beforeEach(() => FakeWebSocket.reset())
const cleanup: Array<() => void> = []
afterEach(() => {
  for (const f of cleanup.splice(0)) f()
})

describe('token expiry', () => {
  it('reads exp from a JWT, null otherwise', () => {
    const t = jwt(60_000)
    expect(Math.abs(tokenExpiryMs(t)! - (Date.now() + 60_000))).toBeLessThan(1000)
    expect(tokenExpiryMs('opaque-token')).toBeNull()
    expect(tokenExpiryMs('a.%%%.c')).toBeNull()
    expect(tokenExpiryMs(`${jwt(1).split('.')[0]}.${Buffer.from('{"sub":1}').toString('base64url')}.x`)).toBeNull()
  })

  it('refreshes a margin before expiry, never before half the lifetime nor within 1 s', () => {
    expect(refreshDelayMs(3_600_000, 0, 60_000)).toBe(3_540_000)
    expect(refreshDelayMs(90_000, 0, 60_000)).toBe(45_000)
    expect(refreshDelayMs(1_500, 0, 60_000)).toBe(1_000)
    expect(refreshDelayMs(0, 0, 60_000)).toBeNull()
  })
})

describe('in-band refresh', () => {
  it('object socket sends {"type":"auth"} with a fresh token before expiry, without reconnecting', async () => {
    let n = 0
    const s: ObjectSocket = connect({
      url: 'http://127.0.0.1:9',
      class: 'room',
      name: 'r',
      WebSocket: FakeWebSocket,
      token: () => jwt(2_200, String(++n)),
    })
    cleanup.push(() => s.close())
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    await until(() => ws.sent.length > 0, 3000, 'refresh frame')
    const frame = JSON.parse(ws.sent[0] as string)
    expect(frame.type).toBe('auth')
    expect(frame.token).not.toBe(new URL(ws.url).searchParams.get('token'))
    expect(n).toBe(2)
    expect(FakeWebSocket.instances).toHaveLength(1)
    expect(s.status).toBe('open')
  })

  it('no refresh for a fixed token string or an opaque token', async () => {
    const a = connect({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket, token: jwt(1_500) })
    const b = connect({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket, token: () => 'opaque' })
    cleanup.push(() => a.close(), () => b.close())
    await until(() => FakeWebSocket.instances.length === 2)
    for (const ws of FakeWebSocket.instances) ws.open()
    await new Promise((r) => setTimeout(r, 1_300))
    expect(FakeWebSocket.instances.map((w) => w.sent.length)).toEqual([0, 0])
  })

  it('the Yjs provider sends [101, token]', async () => {
    let n = 0
    const p = new RoostProvider('d', new Y.Doc(), { url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket, token: () => jwt(2_200, String(++n)) })
    cleanup.push(() => p.destroy())
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    await until(() => ws.sent.some((f) => typeof f !== 'string' && f[0] === 101), 3000, 'refresh frame')
    const refresh = ws.sent.map((f) => decodeMessage(f as Uint8Array)).find((m) => m.type === 'refresh')
    expect(refresh).toMatchObject({ type: 'refresh' })
    expect(n).toBe(2)
    expect(FakeWebSocket.instances).toHaveLength(1)
  })

  it('a token valid for longer than a timer can wait (~24.8 days) is not refreshed in a loop', async () => {
    // setTimeout fires at once for delays above 2^31 - 1 ms: a naive refresh
    // timer for a 30-day token would ask the callback again and again.
    let asked = 0
    const token = jwt(30 * 24 * 3_600_000)
    const s: ObjectSocket = connect({
      url: 'http://127.0.0.1:9',
      class: 'room',
      name: 'r',
      WebSocket: FakeWebSocket,
      token: () => (asked++, token),
    })
    cleanup.push(() => s.close())
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    await new Promise((r) => setTimeout(r, 300))
    expect(asked).toBe(1)
    expect(s.status).toBe('open')
  })
})
