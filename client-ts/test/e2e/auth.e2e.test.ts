// Tokens against a roost started with --auth-secret: HTTP bearer tokens,
// ?token= on sockets, the token callback on every reconnect, and in-band
// refresh keeping sockets open past their first token's expiry.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { connect, createHttpClient, type ObjectSocket, RoostError, type WebSocketConstructor } from '../../src/index.js'
import { RoostProvider } from '../../src/yjs/index.js'
import { failure } from '../helpers/failure.js'
import { mintToken, RoostServer } from './roost.js'

const WS = WebSocket as unknown as WebSocketConstructor
const SECRET = 'e2e-test-secret-not-for-production'
let server: RoostServer
const cleanup: Array<() => void> = []

beforeAll(async () => {
  server = await RoostServer.start({ args: ['--auth-secret', SECRET] })
})

afterAll(async () => {
  for (const f of cleanup) f()
  await server?.dispose()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function socket(options: Partial<Parameters<typeof connect>[0]> & { class: string; name: string }): ObjectSocket {
  const s = connect({ url: server.url, WebSocket: WS, backoff: { initialDelayMs: 50, maxDelayMs: 300 }, ...options })
  cleanup.push(() => s.close())
  return s
}

describe('access tokens against roost --auth-secret', () => {
  it('HTTP: bearer token required, scoped to its objects, read-only tokens cannot write', async () => {
    const anonymous = createHttpClient({ url: server.url })
    const denied = await failure(anonymous.call('counter', 'auth-a', 'get'))
    expect(denied).toMatchObject({ code: 'unauthorized', status: 401 })

    const writer = createHttpClient({ url: server.url, token: () => mintToken(SECRET, 'counter/auth-a') })
    expect(await writer.call('counter', 'auth-a', 'increment', { by: 2 })).toBe(2)
    const other = await failure(writer.call('counter', 'auth-b', 'get'))
    expect(other).toMatchObject({ code: 'forbidden', status: 403 })

    const reader = createHttpClient({ url: server.url, token: mintToken(SECRET, 'counter/*', { perm: 'read' }) })
    expect(await reader.call('counter', 'auth-a', 'get')).toBe(2)
    const write = await failure(reader.call('counter', 'auth-a', 'increment'))
    expect(write).toBeInstanceOf(RoostError)
    expect(write.fromServer).toBe(true)
  })

  it('sockets without a valid token never open', async () => {
    const s = socket({ class: 'counter', name: 'auth-ws', token: () => mintToken(SECRET, 'counter/someone-else') })
    const errors: unknown[] = []
    s.onError((e) => errors.push(e))
    const opened = await failure(s.whenOpen(1_500))
    expect(opened.code).toBe('timeout')
    expect(s.status).toBe('reconnecting')
    expect(errors.length).toBeGreaterThan(0)
    s.close()
  })

  it('in-band refresh keeps an object socket open past its first token', async () => {
    let minted = 0
    const s = socket({
      class: 'counter',
      name: 'auth-refresh',
      token: () => {
        minted++
        return mintToken(SECRET, 'counter/auth-refresh', { ttl: '3s' })
      },
    })
    const statuses: string[] = []
    s.onStatus((st) => statuses.push(st))
    const refreshed: Array<{ exp: number }> = []
    s.on<{ exp: number }>('auth', (d) => refreshed.push(d))
    await s.whenOpen(10_000)
    expect(await s.call('increment')).toBe(1)
    await sleep(4_500) // the first token has expired by now
    expect(await s.call('increment')).toBe(2)
    expect(statuses).toEqual(['open'])
    expect(minted).toBeGreaterThanOrEqual(2)
    expect(refreshed.length).toBeGreaterThanOrEqual(1)
    expect(refreshed.at(-1)!.exp).toBeGreaterThan(Date.now() - 1_000) // the latest token is still valid
  })

  it('without refresh the server closes at expiry and the client reconnects with a fresh token', async () => {
    let minted = 0
    const s = socket({
      class: 'counter',
      name: 'auth-expire',
      tokenRefreshMarginMs: 0,
      token: () => {
        minted++
        return mintToken(SECRET, 'counter/auth-expire', { ttl: '2s' })
      },
    })
    const closes: number[] = []
    s.onClose((c) => closes.push(c.code))
    await s.whenOpen(10_000)
    await sleep(3_000)
    await s.whenOpen(10_000)
    expect(closes).toContain(1008)
    expect(minted).toBeGreaterThanOrEqual(2)
    expect(await s.call('increment')).toBe(1)
  })

  it('the Yjs provider refreshes in-band and stays saved past its first token', async () => {
    const doc = new Y.Doc()
    const p = new RoostProvider('auth-doc', doc, {
      url: server.url,
      WebSocket: WS,
      token: () => mintToken(SECRET, 'ydoc/auth-doc', { ttl: '3s' }),
    })
    cleanup.push(() => p.destroy())
    const statuses: string[] = []
    p.on('status', (st) => statuses.push(st))
    await p.whenSynced(10_000)
    doc.getText('t').insert(0, 'first ')
    await p.whenSaved(10_000)
    await sleep(4_500)
    doc.getText('t').insert(6, 'second')
    await p.whenSaved(10_000)
    expect(statuses).toEqual(['open'])
    const other = new Y.Doc()
    const q = new RoostProvider('auth-doc', other, { url: server.url, WebSocket: WS, token: mintToken(SECRET, 'ydoc/auth-doc', { perm: 'read' }) })
    cleanup.push(() => q.destroy())
    await q.whenSynced(10_000)
    expect(other.getText('t').toString()).toBe('first second')
    // A read-only client's own edits are refused: never acknowledged, never stored.
    other.getText('t').insert(0, 'read-only ')
    await sleep(500)
    expect(q.saved).toBe(false)
    const third = new Y.Doc()
    const r = new RoostProvider('auth-doc', third, { url: server.url, WebSocket: WS, token: mintToken(SECRET, 'ydoc/auth-doc') })
    cleanup.push(() => r.destroy())
    await r.whenSynced(10_000)
    expect(third.getText('t').toString()).toBe('first second')
  })
})
