// An in-memory WebSocket for unit tests: each `new FakeWebSocket(url)` is
// recorded in `FakeWebSocket.instances`; the test plays the server by calling
// `open()`, `serverSend()`, `serverClose()` and reading `sent`.
import type { WebSocketLike } from '../../src/websocket.js'

export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = []
  static reset(): void {
    FakeWebSocket.instances = []
  }
  static last(): FakeWebSocket {
    const ws = FakeWebSocket.instances.at(-1)
    if (!ws) throw new Error('no socket was created')
    return ws
  }

  readyState = 0
  binaryType = 'blob'
  readonly sent: Array<string | Uint8Array> = []
  closedWith: { code?: number; reason?: string } | null = null
  onopen: ((event: any) => void) | null = null
  onmessage: ((event: any) => void) | null = null
  onclose: ((event: any) => void) | null = null
  onerror: ((event: any) => void) | null = null

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this)
  }

  get query(): URLSearchParams {
    return new URL(this.url).searchParams
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.readyState !== 1) throw new Error('not open')
    if (typeof data === 'string') this.sent.push(data)
    else if (ArrayBuffer.isView(data)) this.sent.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice())
    else this.sent.push(new Uint8Array(data as ArrayBuffer).slice())
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return
    this.closedWith = { code, reason }
    this.readyState = 3
    const ev = { code: code ?? 1005, reason: reason ?? '' }
    queueMicrotask(() => this.onclose?.(ev))
  }

  // --- the server's side ---
  open(): void {
    this.readyState = 1
    this.onopen?.({})
  }

  serverSend(data: string | Uint8Array): void {
    const payload = typeof data === 'string' ? data : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
    this.onmessage?.({ data: payload })
  }

  serverClose(code = 1006, reason = ''): void {
    if (this.readyState >= 2) return
    this.readyState = 3
    this.onclose?.({ code, reason })
  }

  /** Text frames sent by the client, parsed as JSON. */
  sentJson(): any[] {
    return this.sent.filter((d): d is string => typeof d === 'string').map((d) => JSON.parse(d))
  }
}

/** Waits until `cond()` is true, polling every few ms (bounded). */
export async function until(cond: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 2))
  }
}
