import { describe, expect, it } from 'vitest'
import { httpUrl, wsUrl } from '../../src/url.js'

describe('URLs', () => {
  it('maps http(s) to ws(s) and back, keeping a path prefix', () => {
    expect(wsUrl('http://h:8787', 'v1/yjs/a')).toBe('ws://h:8787/v1/yjs/a')
    expect(wsUrl('https://h/roost/', 'v1/yjs/a')).toBe('wss://h/roost/v1/yjs/a')
    expect(wsUrl('wss://h/roost', 'v1/yjs/a', { saved: 1, token: undefined })).toBe('wss://h/roost/v1/yjs/a?saved=1')
    expect(httpUrl('ws://h:1', 'v1/objects/c/n/call/m')).toBe('http://h:1/v1/objects/c/n/call/m')
    expect(httpUrl('wss://h', 'x')).toBe('https://h/x')
  })

  it('drops the base URL query and hash, encodes params', () => {
    expect(wsUrl('http://h/?a=1#x', 'p', { token: 'a b&c' })).toBe('ws://h/p?token=a+b%26c')
  })
})
