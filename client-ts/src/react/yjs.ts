/**
 * Hooks for Yjs: a provider per mounted component, its signals, and the
 * contents of shared types.
 * @module
 */

import { useContext, useEffect, useMemo, useRef, useState } from 'react'
import * as Y from 'yjs'
import type { AuthFailure } from '../connection.js'
import { resolveToken } from '../token.js'
import { RoostProvider, type ProviderStatus, type RoostProviderOptions } from '../yjs/provider.js'
import { RoostContext } from './context.js'
import { withClientOptions } from './sockets.js'
import { shallowEqual, useMutableStore } from './store.js'

/**
 * Options of {@link useRoostProvider}: the provider's options plus an optional
 * existing document; `url` is optional inside a `RoostClientProvider`.
 */
export interface UseRoostProviderOptions extends Omit<RoostProviderOptions, 'url'> {
  /** Server base URL; defaults to the client's of the enclosing `RoostClientProvider`. */
  url?: string
  /** Sync this document instead of creating one (it is then not destroyed on unmount). */
  doc?: Y.Doc
}

/** The signals of a {@link RoostProvider}, as {@link useRoostProviderState} returns them. */
export interface RoostProviderState {
  /** The provider's connection status. */
  status: ProviderStatus
  /** The server's state has been applied (see `RoostProvider.synced`). */
  synced: boolean
  /** Every local change is durable on the server (see `RoostProvider.saved`). */
  saved: boolean
  /** Why the server refused the token, while `status` is `unauthorized`; else null. */
  authFailure: AuthFailure | null
}

/** What {@link useRoostProvider} returns. */
export interface RoostDocState extends RoostProviderState {
  /** The document, or null before the first effect ran. */
  doc: Y.Doc | null
  /** The provider, or null before the first effect ran. */
  provider: RoostProvider | null
}

function listenProvider(provider: RoostProvider | null | undefined, notify: () => void): (() => void) | undefined {
  if (!provider) return undefined
  const offs = [
    provider.on('status', notify),
    provider.on('synced', notify),
    provider.on('saved', notify),
  ]
  return () => offs.forEach((off) => off())
}

const IDLE: RoostProviderState = Object.freeze({ status: 'closed', synced: false, saved: false, authFailure: null })

function readProvider(provider: RoostProvider | null | undefined): RoostProviderState {
  if (!provider) return IDLE
  return { status: provider.status, synced: provider.synced, saved: provider.saved, authFailure: provider.authFailure }
}

/**
 * The `status`, `synced`, `saved` and `authFailure` of a provider (e.g. one
 * made outside React), from `useSyncExternalStore`: the returned object is
 * the same until one of them changes.
 *
 * ```tsx
 * const { saved } = useRoostProviderState(provider)
 * return <span>{saved ? 'Saved' : 'Saving…'}</span>
 * ```
 */
export function useRoostProviderState(provider: RoostProvider | null | undefined): RoostProviderState {
  return useMutableStore(provider, listenProvider, readProvider, shallowEqual)
}

/**
 * Syncs a Yjs document with the Roost document `docName` while mounted: creates
 * a `Y.Doc` (unless `options.doc` is given) and a {@link RoostProvider}, and
 * destroys both on unmount or when `docName`/`url`/`params` change. Re-renders
 * on `status`, `synced` and `saved` changes. Pass a null `docName` to stay
 * idle. Inside a `RoostClientProvider`, `url`, `token`, `WebSocket` and the
 * connection options default to the client's (and `options` may be omitted).
 *
 * ```tsx
 * const { doc, provider, saved } = useRoostProvider('notes', { url })
 * ```
 */
export function useRoostProvider(docName: string | null, options: UseRoostProviderOptions = {}): RoostDocState {
  const client = useContext(RoostContext)
  const merged = docName === null ? null : withClientOptions(client, options, 'useRoostProvider')
  const latest = useRef(merged)
  latest.current = merged
  const key = merged === null ? null : JSON.stringify([docName, merged.url, merged.params ?? null])
  const docOption = options.doc
  const [pair, setPair] = useState<{ doc: Y.Doc; provider: RoostProvider } | null>(null)
  useEffect(() => {
    const opts = latest.current
    if (key === null || docName === null || opts === null) {
      setPair(null)
      return
    }
    const { doc: _doc, ...providerOptions } = opts
    const doc = docOption ?? new Y.Doc()
    const provider = new RoostProvider(docName, doc, {
      ...providerOptions,
      token: opts.token === undefined ? undefined : () => resolveToken(latest.current?.token),
    })
    setPair({ doc, provider })
    return () => {
      provider.destroy()
      if (!docOption) doc.destroy()
    }
    // docName is part of key
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, docOption])
  const provider = pair?.provider ?? null
  const state = useRoostProviderState(provider)
  const status = provider ? state.status : key === null ? 'closed' : 'connecting'
  return useMemo(
    () => ({ doc: pair?.doc ?? null, provider, ...state, status }),
    [pair, provider, state, status],
  )
}

/** The document of {@link useRoostProvider} (null before the first effect ran). */
export function useYDoc(docName: string | null, options?: UseRoostProviderOptions): Y.Doc | null {
  return useRoostProvider(docName, options).doc
}

type Observable = Y.AbstractType<any>

interface TypeSource<T extends Observable | null | undefined> {
  type: T
  deep: boolean
}

function listenType(source: TypeSource<Observable | null | undefined>, notify: () => void): (() => void) | undefined {
  const { type, deep } = source
  if (!type) return undefined
  if (deep) {
    type.observeDeep(notify)
    return () => type.unobserveDeep(notify)
  }
  type.observe(notify)
  return () => type.unobserve(notify)
}

/** A stable `{ type, deep }` pair, so that subscriptions follow the type itself. */
function useTypeSource<T extends Observable | null | undefined>(type: T, deep: boolean): TypeSource<T> {
  return useMemo(() => ({ type, deep }), [type, deep])
}

const readText = ({ type }: TypeSource<Y.Text | null | undefined>): string => type?.toString() ?? ''

/**
 * The text of a `Y.Text`, re-rendered when it changes (a formatting-only
 * change leaves the string, and so the render, alone); `''` for null.
 *
 * ```tsx
 * const title = useYText(doc?.getText('title'))
 * ```
 */
export function useYText(text: Y.Text | null | undefined): string {
  return useMutableStore(useTypeSource(text, false), listenType, readText)
}

const EMPTY_MAP: Readonly<Record<string, never>> = Object.freeze({})
const EMPTY_ARRAY: readonly never[] = Object.freeze([])

function readMap<T>({ type }: TypeSource<Y.Map<T> | null | undefined>): Readonly<Record<string, T>> {
  if (!type) return EMPTY_MAP
  const out: Record<string, T> = {}
  for (const [k, v] of type.entries()) out[k] = v
  return out
}

function readArray<T>({ type }: TypeSource<Y.Array<T> | null | undefined>): readonly T[] {
  return type ? type.toArray() : EMPTY_ARRAY
}

/**
 * The entries of a `Y.Map` as a plain object (values as stored: nested Yjs
 * types stay Yjs types), re-rendered when the map's own entries change, and
 * with `deep` also when a nested type changes. The object is the same between
 * changes (a change that leaves every value identical keeps it); `{}` for null.
 *
 * ```tsx
 * const settings = useYMap<string | number>(doc?.getMap('settings'))
 * ```
 */
export function useYMap<T = unknown>(map: Y.Map<T> | null | undefined, deep = false): Readonly<Record<string, T>> {
  const snapshot = useMutableStore(useTypeSource(map, deep), listenType, readMap<T>, deep ? Object.is : shallowEqual)
  return snapshot
}

/**
 * The items of a `Y.Array` (nested Yjs types stay Yjs types), re-rendered when
 * the array changes, and with `deep` also when a nested type changes. The
 * array is the same between changes; `[]` for null.
 *
 * ```tsx
 * const todos = useYArray<Y.Map<unknown>>(doc?.getArray('todos'))
 * ```
 */
export function useYArray<T = unknown>(array: Y.Array<T> | null | undefined, deep = false): readonly T[] {
  return useMutableStore(useTypeSource(array, deep), listenType, readArray<T>, deep ? Object.is : shallowEqual)
}
