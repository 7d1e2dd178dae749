/**
 * The JSON envelope of object sockets (`/v1/objects/{class}/{name}/ws`), as in
 * `protocol/PROTOCOL.md`. Pure functions, no I/O; the vectors in
 * `protocol/vectors/envelope.json` pin the exact text.
 * @module
 */

import { type ErrorDetail, parseErrorDetail } from './errors.js'

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** A decoded server → client frame. */
export type ServerFrame =
  /** `{"type":"result","id":N,"ok":V}` */
  | { type: 'result'; id: number; ok: unknown }
  /** `{"type":"result","id":N,"error":{"code","message"}}` */
  | { type: 'result'; id: number; error: ErrorDetail }
  /** `{"type":"event","event":E,"data":D}` */
  | { type: 'event'; event: string; data: unknown }
  /** `{"type":"pong"}`: the server's answer to {@link encodePing}. */
  | { type: 'pong' }

/**
 * Encodes a call envelope: `{"type":"call","id":N,"method":M,"args":A}`.
 * `undefined` args are sent as `null` (what the server also assumes when
 * `args` is missing).
 */
export function encodeCall(id: number, method: string, args?: unknown): string {
  return JSON.stringify({ type: 'call', id, method, args: args === undefined ? null : args })
}

/**
 * Encodes an in-band token refresh: `{"type":"auth","token":T}`. The server
 * answers with an `auth` event `{"exp": ms}` or an `error` event (keeping the
 * old token's expiry).
 */
export function encodeAuth(token: string): string {
  return JSON.stringify({ type: 'auth', token })
}

/**
 * The heartbeat ping, `{"type":"ping"}`. The server's socket layer answers it
 * with `{"type":"pong"}` at once, without waking the object.
 */
export function encodePing(): string {
  return '{"type":"ping"}'
}

/**
 * Decodes a text frame from the server. Returns null for text that is not a
 * well-formed `result`, `event` or `pong` envelope (objects may send any text of their
 * own; that is delivered as a raw message). Never throws.
 */
export function decodeServerFrame(text: string): ServerFrame | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null
  const v = value as Record<string, unknown>
  if (v.type === 'result') {
    if (typeof v.id !== 'number' || !Number.isSafeInteger(v.id) || v.id < 0) return null
    if ('error' in v && v.error !== undefined && v.error !== null) {
      const error = parseErrorDetail(v.error)
      return error ? { type: 'result', id: v.id, error } : null
    }
    return { type: 'result', id: v.id, ok: 'ok' in v ? v.ok : null }
  }
  if (v.type === 'event') {
    if (typeof v.event !== 'string') return null
    return { type: 'event', event: v.event, data: 'data' in v ? v.data : null }
  }
  if (v.type === 'pong') return { type: 'pong' }
  return null
}
