/**
 * `@roost/client/yjs`: the Yjs provider and the y-websocket message codec
 * (including Roost's extensions: `saved`, `refresh`, `ping`). Needs the peer dependencies `yjs`,
 * `y-protocols` and `lib0`.
 * @module
 */

export { RoostProvider } from './provider.js'
export type { RoostProviderOptions, ProviderEvents, ProviderStatus } from './provider.js'
export {
  MessageType,
  SyncMessageType,
  decodeMessage,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  encodeAwareness,
  encodeQueryAwareness,
  encodeSaved,
  encodeRefresh,
  encodePing,
} from './messages.js'
export type { YMessage } from './messages.js'
export { createVersionsClient } from './versions.js'
export type { VersionsClient, VersionsClientOptions, VersionInfo } from './versions.js'
