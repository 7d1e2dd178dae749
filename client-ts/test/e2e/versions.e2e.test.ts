// Named versions (createVersionsClient) against the real roost binary: a
// provider edits, a version is saved, read back, restored (the provider
// converges to it) and deleted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'
import type { WebSocketConstructor } from '../../src/index.js'
import { RoostError } from '../../src/index.js'
import { createVersionsClient, RoostProvider } from '../../src/yjs/index.js'
import { RoostServer } from './roost.js'
import { until } from '../helpers/until.js'

const WS = WebSocket as unknown as WebSocketConstructor
let server: RoostServer
let provider: RoostProvider | undefined

beforeAll(async () => {
  server = await RoostServer.start()
})

afterAll(async () => {
  provider?.destroy()
  await server?.dispose()
})

describe('createVersionsClient against roost', () => {
  it('saves, lists, reads, restores and deletes a version', async () => {
    const name = `versions-${Date.now().toString(36)}`
    const doc = new Y.Doc()
    provider = new RoostProvider(name, doc, { url: server.url, WebSocket: WS })
    await provider.whenSynced(10_000)
    const text = doc.getText('t')
    text.insert(0, 'The draft we sent.')
    await until(() => provider!.saved, 'the edit saved')

    const versions = createVersionsClient({ url: server.url })
    const info = await versions.create(name, 'sent')
    expect(info.name).toBe('sent')
    expect(info.bytes).toBeGreaterThan(0)
    await expect(versions.create(name, 'sent')).rejects.toMatchObject({ status: 409 })

    text.insert(0, 'Edited: ')
    await until(() => provider!.saved, 'the second edit saved')
    expect((await versions.list(name)).map((v) => v.name)).toEqual(['sent'])

    const copy = new Y.Doc()
    Y.applyUpdate(copy, await versions.read(name, 'sent'))
    expect(copy.getText('t').toString()).toBe('The draft we sent.')

    await versions.restore(name, 'sent')
    await until(() => text.toString() === 'The draft we sent.', 'the provider to converge to the version')

    await versions.remove(name, 'sent')
    expect(await versions.list(name)).toEqual([])
    const missing = await versions.remove(name, 'sent').catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(RoostError)
    expect((missing as RoostError).code).toBe('not_found')
  })
})
