/**
 * `<RoostClientProvider client={…}>`: puts a {@link RoostClient} in context,
 * so that the hooks below it need no `url`, `token` or `WebSocket` options.
 * @module
 */

import { createContext, createElement, type ReactNode, useContext } from 'react'
import type { RoostClient } from '../client.js'

/** The React context holding the {@link RoostClient} of {@link RoostClientProvider} (null outside one). */
export const RoostContext = createContext<RoostClient | null>(null)
RoostContext.displayName = 'RoostContext'

/** Props of {@link RoostClientProvider}. */
export interface RoostClientProviderProps {
  /** The client whose URL, token and connection options the hooks below use (create it once, outside render). */
  client: RoostClient
  /** The components that use it. */
  children?: ReactNode
}

/**
 * Provides a {@link RoostClient} to the hooks below it: `useObjectSocket`,
 * `useRoostProvider` and `useYDoc` then take their `url`, `token`,
 * `WebSocket` and connection options from it (an option passed to a hook
 * still wins). Named so as not to clash with the Yjs `RoostProvider` class.
 *
 * ```tsx
 * const roost = createClient({ url: 'https://roost.example.com', token: getToken })
 * root.render(<RoostClientProvider client={roost}><App /></RoostClientProvider>)
 * ```
 */
export function RoostClientProvider({ client, children }: RoostClientProviderProps): ReactNode {
  return createElement(RoostContext.Provider, { value: client }, children)
}

/** The client of the nearest {@link RoostClientProvider}; throws when there is none. */
export function useRoostClient(): RoostClient {
  const client = useContext(RoostContext)
  if (!client) throw new Error('useRoostClient: no <RoostClientProvider client={…}> above this component')
  return client
}
