/**
 * `@roost/client/react`: React bindings.
 *
 * - `<RoostClientProvider client={createClient(…)}>` puts the server URL,
 *   token and connection options in context for the hooks below it.
 * - Connections: `useObjectSocket`, `useRoostProvider` and `useYDoc` create a
 *   socket or provider in an effect and close it in the effect's cleanup, so
 *   unmounting (and StrictMode's double mount) never leaks a socket.
 * - State: every hook that reads something mutable (statuses, `saved`,
 *   events, Yjs types, awareness) does it with `useSyncExternalStore` and
 *   stable snapshots: no tearing, and no re-render when the value did not
 *   change. Selectors with an equality function narrow it further.
 *
 * Needs the peer dependencies `react` (≥ 18) and, for the Yjs hooks, `yjs`,
 * `y-protocols` and `lib0`.
 * @module
 */

export { RoostClientProvider, RoostContext, useRoostClient } from './context.js'
export type { RoostClientProviderProps } from './context.js'
export {
  useObjectSocket,
  useObjectEvent,
  useConnectionStatus,
  useAuthFailure,
  useLatestEvent,
  useEventReducer,
} from './sockets.js'
export type { ObjectSocketState, UseObjectSocketOptions, StatusSource } from './sockets.js'
export { useRoostProvider, useRoostProviderState, useYDoc, useYText, useYMap, useYArray } from './yjs.js'
export type { UseRoostProviderOptions, RoostDocState, RoostProviderState } from './yjs.js'
export { useAwareness, useAwarenessSelector, usePresence } from './awareness.js'
export type { Peer, Presence } from './awareness.js'
export { shallowEqual, deepEqual } from './store.js'
export type { EqualityFn } from './store.js'
