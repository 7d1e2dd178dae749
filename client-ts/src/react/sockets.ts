/**
 * Hooks for object sockets: the socket itself, its status, its events.
 * @module
 */

import { useContext, useEffect, useMemo, useRef, useState } from 'react'
import type { RoostClient } from '../client.js'
import type { AuthFailure, ConnectionStatus } from '../connection.js'
import type { EventData, EventName, ObjectSchema, UntypedEventName, UntypedObject } from '../schema.js'
import { connect, type ConnectOptions, type ObjectSocket, type SocketStatus } from '../socket.js'
import { resolveToken } from '../token.js'
import type { RoostProvider } from '../yjs/provider.js'
import { RoostContext } from './context.js'
import { type EqualityFn, useMutableStore } from './store.js'

/** Options of {@link useObjectSocket}: those of `connect`, with `url` optional inside a `RoostClientProvider`. */
export type UseObjectSocketOptions = Omit<ConnectOptions, 'url'> & {
  /** Server base URL; defaults to the client's of the enclosing `RoostClientProvider`. */
  url?: string
}

/** What {@link useObjectSocket} returns. */
export interface ObjectSocketState<S extends ObjectSchema = UntypedObject> {
  /** The socket, or null before the first effect ran (and when `options` is null). */
  socket: ObjectSocket<S> | null
  /** The socket's status; re-renders on every change. */
  status: SocketStatus
  /** Why the server refused the token, while `status` is `unauthorized`; else null. */
  authFailure: AuthFailure | null
}

/**
 * The client's options under the hook's own (an `undefined` field of the
 * hook's options does not hide the client's). Throws when no URL is known.
 * @internal
 */
export function withClientOptions<O extends { url?: string }>(
  client: RoostClient | null,
  options: O,
  hook: string,
): O & { url: string } {
  const merged: Record<string, unknown> = {}
  if (client) {
    const { fetch: _fetch, headers: _headers, ...shared } = client.options
    Object.assign(merged, shared)
  }
  for (const [k, v] of Object.entries(options)) if (v !== undefined) merged[k] = v
  if (typeof merged.url !== 'string' || merged.url === '') {
    throw new Error(`${hook}: no \`url\`: pass one, or render inside <RoostClientProvider client={…}>`)
  }
  return merged as O & { url: string }
}

/** Anything with a connection status: an `ObjectSocket` or a `RoostProvider`. */
export type StatusSource = ObjectSocket<any> | RoostProvider

function listenStatus(source: StatusSource | null | undefined, notify: () => void): (() => void) | undefined {
  if (!source) return undefined
  return 'onStatus' in source ? source.onStatus(notify) : source.on('status', notify)
}

/**
 * The status of a socket or provider (`connecting`, `open`, `reconnecting`,
 * `unauthorized`, `closed`), re-rendered on each change; `fallback` (default
 * `closed`) while there is none.
 */
export function useConnectionStatus(
  source: StatusSource | null | undefined,
  fallback: ConnectionStatus = 'closed',
): ConnectionStatus {
  return useMutableStore(source, listenStatus, (s) => s?.status ?? fallback)
}

/**
 * Why the server refused the token of a socket or provider, while its status
 * is `unauthorized` (show a sign-in prompt, then call `reconnect()` /
 * `connect()`); null otherwise.
 */
export function useAuthFailure(source: StatusSource | null | undefined): AuthFailure | null {
  return useMutableStore(source, listenStatus, (s) => s?.authFailure ?? null)
}

/**
 * Connects to an object for as long as the component is mounted. The socket
 * is re-created when `url`, `class`, `name` or `params` change; a changed
 * `token` (string or callback) is picked up at the next reconnect without
 * re-creating it. Pass null to stay disconnected. Inside a
 * `RoostClientProvider`, `url`, `token`, `WebSocket` and the connection
 * options default to the client's. The status comes from
 * `useSyncExternalStore`. Pass an `ObjectSchema` as type parameter for typed
 * calls and events.
 *
 * ```tsx
 * const { socket, status } = useObjectSocket<Room>({ class: 'room', name: 'lobby', params: { name: 'alice' } })
 * const messages = useEventReducer(socket, 'message', (all, m) => [...all, m], [] as Message[])
 * ```
 */
export function useObjectSocket<S extends ObjectSchema = UntypedObject>(options: UseObjectSocketOptions | null): ObjectSocketState<S> {
  const client = useContext(RoostContext)
  const merged = options === null ? null : withClientOptions(client, options, 'useObjectSocket')
  const latest = useRef(merged)
  latest.current = merged
  const key = merged === null ? null : JSON.stringify([merged.url, merged.class, merged.name, merged.params ?? null])
  const [socket, setSocket] = useState<ObjectSocket<S> | null>(null)
  useEffect(() => {
    const opts = latest.current
    if (key === null || opts === null) {
      setSocket(null)
      return
    }
    const created = connect<S>({
      ...opts,
      token: opts.token === undefined ? undefined : () => resolveToken(latest.current?.token),
    })
    setSocket(created)
    return () => created.close()
  }, [key])
  const status = useConnectionStatus(socket, key === null ? 'closed' : 'connecting')
  const authFailure = useAuthFailure(socket)
  return useMemo(() => ({ socket, status, authFailure }), [socket, status, authFailure])
}

/**
 * Listens for an event pushed by the object on `socket` (see `ObjectSocket.on`).
 * The latest `handler` is always called; the listener is removed on unmount.
 * With a typed socket the event name and data are checked.
 */
export function useObjectEvent<S extends ObjectSchema, E extends EventName<S>>(
  socket: ObjectSocket<S> | null | undefined,
  event: E,
  handler: (data: EventData<S, E>) => void,
): void
export function useObjectEvent<T = unknown, S extends ObjectSchema = UntypedObject>(
  socket: ObjectSocket<S> | null | undefined,
  event: UntypedEventName<S>,
  handler: (data: T) => void,
): void
export function useObjectEvent(socket: ObjectSocket | null | undefined, event: string, handler: (data: unknown) => void): void {
  const latest = useRef(handler)
  latest.current = handler
  useEffect(() => {
    if (!socket) return
    return socket.on(event, (data) => latest.current(data))
  }, [socket, event])
}

interface EventStore {
  socket: ObjectSocket | null | undefined
  event: string
  value: unknown
  reduce: (state: unknown, data: unknown) => unknown
}

function listenEvent(store: EventStore, notify: () => void): (() => void) | undefined {
  return store.socket?.on(store.event, (data) => {
    store.value = store.reduce(store.value, data)
    notify()
  })
}

function readEvent(store: EventStore): unknown {
  return store.value
}

function useEventStore(
  socket: ObjectSocket<any> | null | undefined,
  event: string,
  reduce: (state: unknown, data: unknown) => unknown,
  initial: unknown,
  isEqual: EqualityFn<unknown> | undefined,
): unknown {
  const store = useMemo<EventStore>(
    () => ({ socket: socket as ObjectSocket | null | undefined, event, value: initial, reduce }),
    // A new socket or event starts from `initial` again.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [socket, event],
  )
  store.reduce = reduce
  return useMutableStore(store, listenEvent, readEvent, isEqual)
}

const latestOf = (_: unknown, data: unknown) => data

/**
 * The data of the latest `event` pushed on `socket` since this component
 * subscribed (undefined before the first; reset when `socket` or `event`
 * changes). Re-renders on each such event unless `isEqual` says the data is
 * the same.
 *
 * ```tsx
 * const state = useLatestEvent(socket, 'state') // the lobby's latest state push
 * ```
 */
export function useLatestEvent<S extends ObjectSchema, E extends EventName<S>>(
  socket: ObjectSocket<S> | null | undefined,
  event: E,
  isEqual?: EqualityFn<EventData<S, E> | undefined>,
): EventData<S, E> | undefined
export function useLatestEvent<T = unknown, S extends ObjectSchema = UntypedObject>(
  socket: ObjectSocket<S> | null | undefined,
  event: UntypedEventName<S>,
  isEqual?: EqualityFn<T | undefined>,
): T | undefined
export function useLatestEvent(
  socket: ObjectSocket | null | undefined,
  event: string,
  isEqual?: EqualityFn<unknown>,
): unknown {
  return useEventStore(socket, event, latestOf, undefined, isEqual)
}

/**
 * Folds the `event`s pushed on `socket` into a value, like `useReducer`:
 * starts at `initial` (again when `socket` or `event` changes), and each event
 * gives `reducer(value, data)`. Returning the same value does not re-render.
 *
 * ```tsx
 * const messages = useEventReducer(socket, 'message', (all, m) => [...all, m].slice(-100), [] as Message[])
 * ```
 */
export function useEventReducer<S extends ObjectSchema, E extends EventName<S>, R>(
  socket: ObjectSocket<S> | null | undefined,
  event: E,
  reducer: (value: R, data: EventData<S, E>) => R,
  initial: R,
): R
export function useEventReducer<T, R, S extends ObjectSchema = UntypedObject>(
  socket: ObjectSocket<S> | null | undefined,
  event: UntypedEventName<S>,
  reducer: (value: R, data: T) => R,
  initial: R,
): R
export function useEventReducer(
  socket: ObjectSocket | null | undefined,
  event: string,
  reducer: (value: unknown, data: unknown) => unknown,
  initial: unknown,
): unknown {
  return useEventStore(socket, event, reducer, initial, undefined)
}
