// React hooks against the real roost binary: the socket a component opens is
// gone from the server once the component unmounts.
import { createElement } from 'react'
import { act, create, type ReactTestRenderer } from 'react-test-renderer'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { createHttpClient, type WebSocketConstructor } from '../../src/index.js'
import {
  type ObjectSocketState,
  type RoostDocState,
  useObjectEvent,
  useObjectSocket,
  usePresence,
  useRoostProvider,
} from '../../src/react/index.js'
import { silenceTestRendererDeprecation } from '../helpers/react.js'
import { RoostServer } from './roost.js'

const WS = WebSocket as unknown as WebSocketConstructor
let server: RoostServer

beforeAll(async () => {
  ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true
  silenceTestRendererDeprecation()
  server = await RoostServer.start()
})

afterAll(async () => {
  await server?.dispose()
})

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('react hooks against roost', () => {
  it('useObjectSocket joins a room while mounted and leaves on unmount', async () => {
    const http = createHttpClient({ url: server.url })
    let state: ObjectSocketState = { socket: null, status: 'connecting', authFailure: null }
    const messages: Array<{ text: string }> = []
    function Chat() {
      state = useObjectSocket({ url: server.url, class: 'room', name: 'e2e-react', params: { name: 'carol' }, WebSocket: WS })
      useObjectEvent<{ text: string }>(state.socket, 'message', (m) => messages.push(m))
      return createElement('span', null, state.status)
    }
    let r: ReactTestRenderer | undefined
    await act(async () => {
      r = create(createElement(Chat))
    })
    await act(async () => {
      await until(() => state.socket?.status === 'open', 'open')
    })
    expect(r!.toJSON()).toMatchObject({ children: ['open'] })
    await act(async () => {
      await state.socket!.call('join', { name: 'carol' })
    })
    expect(await http.call('room', 'e2e-react', 'who')).toEqual(['carol'])
    await act(async () => {
      await http.call('room', 'e2e-react', 'send', { text: 'hi carol', name: 'dave' })
      await until(() => messages.some((m) => m.text === 'hi carol'), 'pushed message')
    })
    const socket = state.socket!
    await act(async () => r!.unmount())
    expect(socket.status).toBe('closed')
    await until(async () => ((await http.call('room', 'e2e-react', 'who')) as string[]).length === 0, 'server saw the socket close')
  })

  it('useRoostProvider: two components converge, see each other, and close their sockets on unmount', async () => {
    const states: Record<string, RoostDocState> = {}
    const peers: Record<string, number> = {}
    function Editor({ who }: { who: string }) {
      const state = useRoostProvider('e2e-react-doc', { url: server.url, WebSocket: WS })
      const { others } = usePresence(state.provider?.awareness, { name: who })
      states[who] = state
      peers[who] = others.length
      return null
    }
    let r: ReactTestRenderer | undefined
    await act(async () => {
      r = create(createElement('div', null, createElement(Editor, { who: 'ann' }), createElement(Editor, { who: 'ben' })))
    })
    const ann = states.ann!.provider!
    const ben = states.ben!.provider!
    await act(async () => {
      await Promise.all([ann.whenSynced(10_000), ben.whenSynced(10_000)])
      ann.doc.getText('t').insert(0, 'from ann')
      await until(() => ben.doc.getText('t').toString() === 'from ann', 'convergence')
      await until(() => ann.awareness.getStates().size === 2 && ben.awareness.getStates().size === 2, 'presence')
      await ann.whenSaved(10_000)
    })
    expect(states.ann!.saved).toBe(true)
    expect(peers.ann).toBe(1)
    expect(peers.ben).toBe(1)
    await act(async () => r!.unmount())
    expect(ann.status).toBe('closed')
    expect(ben.status).toBe('closed')
  })
})
