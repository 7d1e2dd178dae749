// A `ws` WebSocket that records the y-websocket frames it sends and receives,
// so tests can check *when* the provider's signals change relative to frames.
import WebSocket from 'ws'

export interface FrameLog {
  /** Counted (sync step-2 / update) messages sent, per socket. */
  counted: number
  /** Update messages (type 0/2) sent. */
  updates: number
  /** Highest `saved` count received. */
  maxSaved: number
  /** Number of `saved` frames received. */
  savedFrames: number
}

export function recordingWebSocket(): { WebSocket: typeof WebSocket; logs: FrameLog[] } {
  const logs: FrameLog[] = []
  class RecordingWebSocket extends WebSocket {
    readonly log: FrameLog = { counted: 0, updates: 0, maxSaved: 0, savedFrames: 0 }
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols)
      logs.push(this.log)
      // Registered before the client's own onmessage, so it sees each frame first.
      this.on('message', (raw: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
        if (!isBinary) return
        // The message event's data follows binaryType (set to 'arraybuffer' by the client).
        const data = raw instanceof ArrayBuffer ? new Uint8Array(raw) : Array.isArray(raw) ? Buffer.concat(raw) : raw
        if (data[0] === 100) {
          let n = 0
          let mult = 1
          for (let i = 1; i < data.length; i++) {
            const b = data[i]!
            n += (b & 0x7f) * mult
            if (b < 0x80) break
            mult *= 128
          }
          this.log.savedFrames++
          this.log.maxSaved = Math.max(this.log.maxSaved, n)
        }
      })
    }
    override send(data: any, ...rest: any[]): void {
      if (data instanceof Uint8Array && data[0] === 0 && (data[1] === 1 || data[1] === 2)) {
        this.log.counted++
        if (data[1] === 2) this.log.updates++
      }
      ;(super.send as (...a: any[]) => void)(data, ...rest)
    }
  }
  return { WebSocket: RecordingWebSocket as unknown as typeof WebSocket, logs }
}
