/**
 * A tiny typed event emitter used by sockets and providers.
 * Listener exceptions are re-thrown asynchronously so that one bad listener
 * never breaks the connection's own bookkeeping.
 * @module
 */

/** Removes the listener it was returned for. Calling it twice is harmless. */
export type Unsubscribe = () => void

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => void

export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  private readonly listeners = new Map<keyof Events, Set<AnyListener>>()

  on<K extends keyof Events>(event: K, fn: (...args: Events[K]) => void): Unsubscribe {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(fn as unknown as AnyListener)
    return () => this.off(event, fn)
  }

  off<K extends keyof Events>(event: K, fn: (...args: Events[K]) => void): void {
    const set = this.listeners.get(event)
    if (!set) return
    set.delete(fn as unknown as AnyListener)
    if (set.size === 0) this.listeners.delete(event)
  }

  emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.listeners.get(event)
    if (!set) return
    for (const fn of [...set]) {
      try {
        fn(...(args as unknown[]))
      } catch (e) {
        queueMicrotask(() => {
          throw e
        })
      }
    }
  }

  clear(): void {
    this.listeners.clear()
  }
}
