// Close codes 4401/4403: the server accepted the upgrade, then refused the
// token. The connection reports `auth-failed`, retries once with a fresh token
// from a callback, and otherwise stops in `unauthorized` instead of retrying
// forever. Played against a FakeWebSocket.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { connect, type AuthFailure, type ObjectSocket, RoostError, type TokenSource } from '../../src/index.js'
import { RoostProvider } from '../../src/yjs/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'
import { failure } from '../helpers/failure.js'

const fast = { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 }
let sockets: ObjectSocket[] = []
let providers: RoostProvider[] = []

function open(token?: TokenSource): ObjectSocket {
  const s = connect({ url: 'http://127.0.0.1:9', class: 'counter', name: 'c', WebSocket: FakeWebSocket, backoff: fast, token })
  sockets.push(s)
  return s
}

/** The server accepts the upgrade, then refuses the token. */
function refuse(ws: FakeWebSocket, code: 4401 | 4403, reason: string): void {
  ws.open()
  ws.serverClose(code, reason)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeEach(() => FakeWebSocket.reset())
afterEach(() => {
  for (const s of sockets) s.close()
  for (const p of providers) p.destroy()
  sockets = []
  providers = []
})

describe('auth-failed (close codes 4401/4403)', () => {
  it('without a token callback: reports auth-failed, stops in `unauthorized`, fails calls with `unauthorized`', async () => {
    const s = open('a-fixed-token')
    const failures: AuthFailure[] = []
    const statuses: string[] = []
    const closes: number[] = []
    s.onAuthFailed((f) => failures.push(f))
    s.onStatus((st) => statuses.push(st))
    s.onClose((c) => closes.push(c.code))
    const queued = s.call('increment', { by: 1 })
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4401, 'token expired')
    expect(failures).toEqual([{ code: 4401, reason: 'token expired', retrying: false }])
    expect(closes).toEqual([4401])
    expect(s.status).toBe('unauthorized')
    expect(statuses).toEqual(['open', 'unauthorized'])
    expect(s.authFailure).toEqual({ code: 4401, reason: 'token expired', retrying: false })
    // The call flushed on the refused socket was not lost as `disconnected`:
    // it waited for a retry, and fails with the refusal now that there is none.
    const err = await failure(queued)
    expect(err).toBeInstanceOf(RoostError)
    expect(err.code).toBe('unauthorized')
    expect(err.message).toBe('token expired')
    expect((await failure(s.call('get'))).code).toBe('unauthorized')
    expect((await failure(s.whenOpen())).code).toBe('unauthorized')
    await sleep(60) // several backoff delays: nothing more happens
    expect(FakeWebSocket.instances).toHaveLength(1)
  })

  it('with no token at all, 4403 gives `forbidden`', async () => {
    const s = open()
    const pending = s.whenOpen()
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().serverClose(4403, 'token revoked') // also when the open event never came
    expect(s.status).toBe('unauthorized')
    const err = await failure(pending)
    expect(err.code).toBe('forbidden')
    expect(err.message).toBe('token revoked')
  })

  it('with a token callback: asks it again and retries once at once; calls go out on the retry', async () => {
    let asked = 0
    const s = open(() => `tok-${++asked}`)
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    const statuses: string[] = []
    s.onStatus((st) => statuses.push(st))
    const result = s.call('increment', { by: 2 })
    await until(() => FakeWebSocket.instances.length === 1)
    const first = FakeWebSocket.last()
    expect(first.query.get('token')).toBe('tok-1')
    first.open()
    expect(first.sentJson()).toEqual([{ type: 'call', id: 1, method: 'increment', args: { by: 2 } }])
    first.serverClose(4401, 'token expired')
    expect(failures).toEqual([{ code: 4401, reason: 'token expired', retrying: true }])
    expect(s.status).toBe('reconnecting')
    expect(s.authFailure).toBeNull()
    await until(() => FakeWebSocket.instances.length === 2, 100, 'the immediate retry')
    const second = FakeWebSocket.last()
    expect(second.query.get('token')).toBe('tok-2')
    second.open()
    // The call sent on the refused socket is sent again (it never reached the object).
    const [call] = second.sentJson()
    expect(call).toMatchObject({ type: 'call', method: 'increment', args: { by: 2 } })
    second.serverSend(JSON.stringify({ type: 'result', id: call.id, ok: 2 }))
    await expect(result).resolves.toBe(2)
    expect(statuses).toEqual(['open', 'reconnecting', 'open'])
    expect(asked).toBe(2)
  })

  it('stops when the fresh token is refused too; reconnect() starts again with a full retry', async () => {
    let asked = 0
    const s = open(async () => `tok-${++asked}`)
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4403, 'not for counter/c')
    await until(() => FakeWebSocket.instances.length === 2)
    refuse(FakeWebSocket.last(), 4403, 'still not for counter/c')
    expect(failures.map((f) => f.retrying)).toEqual([true, false])
    expect(s.status).toBe('unauthorized')
    expect(s.authFailure?.reason).toBe('still not for counter/c')
    expect((await failure(s.call('get'))).code).toBe('forbidden')
    await sleep(60)
    expect(FakeWebSocket.instances).toHaveLength(2)
    expect(asked).toBe(2)

    // E.g. after the user signed in again.
    s.reconnect()
    expect(s.status).toBe('reconnecting')
    await until(() => FakeWebSocket.instances.length === 3)
    refuse(FakeWebSocket.last(), 4401, 'expired')
    await until(() => FakeWebSocket.instances.length === 4)
    FakeWebSocket.last().open()
    expect(s.status).toBe('open')
    expect(failures.map((f) => f.retrying)).toEqual([true, false, true])
    expect(asked).toBe(4)
  })

  it('an accepted connection in between restores the retry; a network failure in between does not', async () => {
    let asked = 0
    const s = open(() => `tok-${++asked}`)
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4401, 'expired')
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().open() // accepted
    FakeWebSocket.last().serverClose(1006) // server restart
    await until(() => FakeWebSocket.instances.length === 3)
    refuse(FakeWebSocket.last(), 4401, 'expired')
    expect(failures.map((f) => f.retrying)).toEqual([true, true])
    await until(() => FakeWebSocket.instances.length === 4)
    FakeWebSocket.last().serverClose(1006) // the retry fails for another reason: backoff as usual
    expect(s.status).toBe('reconnecting')
    await until(() => FakeWebSocket.instances.length === 5)
    refuse(FakeWebSocket.last(), 4401, 'expired')
    expect(failures.map((f) => f.retrying)).toEqual([true, true, false])
    expect(s.status).toBe('unauthorized')
  })

  it('other close codes keep retrying with backoff', async () => {
    const s = open('tok')
    const failures: AuthFailure[] = []
    s.onAuthFailed((f) => failures.push(f))
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    FakeWebSocket.last().serverClose(1008, 'token expired')
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().serverClose(4000, 'something else')
    await until(() => FakeWebSocket.instances.length === 3)
    expect(failures).toEqual([])
    expect(s.status).toBe('reconnecting')
  })

  it('a listener may close the socket from auth-failed', async () => {
    const s = open(() => 'tok')
    s.onAuthFailed(() => s.close())
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4401, 'expired')
    expect(s.status).toBe('closed')
    await sleep(30)
    expect(FakeWebSocket.instances).toHaveLength(1)
  })

  it('RoostProvider: auth-failed, status `unauthorized`, waiters rejected; connect() tries again', async () => {
    const doc = new Y.Doc()
    const p = new RoostProvider('notes', doc, { url: 'ws://127.0.0.1:9', WebSocket: FakeWebSocket, backoff: fast, token: 'tok' })
    providers.push(p)
    const failures: AuthFailure[] = []
    const statuses: string[] = []
    p.on('auth-failed', (f) => failures.push(f))
    p.on('status', (st) => statuses.push(st))
    const synced = p.whenSynced()
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4401, 'bad signature')
    expect(failures).toEqual([{ code: 4401, reason: 'bad signature', retrying: false }])
    expect(p.status).toBe('unauthorized')
    expect(p.authFailure?.reason).toBe('bad signature')
    expect(statuses).toEqual(['open', 'unauthorized'])
    const err = await failure(synced)
    expect(err.code).toBe('unauthorized')
    doc.getText('t').insert(0, 'x') // a change that cannot be saved now
    expect((await failure(p.whenSaved())).code).toBe('unauthorized')
    await sleep(40)
    expect(FakeWebSocket.instances).toHaveLength(1)

    p.connect()
    expect(p.status).toBe('connecting')
    expect(p.authFailure).toBeNull()
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().open()
    expect(p.status).toBe('open')
    p.disconnect()
    expect(p.status).toBe('closed')
  })

  it('RoostProvider with a token callback retries once with a fresh token', async () => {
    let asked = 0
    const p = new RoostProvider('notes', new Y.Doc(), {
      url: 'ws://127.0.0.1:9',
      WebSocket: FakeWebSocket,
      backoff: fast,
      token: () => `tok-${++asked}`,
    })
    providers.push(p)
    const failures: AuthFailure[] = []
    p.on('auth-failed', (f) => failures.push(f))
    await until(() => FakeWebSocket.instances.length === 1)
    refuse(FakeWebSocket.last(), 4403, 'revoked')
    await until(() => FakeWebSocket.instances.length === 2)
    expect(FakeWebSocket.last().query.get('token')).toBe('tok-2')
    refuse(FakeWebSocket.last(), 4403, 'revoked')
    expect(failures.map((f) => f.retrying)).toEqual([true, false])
    expect(p.status).toBe('unauthorized')
    // disconnect() from `unauthorized` settles on `closed`.
    p.disconnect()
    expect(p.status).toBe('closed')
  })
})
