import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { connect, type ObjectSocket, RoostError } from '../../src/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'
import { failure } from '../helpers/failure.js'

const fast = { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 }
let sockets: ObjectSocket[] = []

function open(options: Partial<Parameters<typeof connect>[0]> = {}): ObjectSocket {
  const s = connect({
    url: 'http://127.0.0.1:9/base',
    class: 'room',
    name: 'a/b c',
    WebSocket: FakeWebSocket,
    backoff: fast,
    ...options,
  })
  sockets.push(s)
  return s
}

beforeEach(() => FakeWebSocket.reset())
afterEach(() => {
  for (const s of sockets) s.close()
  sockets = []
})

describe('ObjectSocket', () => {
  it('builds the URL with the path prefix, encoded name, params and token', async () => {
    open({ params: { name: 'alice' }, token: async () => 'tok 1' })
    await until(() => FakeWebSocket.instances.length === 1)
    const url = new URL(FakeWebSocket.last().url)
    expect(url.protocol).toBe('ws:')
    expect(url.pathname).toBe('/base/v1/objects/room/a%2Fb%20c/ws')
    expect(url.searchParams.get('name')).toBe('alice')
    expect(url.searchParams.get('token')).toBe('tok 1')
    expect(FakeWebSocket.last().binaryType).toBe('arraybuffer')
  })

  it('matches results to calls by id and rejects server errors with RoostError', async () => {
    const s = open()
    const statuses: string[] = []
    s.onStatus((st) => statuses.push(st))
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    expect(s.status).toBe('open')
    const a = s.call('increment', { by: 2 })
    const b = s.call('nope')
    const [ca, cb] = ws.sentJson()
    expect(ws.sent[0]).toBe('{"type":"call","id":1,"method":"increment","args":{"by":2}}')
    expect(cb).toEqual({ type: 'call', id: 2, method: 'nope', args: null })
    ws.serverSend(`{"type":"result","id":${cb.id},"error":{"code":"unknown_method","message":"unknown method \`nope\`"}}`)
    ws.serverSend(`{"type":"result","id":${ca.id},"ok":7}`)
    await expect(a).resolves.toBe(7)
    const err = await failure(b)
    expect(err).toBeInstanceOf(RoostError)
    expect(err.code).toBe('unknown_method')
    expect(err.fromServer).toBe(true)
    expect(statuses).toEqual(['open'])
  })

  it('delivers pushed events, raw text and binary frames', async () => {
    const s = open()
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    const events: unknown[] = []
    const any: string[] = []
    const raw: unknown[] = []
    const off = s.on('message', (d) => events.push(d))
    s.onAnyEvent((e) => any.push(e))
    s.onMessage((d) => raw.push(d))
    ws.serverSend('{"type":"event","event":"message","data":{"text":"hi"}}')
    ws.serverSend('{"type":"event","event":"join","data":{"name":"bob"}}')
    ws.serverSend('pong')
    ws.serverSend(new Uint8Array([1, 2, 3]))
    off()
    ws.serverSend('{"type":"event","event":"message","data":{"text":"ignored"}}')
    expect(events).toEqual([{ text: 'hi' }])
    expect(any).toEqual(['message', 'join', 'message'])
    expect(raw).toEqual(['pong', new Uint8Array([1, 2, 3])])
  })

  it('queues calls while disconnected, sends each once after reconnecting, rejects in-flight calls', async () => {
    let tokens = 0
    const s = open({ token: () => `t${++tokens}` })
    await until(() => FakeWebSocket.instances.length === 1)
    const first = FakeWebSocket.last()
    first.open()
    const inflight = s.call('slow')
    first.serverClose(1012, 'restarting')
    expect(s.status).toBe('reconnecting')
    const err = await failure(inflight)
    expect(err.code).toBe('disconnected')
    const queued = [s.call('a'), s.call('b')]
    expect(s.queuedCalls).toBe(2)
    await until(() => FakeWebSocket.instances.length === 2, 2000, 'reconnect')
    const second = FakeWebSocket.last()
    expect(second.query.get('token')).toBe('t2')
    expect(second.sent).toEqual([])
    second.open()
    const sent = second.sentJson()
    expect(sent.map((f) => f.method)).toEqual(['a', 'b'])
    expect(s.queuedCalls).toBe(0)
    for (const f of sent) second.serverSend(JSON.stringify({ type: 'result', id: f.id, ok: f.method }))
    await expect(Promise.all(queued)).resolves.toEqual(['a', 'b'])
    // Nothing is re-sent on a later connection.
    second.serverClose()
    await until(() => FakeWebSocket.instances.length === 3, 2000, 'second reconnect')
    FakeWebSocket.last().open()
    expect(FakeWebSocket.last().sent).toEqual([])
    expect(tokens).toBe(3)
  })

  it('a frame the server refuses as too large (1009) is reported as a `too_large` error', async () => {
    const s = open()
    const errors: unknown[] = []
    s.onError((e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    const big = s.call('send', { text: 'x'.repeat(5000) })
    FakeWebSocket.last().serverClose(1009, 'frame larger than 1000 bytes')
    expect((await failure(big)).code).toBe('disconnected')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(RoostError)
    expect(errors[0]).toMatchObject({ code: 'too_large' })
    expect((errors[0] as RoostError).message).toContain('frame larger than 1000 bytes')
    expect(s.status).toBe('reconnecting')
  })

  it('bounds the queue and times out calls (queued calls are then never sent)', async () => {
    const s = open({ maxQueuedCalls: 2 })
    const a = s.call('a', null, { timeout: 20 })
    const b = s.call('b')
    const c = s.call('c')
    expect((await failure(c)).code).toBe('queue_full')
    expect((await failure(a)).code).toBe('timeout')
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    expect(FakeWebSocket.last().sentJson().map((f) => f.method)).toEqual(['b'])
    void b.catch(() => {})
  })

  it('aborts calls with an AbortSignal', async () => {
    const s = open()
    const ctl = new AbortController()
    const p = s.call('a', null, { signal: ctl.signal })
    ctl.abort()
    expect((await failure(p)).code).toBe('aborted')
  })

  it('backs off exponentially between failed attempts and keeps asking for tokens', async () => {
    let tokens = 0
    open({ token: () => String(++tokens), backoff: { initialDelayMs: 10, factor: 2, maxDelayMs: 40, jitter: 0 } })
    const times: number[] = []
    const start = Date.now()
    for (let i = 1; i <= 4; i++) {
      await until(() => FakeWebSocket.instances.length === i, 3000, `attempt ${i}`)
      times.push(Date.now() - start)
      FakeWebSocket.last().serverClose(1006)
    }
    // delays 10, 20, 40 ms (cumulative ≥ 10, 30, 70)
    expect(times[1]).toBeGreaterThanOrEqual(10)
    expect(times[2]).toBeGreaterThanOrEqual(30)
    expect(times[3]).toBeGreaterThanOrEqual(70)
    expect(tokens).toBe(4)
  })

  it('retries when the token callback throws', async () => {
    let n = 0
    const s = open({
      token: () => {
        n++
        if (n === 1) throw new Error('auth service down')
        return 'ok'
      },
    })
    const errors: unknown[] = []
    s.onError((e) => errors.push(e))
    await until(() => FakeWebSocket.instances.length === 1, 2000)
    expect(FakeWebSocket.last().query.get('token')).toBe('ok')
    expect(errors).toHaveLength(1)
  })

  it('gives up after maxRetries and rejects queued calls', async () => {
    const s = open({ backoff: { ...fast, maxRetries: 1 } })
    const p = s.call('a', null, { timeout: 0 })
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().serverClose()
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().serverClose()
    await until(() => s.status === 'closed')
    expect((await failure(p)).code).toBe('closed')
  })

  it('close() is final: no reconnect, pending calls rejected, raw send throws', async () => {
    const s = open()
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    ws.open()
    s.send('ping')
    expect(ws.sent).toEqual(['ping'])
    const p = s.call('x')
    s.close()
    expect(s.status).toBe('closed')
    expect((await failure(p)).code).toBe('closed')
    expect(() => s.send('ping')).toThrow(RoostError)
    await expect(s.call('y')).rejects.toMatchObject({ code: 'closed' })
    await new Promise((r) => setTimeout(r, 30))
    expect(FakeWebSocket.instances).toHaveLength(1)
    expect(ws.closedWith?.code).toBe(1000)
  })

  it('times out connection attempts that never open', async () => {
    open({ connectTimeoutMs: 20 })
    await until(() => FakeWebSocket.instances.length >= 2, 2000, 'second attempt')
    expect(FakeWebSocket.instances[0]?.readyState).toBe(3)
  })

  it('whenOpen resolves on open', async () => {
    const s = open()
    const p = s.whenOpen(1000)
    await until(() => FakeWebSocket.instances.length === 1)
    FakeWebSocket.last().open()
    await expect(p).resolves.toBeUndefined()
  })

  it('reconnect() replaces the socket with exactly one new attempt', async () => {
    const s = open()
    const closes: number[] = []
    s.onClose((c) => closes.push(c.code))
    await until(() => FakeWebSocket.instances.length === 1)
    const first = FakeWebSocket.last()
    first.open()
    const p = s.call('x')
    s.reconnect()
    expect(first.readyState).toBe(3)
    expect((await failure(p)).code).toBe('disconnected')
    await until(() => FakeWebSocket.instances.length === 2)
    FakeWebSocket.last().open()
    await new Promise((r) => setTimeout(r, 50))
    expect(FakeWebSocket.instances).toHaveLength(2)
    expect(s.status).toBe('open')
    expect(closes).toEqual([4000])
  })
})
