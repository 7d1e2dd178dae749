/**
 * `@roost/client`: the core entry point — object sockets (`connect`), RPC over
 * HTTP (`createHttpClient`), both at once (`createClient`), typed RPC
 * declarations (`ObjectSchema`) and errors. It imports neither Yjs nor React; the
 * Yjs provider is in `@roost/client/yjs` and the hooks in `@roost/client/react`.
 * @module
 */

export { connect, ObjectSocket } from './socket.js'
export type { ConnectOptions, CallOptions, CloseInfo, SocketStatus } from './socket.js'
export { createClient, RoostClient } from './client.js'
export type { RoostClientOptions, ClientConnectOptions } from './client.js'
export type {
  ObjectSchema,
  UntypedObject,
  BuiltinEvents,
  MethodsOf,
  EventsOf,
  MethodName,
  EventName,
  MethodResult,
  EventData,
  CallArgs,
  UntypedMethodName,
  UntypedEventName,
} from './schema.js'
export { createHttpClient } from './http.js'
export type { HttpClient, HttpClientOptions, HttpCallOptions, ObjectStub } from './http.js'
export { RoostError, errorFromResponse } from './errors.js'
export type { RoostErrorCode, ServerErrorCode, ClientErrorCode, ErrorDetail } from './errors.js'
export { encodeCall, encodeAuth, encodePing, decodeServerFrame } from './envelope.js'
export type { ServerFrame, Json } from './envelope.js'
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js'
export type { BackoffOptions } from './backoff.js'
export { AUTH_CLOSE_CODES, DEFAULT_HEARTBEAT, authFailureError, isAuthCloseCode } from './connection.js'
export type { AuthFailure, ConnectionOptions, ConnectionStatus } from './connection.js'
export { tokenExpiryMs } from './token.js'
export type { TokenSource } from './token.js'
export type { WebSocketConstructor, WebSocketLike } from './websocket.js'
export type { Unsubscribe } from './emitter.js'
export type { QueryParams } from './url.js'
