// The Yjs writer of `roost-load crash`: the official y-websocket provider
// editing documents on a Roost that is killed with SIGKILL and restarted
// underneath it. It runs until its stdin closes.
//
//   node crash-client.js --url ws://127.0.0.1:PORT/v1/yjs --docs a,b [--clients 2] [--seed 1]
//
// Each client (a Y.Doc with its own WebsocketProvider, `?saved=1`) inserts
// unique markers `[d.c.k]` into the text `t`, between existing markers,
// plus filler `~~~~` that it later deletes again, with pauses per document
// so the server sees quiet periods (compaction) and idle ones (eviction).
//
// A marker is acknowledged when Roost's `saved` message (type 100,
// `varUint(n)`: the first n sync step-2/update messages this client sent on
// this connection are durable) covers a message that carried it:
// - the update message sent for the edit itself, on the connection open at
//   the time, or
// - the sync step 2 this client sends on a later connection in answer to the
//   server's step 1: it holds everything the server lacks, and what the
//   server has already is in its state vector, which it sends only once
//   durable.
// The WebSocket class handed to the provider counts the messages it sends,
// so the mapping follows what was really written to each socket. For every
// acknowledged marker one line `ack <doc> <marker>` goes to stdout; the
// driver checks each against the stored document after every restart.
// `connected <doc>` is printed on each (re)connection.
//
// stdin takes two commands from the driver: `pause` disconnects every
// provider (answered `paused` once done; every ack line comes before it) and
// `resume` connects them again. The driver pauses the clients right after
// each kill and resumes them after its check, so what it reads from the
// restarted server is what the server kept, not what a client re-sent;
// edits made meanwhile stay local and go out in the next sync step 2.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const MESSAGE_SAVED = 100

function parseArgs (argv) {
  const out = { clients: 2, seed: Date.now() % 2147483647 }
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '')
    out[key] = argv[i + 1]
  }
  if (!out.url || !out.docs) {
    process.stderr.write('usage: crash-client.js --url ws://host:port/v1/yjs --docs a,b [--clients N] [--seed S]\n')
    process.exit(2)
  }
  out.clients = Number(out.clients)
  out.seed = Number(out.seed)
  return out
}

// mulberry32: a small seeded generator, so a run's edit pattern is repeatable.
function generator (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// Reads a lib0 varUint from a lib0 decoder ({arr, pos}).
function readVarUint (decoder) {
  let num = 0
  let mult = 1
  for (;;) {
    const r = decoder.arr[decoder.pos++]
    num += (r & 127) * mult
    mult *= 128
    if (r < 128) return num
    if (decoder.pos >= decoder.arr.length) throw new Error('truncated varUint')
  }
}

const args = parseArgs(process.argv.slice(2))
const random = generator(args.seed)
const out = (line) => process.stdout.write(line + '\n')

// Text positions outside every marker (markers never nest or split).
function boundaries (s) {
  const at = []
  let inside = false
  for (let i = 0; i <= s.length; i++) {
    if (!inside) at.push(i)
    if (i < s.length) {
      if (s[i] === '[') inside = true
      else if (s[i] === ']') inside = false
    }
  }
  return at
}

function makeClient (docName, docIndex, clientIndex, pace) {
  const doc = new Y.Doc()
  const text = doc.getText('t')
  const c = {
    // Edits not yet acknowledged: id -> { marker, ws, n }, where `ws` is the
    // socket whose message number `n` carried the edit (null: none yet).
    pending: new Map(),
    // The edit being made right now (its update message is sent synchronously).
    current: null,
    edits: 0
  }
  class CountingWebSocket extends WebSocket {
    constructor (...a) {
      super(...a)
      this.counted = 0
    }

    send (data, ...rest) {
      const b = data instanceof Uint8Array ? data : new Uint8Array(data)
      // [0 = sync, 1 = step 2 | 2 = update, ...]: the messages `saved` counts.
      if (b.length >= 2 && b[0] === 0 && (b[1] === 1 || b[1] === 2)) {
        this.counted += 1
        const n = this.counted
        if (b[1] === 2) {
          if (c.current !== null) {
            c.current.ws = this
            c.current.n = n
          }
        } else {
          for (const e of c.pending.values()) {
            if (e.ws !== this) {
              e.ws = this
              e.n = n
            }
          }
        }
      }
      return super.send(data, ...rest)
    }
  }
  const provider = new WebsocketProvider(args.url, docName, doc, {
    WebSocketPolyfill: CountingWebSocket,
    params: { saved: '1' },
    disableBc: true,
    maxBackoffTime: 400
  })
  provider.messageHandlers[MESSAGE_SAVED] = (_encoder, decoder, p) => {
    const n = readVarUint(decoder)
    const ws = p.ws
    for (const [id, e] of c.pending) {
      if (e.ws === ws && e.n <= n) {
        out(`ack ${docName} ${e.marker}`)
        c.pending.delete(id)
      }
    }
  }
  provider.on('status', ({ status }) => {
    if (status === 'connected') out(`connected ${docName}`)
  })
  providers.push(provider)

  function edit () {
    const s = text.toString()
    const r = random()
    if (r < 0.1) {
      // Delete a run of filler: tombstones for the snapshots to carry.
      const i = s.indexOf('~', Math.floor(random() * s.length))
      if (i >= 0) {
        let j = i
        while (j < s.length && s[j] === '~') j++
        text.delete(i, j - i)
        return
      }
    }
    const spots = boundaries(s)
    const at = spots[Math.floor(random() * spots.length)]
    if (r < 0.25) {
      text.insert(at, '~~~~')
      return
    }
    const marker = `${docIndex}.${clientIndex}.${(c.edits++).toString(36)}`
    const e = { marker, ws: null, n: 0 }
    c.pending.set(marker, e)
    c.current = e
    try {
      text.insert(at, `[${marker}]`)
    } finally {
      c.current = null
    }
  }

  function next () {
    const now = Date.now()
    if (now < pace.quietUntil) {
      setTimeout(next, pace.quietUntil - now + random() * 50)
      return
    }
    edit()
    // Now and then the whole document goes quiet: long enough to compact
    // (--ydoc-compact-after), sometimes to be evicted (--idle-timeout).
    if (random() < 0.04) pace.quietUntil = now + 400 + random() * 2000
    setTimeout(next, 40 + random() * 400)
  }
  setTimeout(next, random() * 200)
}

const providers = []
const docs = args.docs.split(',').filter((d) => d.length > 0)
docs.forEach((name, d) => {
  const pace = { quietUntil: 0 }
  for (let i = 0; i < args.clients; i++) makeClient(name, d, i, pace)
})

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  input += chunk
  let nl
  while ((nl = input.indexOf('\n')) >= 0) {
    const command = input.slice(0, nl).trim()
    input = input.slice(nl + 1)
    if (command === 'pause') {
      for (const p of providers) p.disconnect()
      out('paused')
    } else if (command === 'resume') {
      for (const p of providers) p.connect()
    }
  }
})
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
