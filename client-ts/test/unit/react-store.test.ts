// The React context and the useSyncExternalStore-based hooks, rendered with
// react-test-renderer: what they return, and that they re-render exactly when
// the selected value changes (render counts).
import { createElement, StrictMode } from 'react'
import { act, create, type ReactTestRenderer } from 'react-test-renderer'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { connect, createClient, type ObjectSocket } from '../../src/index.js'
import {
  RoostClientProvider,
  shallowEqual,
  useAuthFailure,
  useAwarenessSelector,
  useConnectionStatus,
  useEventReducer,
  useLatestEvent,
  useObjectSocket,
  usePresence,
  useRoostClient,
  useRoostProvider,
  useRoostProviderState,
  useYArray,
  useYMap,
  useYText,
} from '../../src/react/index.js'
import { RoostProvider } from '../../src/yjs/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'
import { silenceTestRendererDeprecation } from '../helpers/react.js'

const errors: unknown[][] = []
beforeAll(() => {
  ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true
  // React reports an uncached getSnapshot ("should be cached to avoid an
  // infinite loop") and other misuse through console.error: collect them.
  const original = console.error
  console.error = (...args: unknown[]) => {
    errors.push(args)
    original(...args)
  }
  silenceTestRendererDeprecation()
})
beforeEach(() => {
  FakeWebSocket.reset()
  errors.length = 0
})
afterEach(() => {
  expect(errors).toEqual([])
})

async function render(element: React.ReactElement): Promise<ReactTestRenderer> {
  let r: ReactTestRenderer | undefined
  await act(async () => {
    r = create(element)
  })
  return r!
}

const fast = { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 }

describe('RoostClientProvider', () => {
  it('gives the hooks below it the client URL, token and options', async () => {
    const client = createClient({ url: 'http://127.0.0.1:9/base', token: () => 'from-client', WebSocket: FakeWebSocket, backoff: fast })
    let seen: ReturnType<typeof useObjectSocket> | null = null
    let fromContext: unknown = null
    function Comp() {
      fromContext = useRoostClient()
      seen = useObjectSocket({ class: 'room', name: 'lobby', params: { name: 'alice' } })
      useRoostProvider('notes')
      return null
    }
    const r = await render(createElement(RoostClientProvider, { client }, createElement(Comp)))
    expect(fromContext).toBe(client)
    await until(() => FakeWebSocket.instances.length === 2)
    const urls = FakeWebSocket.instances.map((w) => new URL(w.url))
    expect(urls.map((u) => u.pathname).sort()).toEqual(['/base/v1/objects/room/lobby/ws', '/base/v1/yjs/notes'])
    for (const u of urls) expect(u.searchParams.get('token')).toBe('from-client')
    expect(urls.find((u) => u.pathname.includes('room'))!.searchParams.get('name')).toBe('alice')
    await act(async () => FakeWebSocket.instances.forEach((w) => w.open()))
    expect(seen!.status).toBe('open')
    await act(async () => r.unmount())
    expect(FakeWebSocket.instances.every((w) => w.readyState === 3)).toBe(true)
  })

  it('a hook option wins over the client; without a client or url the hook throws', async () => {
    const client = createClient({ url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket })
    function Comp() {
      useObjectSocket({ url: 'http://127.0.0.1:10/other', class: 'room', name: 'x' })
      return null
    }
    const r = await render(createElement(RoostClientProvider, { client }, createElement(Comp)))
    await until(() => FakeWebSocket.instances.length === 1)
    expect(new URL(FakeWebSocket.last().url).host).toBe('127.0.0.1:10')
    await act(async () => r.unmount())

    function Lost() {
      useObjectSocket({ class: 'room', name: 'x' })
      return null
    }
    const original = console.error
    console.error = () => {} // React logs the thrown error
    try {
      await expect(render(createElement(Lost))).rejects.toThrow(/RoostClientProvider/)
      await expect(
        render(
          createElement(() => {
            useRoostClient()
            return null
          }),
        ),
      ).rejects.toThrow(/no <RoostClientProvider/)
    } finally {
      console.error = original
    }
  })
})

describe('socket hooks', () => {
  let sockets: ObjectSocket[] = []
  afterEach(() => {
    for (const s of sockets) s.close()
    sockets = []
  })
  function socket(token?: string): ObjectSocket {
    const s = connect({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket, backoff: fast, token })
    sockets.push(s)
    return s
  }

  it('useConnectionStatus / useAuthFailure follow the socket; re-render only on change', async () => {
    const s = socket('bad')
    let renders = 0
    let last: [string, unknown] = ['', null]
    function Comp() {
      renders++
      last = [useConnectionStatus(s), useAuthFailure(s)]
      return null
    }
    const r = await render(createElement(Comp))
    expect(last).toEqual(['connecting', null])
    const before = renders
    await until(() => FakeWebSocket.instances.length === 1)
    await act(async () => FakeWebSocket.last().open())
    expect(last[0]).toBe('open')
    expect(renders).toBe(before + 1)
    // Events and frames that do not change the status do not re-render.
    await act(async () => FakeWebSocket.last().serverSend('{"type":"event","event":"message","data":1}'))
    expect(renders).toBe(before + 1)
    await act(async () => FakeWebSocket.last().serverClose(4401, 'token expired'))
    expect(last).toEqual(['unauthorized', { code: 4401, reason: 'token expired', retrying: false }])
    await act(async () => r.unmount())
  })

  it('useObjectSocket reports `unauthorized` with the refusal', async () => {
    let state: ReturnType<typeof useObjectSocket> | null = null
    function Comp() {
      state = useObjectSocket({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket, token: 'x' })
      return null
    }
    const r = await render(createElement(Comp))
    // The hook always hands the socket a callback (so that a new `token` prop
    // is picked up), so the token is asked again and retried once.
    for (let i = 1; i <= 2; i++) {
      await until(() => FakeWebSocket.instances.length === i)
      await act(async () => {
        FakeWebSocket.last().open()
        FakeWebSocket.last().serverClose(4403, 'not for room/r')
      })
    }
    expect(state!.status).toBe('unauthorized')
    expect(state!.authFailure).toEqual({ code: 4403, reason: 'not for room/r', retrying: false })
    await act(async () => r.unmount())
  })

  it('useLatestEvent and useEventReducer', async () => {
    const s = socket()
    let renders = 0
    let latest: unknown
    let all: number[] = []
    function Comp() {
      renders++
      latest = useLatestEvent<{ n: number }>(s, 'tick')
      // Odd numbers only; an even one leaves the array as it is (no re-render).
      all = useEventReducer<{ n: number }, number[]>(s, 'tick', (acc, { n }) => (n % 2 ? [...acc, n] : acc), [])
      return null
    }
    const r = await render(createElement(StrictMode, null, createElement(Comp)))
    expect(latest).toBeUndefined()
    expect(all).toEqual([])
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    await act(async () => ws.open())
    const tick = (n: number) => act(async () => ws.serverSend(JSON.stringify({ type: 'event', event: 'tick', data: { n } })))
    await tick(1)
    await tick(2)
    await tick(3)
    expect(latest).toEqual({ n: 3 })
    expect(all).toEqual([1, 3])
    await act(async () => ws.serverSend('{"type":"event","event":"other","data":0}'))
    const settled = renders
    await act(async () => ws.serverSend('{"type":"event","event":"other","data":0}'))
    expect(renders).toBe(settled)
    await act(async () => r.unmount())
  })
})

describe('Yjs hooks', () => {
  it('useYText: re-renders on text changes only, stable string, "" for null', async () => {
    const doc = new Y.Doc()
    const text = doc.getText('t')
    let renders = 0
    let value = ''
    function Comp({ t }: { t: Y.Text | null }) {
      renders++
      value = useYText(t)
      return null
    }
    const r = await render(createElement(Comp, { t: null }))
    expect(value).toBe('')
    await act(async () => r.update(createElement(Comp, { t: text })))
    expect(value).toBe('')
    await act(async () => text.insert(0, 'hello'))
    expect(value).toBe('hello')
    const n = renders
    await act(async () => text.format(0, 2, { bold: true })) // same string
    expect(renders).toBe(n)
    await act(async () => doc.getText('other').insert(0, 'x')) // another type
    expect(renders).toBe(n)
    await act(async () => text.delete(0, 1))
    expect(value).toBe('ello')
    expect(renders).toBe(n + 1)
    await act(async () => r.unmount())
  })

  it('a change made between render and subscription is not missed', async () => {
    const doc = new Y.Doc()
    const text = doc.getText('t')
    let value = ''
    function Comp() {
      value = useYText(text)
      return null
    }
    let r: ReactTestRenderer | undefined
    await act(async () => {
      r = create(createElement(Comp))
      text.insert(0, 'early') // before effects (and so the subscription) ran
    })
    expect(value).toBe('early')
    await act(async () => r!.unmount())
  })

  it('useYMap / useYArray: stable snapshots, shallow by default, deep on request', async () => {
    const doc = new Y.Doc()
    const map = doc.getMap<unknown>('m')
    const array = doc.getArray<number>('a')
    const nested = new Y.Map<number>()
    map.set('nested', nested)
    const shallowSeen: Array<Readonly<Record<string, unknown>>> = []
    const deepSeen: Array<Readonly<Record<string, unknown>>> = []
    const arrays: Array<readonly number[]> = []
    let renders = 0
    function Comp({ tick }: { tick: number }) {
      renders++
      shallowSeen.push(useYMap(map))
      deepSeen.push(useYMap(map, true))
      arrays.push(useYArray(array))
      return createElement('span', null, String(tick))
    }
    const r = await render(createElement(Comp, { tick: 0 }))
    // An unrelated re-render returns the very same snapshots.
    await act(async () => r.update(createElement(Comp, { tick: 1 })))
    expect(shallowSeen.at(-1)).toBe(shallowSeen.at(-2))
    expect(arrays.at(-1)).toBe(arrays.at(-2))
    expect(shallowSeen.at(-1)).toEqual({ nested })

    await act(async () => void map.set('a', 1))
    expect(shallowSeen.at(-1)).toEqual({ nested, a: 1 })
    // Setting the same primitive value again: Yjs reports a change, the snapshot stays.
    const beforeSame = shallowSeen.at(-1)
    await act(async () => void map.set('a', 1))
    expect(shallowSeen.at(-1)).toBe(beforeSame)

    // A nested change: only the deep hook gives a new snapshot.
    const shallowBefore = shallowSeen.at(-1)
    const deepBefore = deepSeen.at(-1)
    await act(async () => void nested.set('x', 1))
    expect(shallowSeen.at(-1)).toBe(shallowBefore)
    expect(deepSeen.at(-1)).not.toBe(deepBefore)

    await act(async () => array.push([1, 2, 3]))
    expect(arrays.at(-1)).toEqual([1, 2, 3])
    const n = renders
    await act(async () => doc.getText('unrelated').insert(0, 'x'))
    expect(renders).toBe(n)
    await act(async () => r.unmount())
  })

  it('useRoostProviderState follows status/synced/saved of a provider made outside React', async () => {
    const doc = new Y.Doc()
    const provider = new RoostProvider('notes', doc, { url: 'ws://127.0.0.1:9', WebSocket: FakeWebSocket, backoff: fast })
    const seen: Array<ReturnType<typeof useRoostProviderState>> = []
    function Comp() {
      seen.push(useRoostProviderState(provider))
      return null
    }
    const r = await render(createElement(Comp))
    expect(seen.at(-1)).toMatchObject({ status: 'connecting', synced: false, saved: true })
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    await act(async () => ws.open())
    await act(async () => ws.serverSend(new Uint8Array([0, 1, 2, 0, 0]))) // step 2: synced
    expect(seen.at(-1)).toMatchObject({ status: 'open', synced: true, saved: true })
    await act(async () => doc.getText('t').insert(0, 'x'))
    expect(seen.at(-1)!.saved).toBe(false)
    await act(async () => ws.serverSend(new Uint8Array([100, 1]))) // saved: 1 message durable
    expect(seen.at(-1)!.saved).toBe(true)
    const count = seen.length
    await act(async () => ws.serverSend(new Uint8Array([100, 1]))) // nothing changes
    expect(seen.length).toBe(count)
    await act(async () => r.unmount())
    provider.destroy()
  })
})

describe('awareness hooks', () => {
  function peers(): { local: awarenessProtocol.Awareness; remote: awarenessProtocol.Awareness; relay: () => void } {
    const local = new awarenessProtocol.Awareness(new Y.Doc())
    const remote = new awarenessProtocol.Awareness(new Y.Doc())
    const relay = () =>
      awarenessProtocol.applyAwarenessUpdate(local, awarenessProtocol.encodeAwarenessUpdate(remote, [remote.clientID]), 'test')
    return { local, remote, relay }
  }

  it('useAwarenessSelector re-renders only when the selected value changes', async () => {
    const { local, remote, relay } = peers()
    let renders = 0
    let names: string[] = []
    function Comp() {
      renders++
      names = useAwarenessSelector<string[], { name?: string; cursor?: number }>(
        local,
        (states) => [...states.values()].flatMap((s) => (s.name ? [s.name] : [])).sort(),
        shallowEqual,
      )
      return null
    }
    const r = await render(createElement(Comp))
    expect(names).toEqual([])
    await act(async () => local.setLocalState({ name: 'alice' }))
    expect(names).toEqual(['alice'])
    await act(async () => {
      remote.setLocalState({ name: 'bob', cursor: 1 })
      relay()
    })
    expect(names).toEqual(['alice', 'bob'])
    const n = renders
    for (let cursor = 2; cursor < 6; cursor++) {
      await act(async () => {
        remote.setLocalState({ name: 'bob', cursor })
        relay()
      })
    }
    expect(renders).toBe(n) // cursor moves: names unchanged, no re-render
    await act(async () => {
      remote.setLocalState({ name: 'bobby', cursor: 9 })
      relay()
    })
    expect(names).toEqual(['alice', 'bobby'])
    expect(renders).toBe(n + 1)
    await act(async () => r.unmount())
    local.destroy()
    remote.destroy()
  })

  it('usePresence publishes, and with a selector re-renders only for it', async () => {
    const { local, remote, relay } = peers()
    let renders = 0
    let count = -1
    let others: unknown[] = []
    function Comp() {
      renders++
      others = usePresence(local, { name: 'alice' }).others
      count = usePresence(local, undefined, (p) => p.others.length)
      return null
    }
    const r = await render(createElement(Comp))
    expect(local.getLocalState()).toEqual({ name: 'alice' })
    expect(count).toBe(0)
    await act(async () => {
      remote.setLocalState({ name: 'bob' })
      relay()
    })
    expect(count).toBe(1)
    expect(others).toEqual([{ clientId: remote.clientID, state: { name: 'bob' } }])
    // The same state again (a renewal): no change, no re-render.
    const n = renders
    await act(async () => relay())
    expect(renders).toBe(n)
    await act(async () => r.unmount())
    expect(local.getLocalState()).toBeNull()
    local.destroy()
    remote.destroy()
  })
})
