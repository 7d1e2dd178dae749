import { describe, expect, it, vi } from 'vitest'
import { createHttpClient, RoostError } from '../../src/index.js'
import { failure } from '../helpers/failure.js'

function fakeFetch(respond: (url: string, init: RequestInit) => Response | Promise<Response>) {
  const calls: Array<{ url: string; init: RequestInit }> = []
  const fetch = (async (url: string, init: RequestInit) => {
    calls.push({ url, init })
    return respond(url, init)
  }) as unknown as typeof globalThis.fetch
  return { fetch, calls }
}

describe('createHttpClient', () => {
  it('POSTs JSON args to the call route with a bearer token from the callback', async () => {
    let n = 0
    const { fetch, calls } = fakeFetch(() => new Response('3'))
    const client = createHttpClient({ url: 'http://h:1/prefix/', token: async () => `t${++n}`, fetch })
    expect(await client.call('counter', 'a b/c', 'increment', { by: 3 })).toBe(3)
    await client.object('counter', 'x').call('get')
    expect(calls[0]!.url).toBe('http://h:1/prefix/v1/objects/counter/a%20b%2Fc/call/increment')
    expect(calls[0]!.init.method).toBe('POST')
    expect(calls[0]!.init.body).toBe('{"by":3}')
    expect((calls[0]!.init.headers as Record<string, string>).authorization).toBe('Bearer t1')
    expect((calls[1]!.init.headers as Record<string, string>).authorization).toBe('Bearer t2')
    expect(calls[1]!.init.body).toBe('')
  })

  it('turns the JSON error body into a RoostError with the status', async () => {
    const { fetch } = fakeFetch(
      () => new Response('{"error":{"code":"unknown_method","message":"unknown method `x`"}}', { status: 404 }),
    )
    const err = await failure(createHttpClient({ url: 'http://h', fetch }).call('counter', 'a', 'x'))
    expect(err).toBeInstanceOf(RoostError)
    expect(err).toMatchObject({ code: 'unknown_method', status: 404, message: 'unknown method `x`' })
  })

  it('maps non-JSON errors by status, network failures and timeouts', async () => {
    const bad = createHttpClient({ url: 'http://h', fetch: fakeFetch(() => new Response('<html>', { status: 502 })).fetch })
    expect(await bad.call('c', 'n', 'm').catch((e) => e.code)).toBe('internal')
    const down = createHttpClient({
      url: 'http://h',
      fetch: fakeFetch(() => Promise.reject(new TypeError('fetch failed'))).fetch,
    })
    expect(await down.call('c', 'n', 'm').catch((e) => e.code)).toBe('network')
    const slow = createHttpClient({
      url: 'http://h',
      timeoutMs: 20,
      fetch: fakeFetch(
        (_u, init) =>
          new Promise((_r, reject) => init.signal!.addEventListener('abort', () => reject(new Error('aborted')))),
      ).fetch,
    })
    expect(await slow.call('c', 'n', 'm').catch((e) => e.code)).toBe('timeout')
    const notJson = createHttpClient({ url: 'http://h', fetch: fakeFetch(() => new Response('nope')).fetch })
    expect(await notJson.call('c', 'n', 'm').catch((e) => e.code)).toBe('bad_response')
  })

  it('an already-aborted signal rejects with `aborted` and leaves no timer behind', async () => {
    vi.useFakeTimers()
    try {
      const client = createHttpClient({ url: 'http://h', fetch: fakeFetch(() => new Response('1')).fetch })
      const controller = new AbortController()
      controller.abort()
      expect(await client.call('c', 'n', 'm', undefined, { signal: controller.signal }).catch((e) => e.code)).toBe('aborted')
      // A pending 30 s timer would keep a Node script alive after the call failed.
      expect(vi.getTimerCount()).toBe(0)
    } finally {
      vi.useRealTimers()
    }
  })

  it('aborting while the response body is read rejects with `aborted`, not `network`', async () => {
    const controller = new AbortController()
    let stream!: ReadableStreamDefaultController<Uint8Array>
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        stream = c
        c.enqueue(new TextEncoder().encode('{"par'))
      },
    })
    const client = createHttpClient({
      url: 'http://h',
      fetch: (async (_u: string, init: RequestInit) => {
        // What fetch does: aborting its signal errors the body being read.
        init.signal!.addEventListener('abort', () => stream.error(new DOMException('aborted', 'AbortError')))
        setTimeout(() => controller.abort(), 10)
        return new Response(body)
      }) as unknown as typeof globalThis.fetch,
    })
    expect(await client.call('c', 'n', 'm', undefined, { signal: controller.signal }).catch((e) => e.code)).toBe('aborted')
  })
})
