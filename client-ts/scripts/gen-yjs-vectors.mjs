// Regenerates protocol/vectors/yjs.json from yjs/y-protocols/lib0 (deterministic:
// fixed client ids). Run: node scripts/gen-yjs-vectors.mjs > ../protocol/vectors/yjs.json
// The committed file is the reference; this script only documents where its bytes came from.
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'

const hex = (u8) => Buffer.from(u8).toString('hex')

function frame(write) {
  const e = encoding.createEncoder()
  write(e)
  return encoding.toUint8Array(e)
}

const out = []
function push(v) {
  out.push(v)
}

// Sync step 1, empty document.
{
  const doc = new Y.Doc()
  doc.clientID = 1
  const sv = Y.encodeStateVector(doc)
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep1(e, doc)
  })
  push({ name: 'sync_step1_empty', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 0, payload_hex: hex(sv) })
}

// A document written by client 1: "hello" into text "t".
const base = new Y.Doc()
base.clientID = 1
const updates = []
base.on('update', (u) => updates.push(u))
base.getText('t').insert(0, 'hello')

{
  const sv = Y.encodeStateVector(base)
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep1(e, base)
  })
  push({ name: 'sync_step1_client1_clock5', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 0, payload_hex: hex(sv), state_vector: { 1: 5 } })
}
{
  const update = Y.encodeStateAsUpdate(base)
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep2(e, base, new Uint8Array([0]))
  })
  push({ name: 'sync_step2_hello', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 1, payload_hex: hex(update), text: { name: 't', after: 'hello' } })
}
{
  const empty = new Y.Doc()
  const update = Y.encodeStateAsUpdate(empty)
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep2(e, empty, new Uint8Array([0]))
  })
  push({ name: 'sync_step2_empty', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 1, payload_hex: hex(update), text: { name: 't', after: '' } })
}
{
  updates.length = 0
  base.getText('t').insert(5, ' world')
  const update = updates[0]
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeUpdate(e, update)
  })
  push({ name: 'sync_update_world', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 2, payload_hex: hex(update), text: { name: 't', base: 'sync_step2_hello', after: 'hello world' } })
}
{
  // An update longer than 127 bytes: its length prefix takes two varUint bytes.
  const doc = new Y.Doc()
  doc.clientID = 2
  let update
  doc.on('update', (u) => (update = u))
  doc.getText('t').insert(0, 'x'.repeat(150))
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 0)
    syncProtocol.writeUpdate(e, update)
  })
  push({ name: 'sync_update_long', direction: 'both', hex: hex(bytes), message_type: 0, sync_type: 2, payload_hex: hex(update), text: { name: 't', after: 'x'.repeat(150) } })
}
{
  const doc = new Y.Doc()
  doc.clientID = 1
  const aw = new awarenessProtocol.Awareness(doc)
  aw.setLocalState({ user: { name: 'alice', color: '#f80' } })
  const update = awarenessProtocol.encodeAwarenessUpdate(aw, [1])
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint8Array(e, update)
  })
  push({ name: 'awareness_alice', direction: 'both', hex: hex(bytes), message_type: 1, payload_hex: hex(update), awareness: [{ client_id: 1, clock: aw.meta.get(1).clock, state: aw.getLocalState() }] })
  aw.setLocalState(null)
  const removal = awarenessProtocol.encodeAwarenessUpdate(aw, [1])
  const bytes2 = frame((e) => {
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint8Array(e, removal)
  })
  push({ name: 'awareness_alice_left', direction: 'both', hex: hex(bytes2), message_type: 1, payload_hex: hex(removal), awareness: [{ client_id: 1, clock: aw.meta.get(1).clock, state: null }] })
  aw.destroy()
}
push({ name: 'query_awareness', direction: 'both', hex: '03', message_type: 3 })
for (const count of [0, 1, 127, 128, 300]) {
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 100)
    encoding.writeVarUint(e, count)
  })
  push({ name: `saved_${count}`, direction: 'server_to_client', hex: hex(bytes), message_type: 100, count })
}

{
  // In-band token refresh (client → server): a JWT-shaped sample token.
  const token = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJvYmoiOlsieWRvYy9ub3RlcyJdLCJwZXJtIjoid3JpdGUiLCJleHAiOjE3OTU3NTY0MzV9.c2lnbmF0dXJl'
  const bytes = frame((e) => {
    encoding.writeVarUint(e, 101)
    encoding.writeVarString(e, token)
  })
  push({ name: 'refresh_token', direction: 'client_to_server', hex: hex(bytes), message_type: 101, token })
}

// Heartbeat (Roost extension): the one byte 102 in both directions, a ping
// from the client and the server's answer.
push({ name: 'ping', direction: 'both', hex: '66', message_type: 102 })

const file = {
  description:
    'y-websocket frames (y-protocols) and the Roost extensions `saved` (type 100), `refresh` (type 101) and `ping` (type 102), byte-exact. ' +
    'Each frame is varUint(message_type) then: for type 0 varUint(sync_type) + varUint8Array(payload); ' +
    'for type 1 varUint8Array(payload); for type 3 nothing; for type 100 (Roost: saved) varUint(count); ' +
    'for type 101 (Roost: token refresh) varString(token); for type 102 (Roost: heartbeat ping, and the pong that answers it) nothing. ' +
    'Document vectors use fixed client ids (1, or 2 for sync_update_long); `text.after` is the content of ' +
    'Y.Text `text.name` after applying the payload to an empty document (after `text.base`, when given). ' +
    '`awareness` lists the entries of an awareness update: varUint(n) then n × (varUint(client_id), varUint(clock), varString(JSON state)). ' +
    'Generated by client-ts/scripts/gen-yjs-vectors.mjs; checked by protocol/tests/vectors.rs and client-ts/test/unit/vectors.test.ts.',
  messages: out,
}
process.stdout.write(JSON.stringify(file, null, 2) + '\n')
