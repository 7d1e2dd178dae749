/**
 * The y-websocket message framing (`varUint(type)` + payload), plus Roost's
 * extensions `saved` (type 100), `refresh` (type 101) and `ping` (type 102), as in `protocol/PROTOCOL.md`. Encoders use
 * lib0 so the bytes are exactly what y-protocols produces; the decoder is
 * strict (truncated input is `malformed`, never an exception). The vectors in
 * `protocol/vectors/yjs.json` pin the bytes.
 * @module
 */

import * as encoding from 'lib0/encoding'

/** Top-level message types. */
export const MessageType = {
  Sync: 0,
  Awareness: 1,
  Auth: 2,
  QueryAwareness: 3,
  /** Roost extension, server → client only, when the socket was opened with `saved=1`. */
  Saved: 100,
  /** Roost extension, client → server: `varString(token)`, an in-band token refresh. */
  Refresh: 101,
  /**
   * Roost extension, both directions, no payload: a heartbeat ping from the
   * client, and the server's immediate answer (the pong) in the same bytes.
   */
  Ping: 102,
} as const

/** Sub-types of a `Sync` message. */
export const SyncMessageType = { Step1: 0, Step2: 1, Update: 2 } as const

/** A decoded y-websocket / Roost message. */
export type YMessage =
  | { type: 'sync-step1'; stateVector: Uint8Array }
  | { type: 'sync-step2'; update: Uint8Array }
  | { type: 'sync-update'; update: Uint8Array }
  | { type: 'awareness'; update: Uint8Array }
  | { type: 'query-awareness' }
  /** y-websocket's auth message: `varUint(0)` + reason = permission denied. */
  | { type: 'auth'; denied: boolean; reason: string }
  /** `count`: how many of the step-2/update messages this client sent on this connection are durable. */
  | { type: 'saved'; count: number }
  /** An in-band token refresh (client → server). */
  | { type: 'refresh'; token: string }
  /** A heartbeat ping (client → server) or its pong (server → client). */
  | { type: 'ping' }
  | { type: 'unknown'; messageType: number }
  | { type: 'malformed'; reason: string }

function frame(write: (e: encoding.Encoder) => void): Uint8Array {
  const e = encoding.createEncoder()
  write(e)
  return encoding.toUint8Array(e)
}

/** `[0, 0, varUint8Array(stateVector)]` */
export function encodeSyncStep1(stateVector: Uint8Array): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Sync)
    encoding.writeVarUint(e, SyncMessageType.Step1)
    encoding.writeVarUint8Array(e, stateVector)
  })
}

/** `[0, 1, varUint8Array(update)]` */
export function encodeSyncStep2(update: Uint8Array): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Sync)
    encoding.writeVarUint(e, SyncMessageType.Step2)
    encoding.writeVarUint8Array(e, update)
  })
}

/** `[0, 2, varUint8Array(update)]` */
export function encodeSyncUpdate(update: Uint8Array): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Sync)
    encoding.writeVarUint(e, SyncMessageType.Update)
    encoding.writeVarUint8Array(e, update)
  })
}

/** `[1, varUint8Array(awarenessUpdate)]` */
export function encodeAwareness(awarenessUpdate: Uint8Array): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Awareness)
    encoding.writeVarUint8Array(e, awarenessUpdate)
  })
}

/** `[3]` */
export function encodeQueryAwareness(): Uint8Array {
  return frame((e) => encoding.writeVarUint(e, MessageType.QueryAwareness))
}

/** `[100, varUint(count)]` (server → client; exported for tests and servers written in JS). */
export function encodeSaved(count: number): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Saved)
    encoding.writeVarUint(e, count)
  })
}

/** `[101, varString(token)]`: replaces the socket's access token (Roost extension). */
export function encodeRefresh(token: string): Uint8Array {
  return frame((e) => {
    encoding.writeVarUint(e, MessageType.Refresh)
    encoding.writeVarString(e, token)
  })
}

/** `[102]`: a heartbeat ping, answered by the server with the same byte (Roost extension). */
export function encodePing(): Uint8Array {
  return Uint8Array.of(MessageType.Ping)
}

class Reader {
  pos = 0
  constructor(readonly bytes: Uint8Array) {}

  varUint(): number {
    let result = 0
    let mult = 1
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.bytes.length) throw new RangeError('truncated varUint')
      const b = this.bytes[this.pos++] as number
      result += (b & 0x7f) * mult
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) throw new RangeError('varUint out of range')
        return result
      }
      mult *= 128
    }
    throw new RangeError('varUint longer than 8 bytes')
  }

  varUint8Array(): Uint8Array {
    const len = this.varUint()
    if (len > this.bytes.length - this.pos) throw new RangeError('truncated varUint8Array')
    const out = this.bytes.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }

  varString(): string {
    return new TextDecoder().decode(this.varUint8Array())
  }
}

/** Decodes one binary frame. Never throws: bad input gives `{ type: 'malformed' }`. */
export function decodeMessage(bytes: Uint8Array): YMessage {
  const r = new Reader(bytes)
  try {
    const messageType = r.varUint()
    switch (messageType) {
      case MessageType.Sync: {
        const sub = r.varUint()
        if (sub === SyncMessageType.Step1) return { type: 'sync-step1', stateVector: r.varUint8Array() }
        if (sub === SyncMessageType.Step2) return { type: 'sync-step2', update: r.varUint8Array() }
        if (sub === SyncMessageType.Update) return { type: 'sync-update', update: r.varUint8Array() }
        return { type: 'malformed', reason: `unknown sync message type ${sub}` }
      }
      case MessageType.Awareness:
        return { type: 'awareness', update: r.varUint8Array() }
      case MessageType.QueryAwareness:
        return { type: 'query-awareness' }
      case MessageType.Auth: {
        const denied = r.varUint() === 0
        return { type: 'auth', denied, reason: denied ? r.varString() : '' }
      }
      case MessageType.Saved:
        return { type: 'saved', count: r.varUint() }
      case MessageType.Refresh:
        return { type: 'refresh', token: r.varString() }
      case MessageType.Ping:
        return { type: 'ping' }
      default:
        return { type: 'unknown', messageType }
    }
  } catch (e) {
    return { type: 'malformed', reason: e instanceof Error ? e.message : String(e) }
  }
}
