/**
 * The one way the hooks read mutable things (sockets, providers, Yjs types,
 * awareness): `useSyncExternalStore`, with a snapshot that is computed again
 * only after the source reported a change (or the reader changed) and kept
 * when equal to the previous one, so a render never tears and an unchanged
 * value never re-renders.
 * @module
 */

import { useCallback, useRef, useSyncExternalStore } from 'react'

/** Compares two values; true keeps the previous snapshot (no re-render). */
export type EqualityFn<T> = (a: T, b: T) => boolean

interface Box<Src, T> {
  source: Src
  read: ((source: Src) => T) | null
  /** Bumped on every reported change (and on subscribing: changes before it went unseen). */
  version: number
  /** The version `value` was read at. */
  seen: number
  value: T
  has: boolean
}

/**
 * Subscribes to `source` with `listen` (which calls `notify` on each change
 * and returns its unsubscribe) and returns `read(source)`: read again only
 * after a change, or when `source` or `read` is another one, and replaced
 * only when `isEqual` says it differs from the previous value.
 */
export function useMutableStore<Src, T>(
  source: Src,
  listen: (source: Src, notify: () => void) => (() => void) | undefined,
  read: (source: Src) => T,
  isEqual: EqualityFn<T> = Object.is,
): T {
  const ref = useRef<Box<Src, T> | null>(null)
  const box = (ref.current ??= { source, read: null, version: 0, seen: -1, value: undefined as T, has: false })
  // `listen` is a module-level function of each hook: only `source` matters.
  const subscribe = useCallback(
    (notify: () => void) => {
      const off = listen(source, () => {
        box.version++
        notify()
      })
      box.version++
      return () => off?.()
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [source],
  )
  const getSnapshot = (): T => {
    if (box.has && box.seen === box.version && box.source === source && box.read === read) return box.value
    const next = read(source)
    const sameSource = box.source === source
    box.seen = box.version
    box.source = source
    box.read = read
    if (box.has && sameSource && isEqual(box.value, next)) return box.value
    box.value = next
    box.has = true
    return next
  }
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot)
}

/**
 * True when `a` and `b` are equal one level deep: the same value, or arrays
 * with `Object.is`-equal items, or Maps/Sets with equal entries, or plain
 * objects with the same keys and `Object.is`-equal values. A handy `isEqual`
 * for selectors that build a new array or object each time.
 */
export function shallowEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    return a.every((v, i) => Object.is(v, b[i]))
  }
  if (a instanceof Map) {
    if (!(b instanceof Map) || a.size !== b.size) return false
    for (const [k, v] of a) if (!b.has(k) || !Object.is(v, b.get(k))) return false
    return true
  }
  if (a instanceof Set) {
    if (!(b instanceof Set) || a.size !== b.size) return false
    for (const v of a) if (!b.has(v)) return false
    return true
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && Object.is((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

/**
 * True when `a` and `b` are structurally equal: JSON-like values (primitives,
 * arrays, plain objects, Maps, Sets) compared all the way down. The right
 * `isEqual` for awareness states, which arrive as new objects even when
 * nothing changed.
 */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    return a.every((v, i) => deepEqual(v, b[i]))
  }
  if (a instanceof Map) {
    if (!(b instanceof Map) || a.size !== b.size) return false
    for (const [k, v] of a) if (!b.has(k) || !deepEqual(v, b.get(k))) return false
    return true
  }
  if (a instanceof Set) {
    if (!(b instanceof Set) || a.size !== b.size) return false
    for (const v of a) if (!b.has(v)) return false
    return true
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}
