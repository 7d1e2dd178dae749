// React hooks rendered without a DOM (react-test-renderer): effects create the
// connections, unmount closes them.
import { createElement, StrictMode } from 'react'
import { act, create, type ReactTestRenderer } from 'react-test-renderer'
import { beforeAll, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { useObjectEvent, useObjectSocket, usePresence, useRoostProvider, useYDoc } from '../../src/react/index.js'
import type { ObjectSocketState, RoostDocState } from '../../src/react/index.js'
import { FakeWebSocket, until } from '../helpers/fake-ws.js'
import { silenceTestRendererDeprecation } from '../helpers/react.js'

beforeAll(() => {
  ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true
  silenceTestRendererDeprecation()
})
beforeEach(() => FakeWebSocket.reset())

async function render(element: React.ReactElement): Promise<ReactTestRenderer> {
  let r: ReactTestRenderer | undefined
  await act(async () => {
    r = create(element)
  })
  return r!
}

describe('react hooks', () => {
  it('useObjectSocket connects on mount, follows status, closes on unmount', async () => {
    const seen: ObjectSocketState[] = []
    const events: unknown[] = []
    function Comp() {
      const state = useObjectSocket({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket })
      useObjectEvent(state.socket, 'message', (d) => events.push(d))
      seen.push(state)
      return null
    }
    const r = await render(createElement(Comp))
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    await act(async () => ws.open())
    expect(seen.at(-1)?.status).toBe('open')
    const socket = seen.at(-1)!.socket!
    await act(async () => ws.serverSend('{"type":"event","event":"message","data":1}'))
    expect(events).toEqual([1])
    await act(async () => r.unmount())
    expect(socket.status).toBe('closed')
    expect(ws.readyState).toBe(3)
    await new Promise((res) => setTimeout(res, 30))
    expect(FakeWebSocket.instances).toHaveLength(1)
  })

  it('StrictMode double mount leaves exactly one live socket', async () => {
    function Comp() {
      useObjectSocket({ url: 'http://127.0.0.1:9', class: 'room', name: 'r', WebSocket: FakeWebSocket })
      return null
    }
    const r = await render(createElement(StrictMode, null, createElement(Comp)))
    await until(() => FakeWebSocket.instances.length >= 1)
    await new Promise((res) => setTimeout(res, 20))
    const live = FakeWebSocket.instances.filter((w) => w.readyState < 2)
    expect(live).toHaveLength(1)
    await act(async () => r.unmount())
    expect(FakeWebSocket.instances.filter((w) => w.readyState < 2)).toHaveLength(0)
  })

  it('re-creates the socket when the object changes', async () => {
    function Comp({ name }: { name: string }) {
      useObjectSocket({ url: 'http://127.0.0.1:9', class: 'room', name, WebSocket: FakeWebSocket })
      return null
    }
    const r = await render(createElement(Comp, { name: 'a' }))
    await until(() => FakeWebSocket.instances.length === 1)
    await act(async () => r.update(createElement(Comp, { name: 'a' })))
    await new Promise((res) => setTimeout(res, 20))
    expect(FakeWebSocket.instances).toHaveLength(1)
    await act(async () => r.update(createElement(Comp, { name: 'b' })))
    await until(() => FakeWebSocket.instances.length === 2)
    expect(FakeWebSocket.instances[0]!.readyState).toBe(3)
    expect(FakeWebSocket.last().url).toContain('/room/b/ws')
    await act(async () => r.unmount())
  })

  it('useRoostProvider creates a doc and provider, re-renders on signals, destroys both on unmount', async () => {
    const seen: RoostDocState[] = []
    function Comp() {
      const state = useRoostProvider('doc', { url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket })
      seen.push(state)
      return null
    }
    const r = await render(createElement(Comp))
    const { doc, provider } = seen.at(-1)!
    expect(doc).toBeInstanceOf(Y.Doc)
    await until(() => FakeWebSocket.instances.length === 1)
    const ws = FakeWebSocket.last()
    expect(new URL(ws.url).pathname).toBe('/v1/yjs/doc')
    await act(async () => ws.open())
    expect(seen.at(-1)!.status).toBe('open')
    await act(async () => ws.serverSend(new Uint8Array([0, 1, 2, 0, 0])))
    expect(seen.at(-1)!.synced).toBe(true)
    let destroyed = false
    doc!.on('destroy', () => (destroyed = true))
    await act(async () => r.unmount())
    expect(provider!.status).toBe('closed')
    expect(destroyed).toBe(true)
    expect(ws.readyState).toBe(3)
  })

  it('useYDoc with an existing doc does not destroy it; usePresence publishes', async () => {
    const doc = new Y.Doc()
    let others: unknown[] = []
    let providerState: RoostDocState | null = null
    function Comp() {
      const state = useRoostProvider('doc', { url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket, doc })
      providerState = state
      const presence = usePresence(state.provider?.awareness, { name: 'alice' })
      others = presence.others
      return null
    }
    function Only() {
      return createElement('div', null, String(useYDoc('doc2', { url: 'http://127.0.0.1:9', WebSocket: FakeWebSocket }) !== null))
    }
    const r = await render(createElement(Comp))
    const provider = providerState!.provider!
    expect(provider.awareness.getLocalState()).toEqual({ name: 'alice' })
    expect(others).toEqual([])
    let destroyed = false
    doc.on('destroy', () => (destroyed = true))
    await act(async () => r.unmount())
    expect(destroyed).toBe(false)
    const r2 = await render(createElement(Only))
    expect(r2.toJSON()).toMatchObject({ children: ['true'] })
    await act(async () => r2.unmount())
  })
})
