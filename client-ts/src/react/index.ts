/**
 * `@roost/client/react`: React hooks for object sockets, Yjs documents and
 * presence. Every hook creates its connection in an effect and closes it in
 * the effect's cleanup, so unmounting (and React's StrictMode double mount)
 * never leaks a socket. Needs the peer dependencies `react` (≥ 18) and, for
 * the Yjs hooks, `yjs`, `y-protocols` and `lib0`.
 * @module
 */

import { useEffect, useRef, useState } from 'react'
import * as Y from 'yjs'
import type { Awareness } from 'y-protocols/awareness'
import { connect, type ConnectOptions, type ObjectSocket, type SocketStatus } from '../socket.js'
import { resolveToken } from '../token.js'
import { RoostProvider, type ProviderStatus, type RoostProviderOptions } from '../yjs/provider.js'

/** What {@link useObjectSocket} returns. */
export interface ObjectSocketState {
  /** The socket, or null before the first effect ran (and when `options` is null). */
  socket: ObjectSocket | null
  /** The socket's status; re-renders on every change. */
  status: SocketStatus
}

/**
 * Connects to an object for as long as the component is mounted. The socket
 * is re-created when `url`, `class`, `name` or `params` change; a changed
 * `token` (string or callback) is picked up at the next reconnect without
 * re-creating it. Pass null to stay disconnected.
 *
 * ```tsx
 * const { socket, status } = useObjectSocket({ url, class: 'room', name: 'lobby', params: { name: 'alice' } })
 * useObjectEvent(socket, 'message', (m) => setMessages((all) => [...all, m]))
 * ```
 */
export function useObjectSocket(options: ConnectOptions | null): ObjectSocketState {
  const latest = useRef(options)
  latest.current = options
  const key = options === null ? null : JSON.stringify([options.url, options.class, options.name, options.params ?? null])
  const [state, setState] = useState<ObjectSocketState>({ socket: null, status: options === null ? 'closed' : 'connecting' })
  useEffect(() => {
    const opts = latest.current
    if (key === null || opts === null) {
      setState({ socket: null, status: 'closed' })
      return
    }
    const socket = connect({
      ...opts,
      token: opts.token === undefined ? undefined : () => resolveToken(latest.current?.token),
    })
    setState({ socket, status: socket.status })
    const off = socket.onStatus((status) => setState({ socket, status }))
    return () => {
      off()
      socket.close()
    }
  }, [key])
  return state
}

/**
 * Listens for an event pushed by the object on `socket` (see `ObjectSocket.on`).
 * The latest `handler` is always called; the listener is removed on unmount.
 */
export function useObjectEvent<T = unknown>(socket: ObjectSocket | null, event: string, handler: (data: T) => void): void {
  const latest = useRef(handler)
  latest.current = handler
  useEffect(() => {
    if (!socket) return
    return socket.on<T>(event, (data) => latest.current(data))
  }, [socket, event])
}

/** Options of {@link useRoostProvider}: the provider's options plus an optional existing document. */
export interface UseRoostProviderOptions extends RoostProviderOptions {
  /** Sync this document instead of creating one (it is then not destroyed on unmount). */
  doc?: Y.Doc
}

/** What {@link useRoostProvider} returns. */
export interface RoostDocState {
  /** The document, or null before the first effect ran. */
  doc: Y.Doc | null
  /** The provider, or null before the first effect ran. */
  provider: RoostProvider | null
  /** The provider's connection status. */
  status: ProviderStatus
  /** The server's state has been applied (see `RoostProvider.synced`). */
  synced: boolean
  /** Every local change is durable on the server (see `RoostProvider.saved`). */
  saved: boolean
}

/**
 * Syncs a Yjs document with the Roost document `docName` while mounted: creates
 * a `Y.Doc` (unless `options.doc` is given) and a {@link RoostProvider}, and
 * destroys both on unmount or when `docName`/`url`/`params` change. Re-renders
 * on `status`, `synced` and `saved` changes. Pass a null `docName` to stay idle.
 *
 * ```tsx
 * const { doc, provider, saved } = useRoostProvider('notes', { url })
 * ```
 */
export function useRoostProvider(docName: string | null, options: UseRoostProviderOptions): RoostDocState {
  const latest = useRef(options)
  latest.current = options
  const key = docName === null ? null : JSON.stringify([docName, options.url, options.params ?? null])
  const docOption = options.doc
  const [state, setState] = useState<RoostDocState>({
    doc: null,
    provider: null,
    status: docName === null ? 'closed' : 'connecting',
    synced: false,
    saved: false,
  })
  useEffect(() => {
    const opts = latest.current
    if (key === null || docName === null) {
      setState({ doc: null, provider: null, status: 'closed', synced: false, saved: false })
      return
    }
    const doc = docOption ?? new Y.Doc()
    const provider = new RoostProvider(docName, doc, {
      ...opts,
      token: opts.token === undefined ? undefined : () => resolveToken(latest.current.token),
    })
    const snapshot = () =>
      setState({ doc, provider, status: provider.status, synced: provider.synced, saved: provider.saved })
    snapshot()
    const offs = [provider.on('status', snapshot), provider.on('synced', snapshot), provider.on('saved', snapshot)]
    return () => {
      for (const off of offs) off()
      provider.destroy()
      if (!docOption) doc.destroy()
    }
    // docName is part of key
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, docOption])
  return state
}

/** The document of {@link useRoostProvider} (null before the first effect ran). */
export function useYDoc(docName: string | null, options: UseRoostProviderOptions): Y.Doc | null {
  return useRoostProvider(docName, options).doc
}

/** Every client's awareness state, keyed by client id, re-rendered on each change. */
export function useAwareness<T = Record<string, unknown>>(awareness: Awareness | null | undefined): Map<number, T> {
  const [states, setStates] = useState<Map<number, T>>(() => new Map(awareness ? (awareness.getStates() as Map<number, T>) : []))
  useEffect(() => {
    if (!awareness) {
      setStates(new Map())
      return
    }
    const refresh = () => setStates(new Map(awareness.getStates() as Map<number, T>))
    refresh()
    awareness.on('change', refresh)
    return () => awareness.off('change', refresh)
  }, [awareness])
  return states
}

/** One other client's presence. */
export interface Peer<T> {
  clientId: number
  state: T
}

/** What {@link usePresence} returns. */
export interface Presence<T> {
  /** This client's state. */
  self: T | null
  /** Everyone else with a non-empty state. */
  others: Peer<T>[]
}

/**
 * Publishes `localState` as this client's presence (updated whenever its JSON
 * changes, cleared on unmount) and returns everyone's presence.
 *
 * ```tsx
 * const { others } = usePresence(provider?.awareness, { name: 'alice', color: '#f80' })
 * ```
 */
export function usePresence<T extends Record<string, unknown>>(
  awareness: Awareness | null | undefined,
  localState?: T,
): Presence<T> {
  const states = useAwareness<T>(awareness)
  const json = localState === undefined ? undefined : JSON.stringify(localState)
  const latest = useRef(localState)
  latest.current = localState
  useEffect(() => {
    if (!awareness || json === undefined) return
    awareness.setLocalState(latest.current ?? null)
  }, [awareness, json])
  useEffect(() => {
    if (!awareness || latest.current === undefined) return
    return () => awareness.setLocalState(null)
  }, [awareness])
  const selfId = awareness?.clientID
  const others: Peer<T>[] = []
  for (const [clientId, state] of states) {
    if (clientId !== selfId && state && Object.keys(state).length > 0) others.push({ clientId, state })
  }
  return { self: selfId === undefined ? null : (states.get(selfId) ?? null), others }
}
