// Object sockets and HTTP RPC against the real roost binary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { connect, createHttpClient, type ObjectSocket, RoostError, type WebSocketConstructor } from '../../src/index.js'
import { RoostServer } from './roost.js'
import { failure } from '../helpers/failure.js'

const WS = WebSocket as unknown as WebSocketConstructor
let server: RoostServer
const open: ObjectSocket[] = []

function socket(options: Partial<Parameters<typeof connect>[0]> & { class: string; name: string }): ObjectSocket {
  const s = connect({ url: server.url, WebSocket: WS, backoff: { initialDelayMs: 50, maxDelayMs: 500 }, ...options })
  open.push(s)
  return s
}

function nextEvent<T>(s: ObjectSocket, event: string, pred: (d: T) => boolean = () => true, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no ${event} event within ${timeoutMs} ms`))
    }, timeoutMs)
    const off = s.on<T>(event, (d) => {
      if (!pred(d)) return
      clearTimeout(timer)
      off()
      resolve(d)
    })
  })
}

beforeAll(async () => {
  server = await RoostServer.start()
})

afterAll(async () => {
  for (const s of open) s.close()
  await server?.dispose()
})

describe('object sockets against roost', () => {
  it('calls methods and gets typed errors', async () => {
    const counter = socket({ class: 'counter', name: 'e2e-calls' })
    await counter.whenOpen(10_000)
    expect(await counter.call('increment', { by: 2 })).toBe(2)
    expect(await counter.call('increment')).toBe(3)
    expect(await counter.call('get')).toBe(3)
    const err = await failure(counter.call('nope'))
    expect(err).toBeInstanceOf(RoostError)
    expect(err.code).toBe('unknown_method')
    const room = socket({ class: 'room', name: 'e2e-errors' })
    const bad = await failure(room.call('send', { text: '' }))
    expect(bad).toBeInstanceOf(RoostError)
    expect(bad.fromServer).toBe(true)
    expect(typeof bad.message).toBe('string')
  })

  it('receives pushed events (room history, join and messages)', async () => {
    const alice = socket({ class: 'room', name: 'e2e-chat', params: { name: 'alice' } })
    const history = nextEvent<{ messages: unknown[] }>(alice, 'history')
    await alice.whenOpen(10_000)
    expect(Array.isArray((await history).messages)).toBe(true)
    await alice.call('join', { name: 'alice' })
    const bob = socket({ class: 'room', name: 'e2e-chat' })
    await bob.whenOpen(10_000)
    const joined = nextEvent<{ name: string }>(alice, 'join', (d) => d.name === 'bob')
    await bob.call('join', { name: 'bob' })
    expect((await joined).name).toBe('bob')
    const got = nextEvent<{ text: string; name: string }>(alice, 'message', (d) => d.text === 'hello alice')
    const sent = await bob.call<{ id: number }>('send', { text: 'hello alice' })
    const msg = await got
    expect(msg).toMatchObject({ name: 'bob', text: 'hello alice', id: sent.id })
    expect(await alice.call('who')).toEqual(expect.arrayContaining(['alice', 'bob']))
  })

  it('delivers raw frames to on_message and back (ping → pong)', async () => {
    const room = socket({ class: 'room', name: 'e2e-raw' })
    await room.whenOpen(10_000)
    const pong = new Promise((resolve) => room.onMessage(resolve))
    room.send('ping')
    expect(await pong).toBe('pong')
  })

  it('reports a malformed call envelope as an error event and stays open', async () => {
    const room = socket({ class: 'room', name: 'e2e-bad-frame' })
    await room.whenOpen(10_000)
    const error = nextEvent<{ code: string; message: string }>(room, 'error')
    room.send('{"type":"call","method":"who"}')
    expect((await error).code).toBeTypeOf('string')
    expect(room.status).toBe('open')
    expect(Array.isArray(await room.call('who'))).toBe(true)
  })

  it('reconnects after a server restart and delivers queued calls exactly once; token callback runs per connect', async () => {
    let tokenCalls = 0
    const counter = socket({ class: 'counter', name: 'e2e-restart', token: async () => `token-${++tokenCalls}` })
    const statuses: string[] = []
    counter.onStatus((s) => statuses.push(s))
    await counter.whenOpen(10_000)
    expect(await counter.call('increment', { by: 10 })).toBe(10)
    expect(tokenCalls).toBe(1)

    await server.stop('SIGKILL')
    await new Promise<void>((resolve) => {
      if (counter.status === 'reconnecting') resolve()
      else counter.onStatus((s) => s === 'reconnecting' && resolve())
    })
    // Made while the server is down: queued, sent after the reconnect.
    const queued = [counter.call('increment', { by: 1 }), counter.call('increment', { by: 1 }), counter.call('increment', { by: 1 })]
    expect(counter.queuedCalls).toBe(3)
    await new Promise((r) => setTimeout(r, 300)) // a few failed attempts
    await server.startAgain()
    const results = await Promise.all(queued)
    expect(results).toEqual([11, 12, 13])
    expect(counter.status).toBe('open')
    expect(statuses).toContain('reconnecting')
    expect(statuses.at(-1)).toBe('open')
    // Delivered once: the durable value is exactly 13.
    expect(await counter.call('get')).toBe(13)
    const http = createHttpClient({ url: server.url })
    expect(await http.call('counter', 'e2e-restart', 'get')).toBe(13)
    // One token per connection attempt: the first connect, failed attempts while down, the reconnect.
    expect(tokenCalls).toBeGreaterThanOrEqual(2)
  })
})

describe('HTTP client against roost', () => {
  it('calls and errors', async () => {
    const http = createHttpClient({ url: server.url, token: () => 'ignored-until-auth-lands' })
    expect(await http.call('counter', 'e2e-http', 'increment', { by: 5 })).toBe(5)
    expect(await http.object('counter', 'e2e-http').call('get')).toBe(5)
    const unknown = await failure(http.call('counter', 'e2e-http', 'nope'))
    expect(unknown).toBeInstanceOf(RoostError)
    expect(unknown.code).toBe('unknown_method')
    expect(unknown.status).toBeGreaterThanOrEqual(400)
    const noClass = await failure(http.call('no-such-class', 'x', 'get'))
    expect(noClass.code).toBe('unknown_class')
    const badName = await failure(http.call('Bad Class', 'x', 'get'))
    expect(badName.code).toBe('bad_name')
  })

  it('network failure is a RoostError', async () => {
    const http = createHttpClient({ url: 'http://127.0.0.1:1' })
    const e = await failure(http.call('counter', 'x', 'get'))
    expect(e).toBeInstanceOf(RoostError)
    expect(e.code).toBe('network')
  })
})
