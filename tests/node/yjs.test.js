// Roost as a drop-in server for the official y-websocket client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { startServer, tempDir, removeDir, until } from './harness.js'

function provider (server, name, doc, params = {}) {
  return new WebsocketProvider(`${server.ws}/v1/yjs`, name, doc, {
    WebSocketPolyfill: WebSocket,
    params,
    disableBc: true
  })
}

async function synced (p) {
  await until(() => p.synced, 10000, 'provider sync')
}

test('two providers converge on text, map and array edits', async () => {
  const dir = tempDir()
  const server = await startServer(dir)
  try {
    const a = new Y.Doc()
    const b = new Y.Doc()
    const pa = provider(server, 'converge', a)
    const pb = provider(server, 'converge', b)
    await synced(pa)
    await synced(pb)
    a.getText('t').insert(0, 'hello')
    b.getMap('m').set('k', 42)
    b.getArray('arr').push([1, 2, 3])
    a.getText('t').insert(5, ' world')
    await until(() => b.getText('t').toString() === 'hello world' && a.getMap('m').get('k') === 42 && a.getArray('arr').length === 3, 10000, 'convergence')
    assert.deepEqual(a.getArray('arr').toArray(), [1, 2, 3])
    assert.equal(Buffer.compare(Buffer.from(Y.encodeStateVector(a)), Buffer.from(Y.encodeStateVector(b))), 0)
    pa.destroy(); pb.destroy()
  } finally {
    await server.stop()
    removeDir(dir)
  }
})

test('awareness reaches the other client and leaves with it', async () => {
  const dir = tempDir()
  const server = await startServer(dir)
  try {
    const a = new Y.Doc()
    const b = new Y.Doc()
    const pa = provider(server, 'aware', a)
    const pb = provider(server, 'aware', b)
    await synced(pa); await synced(pb)
    pa.awareness.setLocalStateField('user', { name: 'ann', color: '#f00' })
    await until(() => [...pb.awareness.getStates().values()].some((s) => s.user?.name === 'ann'), 10000, 'awareness')
    // A late joiner learns the state from the server.
    const c = new Y.Doc()
    const pc = provider(server, 'aware', c)
    await until(() => [...pc.awareness.getStates().values()].some((s) => s.user?.name === 'ann'), 10000, 'awareness for a late joiner')
    pa.destroy()
    await until(() => ![...pb.awareness.getStates().values()].some((s) => s.user?.name === 'ann'), 10000, 'awareness removal')
    pb.destroy(); pc.destroy()
  } finally {
    await server.stop()
    removeDir(dir)
  }
})

for (const how of ['restart', 'kill -9']) {
  test(`a fresh provider receives everything after a ${how}`, async () => {
    const dir = tempDir()
    let server = await startServer(dir)
    try {
      const a = new Y.Doc()
      const b = new Y.Doc()
      const pa = provider(server, 'persist', a)
      const pb = provider(server, 'persist', b)
      await synced(pa); await synced(pb)
      for (let i = 0; i < 50; i++) a.getText('t').insert(a.getText('t').length, `${i % 10}`)
      a.getMap('m').set('done', true)
      // Once b has everything, the server has stored it (it broadcasts only after commit).
      await until(() => b.getMap('m').get('done') === true && b.getText('t').length === 50, 10000, 'b to receive')
      pa.destroy(); pb.destroy()
      if (how === 'restart') await server.stop(); else await server.kill9()
      server = await startServer(dir)
      const c = new Y.Doc()
      const pc = provider(server, 'persist', c)
      await synced(pc)
      await until(() => c.getText('t').length === 50, 10000, 'c to receive')
      assert.equal(c.getText('t').toString(), a.getText('t').toString())
      assert.equal(c.getMap('m').get('done'), true)
      pc.destroy()
    } finally {
      await server.stop()
      removeDir(dir)
    }
  })
}

// The stock client sends a keystroke typed as its socket opens before its
// sync step 2 with the offline edits: the server holds the keystroke until
// they arrive instead of closing the socket (1008) and forcing a reconnect.
test('typing the moment a provider reconnects after offline edits keeps the socket', async () => {
  const dir = tempDir()
  const server = await startServer(dir)
  try {
    const a = new Y.Doc()
    const b = new Y.Doc()
    const pa = provider(server, 'offline', a)
    const pb = provider(server, 'offline', b)
    await synced(pa); await synced(pb)
    const ta = a.getText('t')
    ta.insert(0, 'online ')
    await until(() => b.getText('t').toString() === 'online ', 10000, 'b to receive the online edit')
    const closes = []
    pa.on('connection-close', (event) => closes.push(event?.code ?? 'local'))
    pa.disconnect()
    ta.insert(ta.length, 'offline ')
    let typed = false
    pa.on('status', ({ status }) => {
      if (status === 'connected' && !typed) {
        typed = true
        ta.insert(ta.length, 'typed')
      }
    })
    pa.connect()
    await until(() => b.getText('t').toString() === 'online offline typed', 10000, 'b to receive the offline edits and the keystroke')
    assert.equal(typed, true)
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.deepEqual(closes, ['local'], 'only the deliberate disconnect closed the socket')
    pa.destroy(); pb.destroy()
  } finally {
    await server.stop()
    removeDir(dir)
  }
})

test('HTTP state and update side channel', async () => {
  const dir = tempDir()
  const server = await startServer(dir)
  try {
    const a = new Y.Doc()
    const pa = provider(server, 'http', a)
    await synced(pa)
    a.getText('t').insert(0, 'over the socket')
    await new Promise((r) => setTimeout(r, 200))
    const before = new Date().toISOString()
    await new Promise((r) => setTimeout(r, 20))
    // POST an update made elsewhere: the connected provider receives it.
    const other = new Y.Doc()
    const res0 = await fetch(`${server.base}/v1/yjs/http/state`)
    Y.applyUpdate(other, new Uint8Array(await res0.arrayBuffer()))
    other.getText('t').insert(0, '>> ')
    const update = Y.encodeStateAsUpdate(other, Y.encodeStateVector(a))
    const post = await fetch(`${server.base}/v1/yjs/http/update`, { method: 'POST', body: update })
    assert.equal(post.status, 200)
    await until(() => a.getText('t').toString() === '>> over the socket', 10000, 'posted update to arrive')
    const res = await fetch(`${server.base}/v1/yjs/http/state`)
    assert.equal(res.status, 200)
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, new Uint8Array(await res.arrayBuffer()))
    assert.equal(fresh.getText('t').toString(), '>> over the socket')
    // History: as of `before`, the posted edit did not exist yet.
    const old = await fetch(`${server.base}/v1/yjs/http/state?at=${encodeURIComponent(before)}`)
    assert.equal(old.status, 200)
    const past = new Y.Doc()
    Y.applyUpdate(past, new Uint8Array(await old.arrayBuffer()))
    assert.equal(past.getText('t').toString(), 'over the socket')
    // Garbage is refused and changes nothing.
    const bad = await fetch(`${server.base}/v1/yjs/http/update`, { method: 'POST', body: new Uint8Array([1, 2, 3, 250, 255]) })
    assert.equal(bad.status, 400)
    const badAt = await fetch(`${server.base}/v1/yjs/http/state?at=yesterday`)
    assert.equal(badAt.status, 400)
    pa.destroy()
  } finally {
    await server.stop()
    removeDir(dir)
  }
})
