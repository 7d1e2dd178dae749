// Tokens against a roost started with --auth-secret: HTTP bearer tokens,
// ?token= on sockets, the token callback on every reconnect, refused tokens
// (close codes 4401/4403: auth-failed, one retry, `unauthorized`), and in-band
// refresh keeping sockets open past their first token's expiry.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { type AuthFailure, connect, createHttpClient, type ObjectSocket, RoostError, type WebSocketConstructor } from '../../src/index.js'
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

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(10)
  }
}

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

  it('a refused token: auth-failed (4403), one retry with a fresh token, then `unauthorized`', async () => {
    let minted = 0
    const s = socket({
      class: 'counter',
      name: 'auth-ws',
      token: () => {
        minted++
        return mintToken(SECRET, 'counter/someone-else')
      },
    })
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    const call = failure(s.call('increment')) // settled below
    await waitFor(() => s.status === 'unauthorized', 10_000)
    expect(failures.map((f) => [f.code, f.retrying])).toEqual([
      [4403, true],
      [4403, false],
    ])
    expect(failures[0]!.reason).not.toBe('')
    expect(s.authFailure).toMatchObject({ code: 4403, retrying: false })
    expect(minted).toBe(2)
    expect((await call).code).toBe('forbidden')
    expect((await failure(s.whenOpen())).code).toBe('forbidden')
    await sleep(500) // no more attempts
    expect(minted).toBe(2)
    s.close()
  })

  it('a garbage token without a callback: 4401, `unauthorized` at once', async () => {
    const s = socket({ class: 'counter', name: 'auth-ws', token: 'garbage' })
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    await waitFor(() => s.status === 'unauthorized', 10_000)
    expect(failures).toHaveLength(1)
    expect(failures[0]).toMatchObject({ code: 4401, retrying: false })
    expect((await failure(s.call('get'))).code).toBe('unauthorized')
  })

  it('a callback whose fresh token is good recovers, and the queued call runs once', async () => {
    let minted = 0
    const s = socket({
      class: 'counter',
      name: 'auth-recover',
      token: () => (++minted === 1 ? 'expired-or-garbage' : mintToken(SECRET, 'counter/auth-recover')),
    })
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    // Queued before the first (refused) socket opened: sent on it, re-queued, sent again.
    expect(await s.call('increment', { by: 5 })).toBe(5)
    expect(failures.map((f) => [f.code, f.retrying])).toEqual([[4401, true]])
    expect(s.status).toBe('open')
    expect(await s.call('get')).toBe(5)
  })

  it('RoostProvider: `unauthorized`, then connect() with a good token syncs', async () => {
    let good = false
    const doc = new Y.Doc()
    const p = new RoostProvider('auth-doc-refused', doc, {
      url: server.url,
      WebSocket: WS,
      token: () => (good ? mintToken(SECRET, 'ydoc/auth-doc-refused') : mintToken(SECRET, 'ydoc/another-doc')),
    })
    cleanup.push(() => p.destroy())
    const failures: AuthFailure[] = []
    p.on('auth-failed', (f) => failures.push(f))
    const synced = p.whenSynced()
    expect((await failure(synced)).code).toBe('forbidden')
    expect(p.status).toBe('unauthorized')
    expect(failures.map((f) => f.retrying)).toEqual([true, false])
    good = true // e.g. the user signed in
    p.connect()
    await p.whenSynced(10_000)
    doc.getText('t').insert(0, 'hello')
    await p.whenSaved(10_000)
    expect(p.status).toBe('open')
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
