/**
 * Hooks for presence (y-protocols awareness): everyone's state, a selected
 * part of it, and publishing one's own.
 * @module
 */

import { useEffect, useRef } from 'react'
import type { Awareness } from 'y-protocols/awareness'
import { deepEqual, type EqualityFn, useMutableStore } from './store.js'

function listenAwareness(awareness: Awareness | null | undefined, notify: () => void): (() => void) | undefined {
  if (!awareness) return undefined
  // `change` fires when a state really changed (not on the periodic renewals).
  awareness.on('change', notify)
  return () => awareness.off('change', notify)
}

const NO_STATES: ReadonlyMap<number, never> = new Map<number, never>()

/**
 * A selected part of the awareness states, re-rendered only when it changes:
 * `selector(states, selfId)` runs after each awareness change, and the
 * component re-renders only when `isEqual(previous, selected)` is false
 * (default `Object.is`; pass `shallowEqual` or `deepEqual` for a selector that
 * builds a new array or object). `states` maps client ids to states, this
 * client's included; for a null awareness it is empty and `selfId` is -1.
 *
 * ```tsx
 * // Re-renders when the set of names changes, not when someone's cursor moves.
 * const names = useAwarenessSelector(provider?.awareness,
 *   (states) => [...states.values()].map((s) => s.name as string).sort(), shallowEqual)
 * ```
 */
export function useAwarenessSelector<R, T = Record<string, unknown>>(
  awareness: Awareness | null | undefined,
  selector: (states: ReadonlyMap<number, T>, selfId: number) => R,
  isEqual: EqualityFn<R> = Object.is,
): R {
  return useMutableStore(
    awareness,
    listenAwareness,
    (a) => selector(a ? (a.getStates() as Map<number, T>) : (NO_STATES as ReadonlyMap<number, T>), a ? a.clientID : -1),
    isEqual,
  )
}

const copyStates = (states: ReadonlyMap<number, unknown>) => new Map(states)

/**
 * Every client's awareness state, keyed by client id (a new `Map` after each
 * change, the same one in between). Prefer {@link useAwarenessSelector} to
 * re-render only for what a component shows.
 */
export function useAwareness<T = Record<string, unknown>>(awareness: Awareness | null | undefined): Map<number, T> {
  return useAwarenessSelector(awareness, copyStates, sameEntries) as Map<number, T>
}

function sameEntries(a: Map<number, unknown>, b: Map<number, unknown>): boolean {
  if (a.size !== b.size) return false
  for (const [k, v] of a) if (!b.has(k) || b.get(k) !== v) return false
  return true
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

function selectPresence<T>(states: ReadonlyMap<number, T>, selfId: number): Presence<T> {
  const others: Peer<T>[] = []
  for (const [clientId, state] of states) {
    if (clientId !== selfId && state && Object.keys(state).length > 0) others.push({ clientId, state })
  }
  return { self: selfId === -1 ? null : (states.get(selfId) ?? null), others }
}

/**
 * Publishes `localState` as this client's presence (updated whenever its JSON
 * changes, cleared on unmount) and returns everyone's presence, re-rendered
 * only when some state really changed (compared with {@link deepEqual}). With
 * `select`, returns only the selected part of the presence, re-rendered when
 * `isEqual` (default `deepEqual`) says it changed.
 *
 * ```tsx
 * const { others } = usePresence(provider?.awareness, { name: 'alice', color: '#f80' })
 * const count = usePresence(provider?.awareness, undefined, (p) => p.others.length)
 * ```
 */
export function usePresence<T extends Record<string, unknown>>(
  awareness: Awareness | null | undefined,
  localState?: T,
): Presence<T>
export function usePresence<T extends Record<string, unknown>, R>(
  awareness: Awareness | null | undefined,
  localState: T | undefined,
  select: (presence: Presence<T>) => R,
  isEqual?: EqualityFn<R>,
): R
export function usePresence<T extends Record<string, unknown>, R>(
  awareness: Awareness | null | undefined,
  localState?: T,
  select?: (presence: Presence<T>) => R,
  isEqual: EqualityFn<unknown> = deepEqual,
): Presence<T> | R {
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
  return useAwarenessSelector<Presence<T> | R, T>(
    awareness,
    (states, selfId) => {
      const presence = selectPresence(states, selfId)
      return select ? select(presence) : presence
    },
    isEqual,
  )
}
