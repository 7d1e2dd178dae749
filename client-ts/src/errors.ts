/**
 * Typed errors: the server's JSON error body and the client's own failures.
 * @module
 */

/** Error codes the server sends in `{"error":{"code","message"}}` (see `protocol/PROTOCOL.md`). */
export type ServerErrorCode =
  | 'bad_request'
  | 'bad_name'
  | 'unknown_class'
  | 'unknown_method'
  | 'too_large'
  | 'overloaded'
  | 'object_broken'
  | 'application'
  | 'storage'
  | 'shutting_down'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'rate_limited'
  | 'timed_out'
  | 'insufficient_storage'
  | 'object_moved'
  | 'method_not_allowed'
  | 'cursor_expired'
  | 'internal'

/**
 * Error codes raised by the client itself, never sent by the server.
 *
 * - `timeout`: the call's timeout elapsed before its result arrived.
 * - `disconnected`: the connection dropped after the call was sent and before
 *   its result arrived; the call may or may not have run (it is never re-sent).
 * - `closed`: the socket was closed (by `close()` or after the last retry).
 * - `queue_full`: the call was made while disconnected and the queue was full.
 * - `not_open`: a raw `send` was attempted while the socket was not open.
 * - `aborted`: the call's `AbortSignal` fired.
 * - `network`: an HTTP request failed before a response arrived.
 * - `bad_response`: the server answered with something that is not the documented format.
 */
export type ClientErrorCode =
  | 'timeout'
  | 'disconnected'
  | 'closed'
  | 'queue_full'
  | 'not_open'
  | 'aborted'
  | 'network'
  | 'bad_response'

/** Any error code a {@link RoostError} can carry. Unknown server codes pass through as strings. */
export type RoostErrorCode = ServerErrorCode | ClientErrorCode | (string & {})

/** The error detail as it appears on the wire: `{"code": ..., "message": ...}`. */
export interface ErrorDetail {
  code: string
  message: string
}

/**
 * The error every `@roost/client` API rejects with.
 *
 * ```ts
 * try { await socket.call('increment', { by: 1 }) }
 * catch (e) { if (e instanceof RoostError && e.code === 'overloaded') retryLater() }
 * ```
 */
export class RoostError extends Error {
  /** Machine-readable code: a {@link ServerErrorCode} or a {@link ClientErrorCode}. */
  readonly code: RoostErrorCode
  /** The HTTP status, when the error came from an HTTP response. */
  readonly status: number | undefined

  constructor(code: RoostErrorCode, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RoostError'
    this.code = code
    this.status = options.status
  }

  /** True when the error came from the server (not from the client's own bookkeeping). */
  get fromServer(): boolean {
    return !CLIENT_CODES.has(this.code)
  }
}

const CLIENT_CODES: ReadonlySet<string> = new Set<ClientErrorCode>([
  'timeout',
  'disconnected',
  'closed',
  'queue_full',
  'not_open',
  'aborted',
  'network',
  'bad_response',
])

/** Reads `{"code","message"}`; returns null when `value` does not have that shape. */
export function parseErrorDetail(value: unknown): ErrorDetail | null {
  if (typeof value !== 'object' || value === null) return null
  const { code, message } = value as Record<string, unknown>
  if (typeof code !== 'string') return null
  return { code, message: typeof message === 'string' ? message : '' }
}

const STATUS_CODES: Record<number, ServerErrorCode> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'too_large',
  429: 'rate_limited',
  503: 'overloaded',
}

/**
 * Builds a {@link RoostError} from an HTTP error response's status and body text.
 * A body of the documented form `{"error":{"code","message"}}` gives its code and
 * message; anything else falls back to a code derived from the status.
 */
export function errorFromResponse(status: number, bodyText: string): RoostError {
  let parsed: unknown
  try {
    parsed = JSON.parse(bodyText)
  } catch {
    parsed = undefined
  }
  const detail =
    typeof parsed === 'object' && parsed !== null ? parseErrorDetail((parsed as { error?: unknown }).error) : null
  if (detail) return new RoostError(detail.code, detail.message, { status })
  const code = STATUS_CODES[status] ?? (status >= 500 ? 'internal' : 'bad_response')
  const text = bodyText.length > 200 ? `${bodyText.slice(0, 200)}…` : bodyText
  return new RoostError(code, `HTTP ${status}${text ? `: ${text}` : ''}`, { status })
}
