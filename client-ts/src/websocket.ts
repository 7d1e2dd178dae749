/**
 * The minimal WebSocket surface the client needs, satisfied by the browser's
 * `WebSocket`, Node 22's global `WebSocket` and the `ws` package.
 * @module
 */

/** The subset of the standard `WebSocket` object the client uses. */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number
  /** Set to `'arraybuffer'` by the client so binary frames arrive as `ArrayBuffer`. */
  binaryType: string
  /** Sends a text or binary frame. */
  send(data: string | ArrayBufferLike | ArrayBufferView): void
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void
  /** Called once the socket is open. */
  onopen: ((event: any) => void) | null
  /** Called with `{ data }` for each frame. */
  onmessage: ((event: any) => void) | null
  /** Called with `{ code, reason }` when the socket closed. */
  onclose: ((event: any) => void) | null
  /** Called on transport errors (a close follows). */
  onerror: ((event: any) => void) | null
}

/**
 * A WebSocket constructor: `globalThis.WebSocket` in browsers and Node ≥ 22,
 * or `WebSocket` from the `ws` package on Node 20.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike

/** `WebSocket.OPEN`. */
export const OPEN = 1

/** The injected constructor, else the global one; throws a clear error when there is none. */
export function resolveWebSocket(ctor: WebSocketConstructor | undefined): WebSocketConstructor {
  if (ctor) return ctor
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  if (global) return global
  throw new TypeError(
    'no WebSocket implementation: pass the `WebSocket` option (e.g. `import WebSocket from "ws"` on Node 20)',
  )
}

/** The data of a message event as a string (text frame) or bytes (binary frame). */
export function messageData(data: unknown): string | Uint8Array | null {
  if (typeof data === 'string') return data
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (Array.isArray(data)) {
    // `ws` with binaryType 'fragments'; not used by us but harmless.
    const parts = data.filter((p): p is Uint8Array => ArrayBuffer.isView(p))
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
    let off = 0
    for (const p of parts) {
      out.set(p, off)
      off += p.byteLength
    }
    return out
  }
  return null
}
