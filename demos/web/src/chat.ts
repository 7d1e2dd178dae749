// The chat page, on the built-in `room` class (server/src/classes/room.rs):
// history on join, presence (join/leave events + `who`), and the follow-up
// message the room posts through its alarm.
import { connect, RoostError } from '@roost/client'
import { $, demoToken, displayName, escapeText, param, rememberName, serverUrl, showStatus, tokenPrompt } from './common'

interface Message {
  id: number
  ts: number
  name: string
  text: string
}

const roomName = param('room', 'general')
$('room-name').textContent = roomName
;($('room') as HTMLInputElement).value = roomName
document.title = `Roost · chat ${roomName}`
let myName = displayName()
;($('name') as HTMLInputElement).value = myName

const socket = connect({ url: serverUrl, class: 'room', name: roomName, params: { name: myName }, token: demoToken })
// With --auth-secret: say why the socket cannot open, and take a token.
const auth = tokenPrompt(() => `room/${roomName}`, () => socket.reconnect())
socket.onError(() => auth.check())
// The server refused the token (close code 4401/4403): say why.
socket.onAuthFailed(() => auth.check())
socket.onStatus((s) => {
  showStatus($('status'), s)
  if (s === 'open') {
    auth.hide()
    void refreshWho()
  }
})

const box = $('messages')
const seen = new Set<number>()

function append(m: Message): void {
  if (seen.has(m.id)) return
  seen.add(m.id)
  const div = document.createElement('div')
  div.className = m.name === 'roost' ? 'msg system' : 'msg'
  div.dataset.id = String(m.id)
  const time = new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  div.innerHTML = `<time>${time}</time><span class="who">${escapeText(m.name)}</span><span class="text">${escapeText(m.text)}</span>`
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 30
  box.appendChild(div)
  if (atBottom) box.scrollTop = box.scrollHeight
}

// On every (re)connect the room sends its recent history first.
socket.on<{ messages: Message[] }>('history', ({ messages }) => {
  box.innerHTML = ''
  seen.clear()
  messages.forEach(append)
  box.scrollTop = box.scrollHeight
})
socket.on<Message>('message', append)
socket.on('join', () => void refreshWho())
socket.on('leave', () => void refreshWho())

async function refreshWho(): Promise<void> {
  try {
    const names = await socket.call<string[]>('who', {}, { timeout: 10_000 })
    const counts = new Map<string, number>()
    for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1)
    $('who').innerHTML = [...counts]
      .map(([n, c]) => `<li>${escapeText(n)}${c > 1 ? ` ×${c}` : ''}${n === myName ? ' <span class="muted">(you)</span>' : ''}</li>`)
      .join('')
  } catch {
    // Disconnected: the next 'open' refreshes.
  }
}

async function act<T>(method: string, args: Record<string, unknown>): Promise<T | undefined> {
  $('error').textContent = ''
  try {
    return await socket.call<T>(method, args, { timeout: 10_000 })
  } catch (e) {
    $('error').textContent = e instanceof RoostError ? e.message : String(e)
    return undefined
  }
}

$('send-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const input = $('text') as HTMLInputElement
  const text = input.value
  if (!text.trim()) return
  input.value = ''
  void act('send', { text })
})

$('name-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const n = ($('name') as HTMLInputElement).value.trim()
  if (!n) return
  myName = n
  rememberName(n)
  void act('join', { name: n }).then(() => refreshWho())
})

$('followup-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const secs = Number(($('followup-secs') as HTMLInputElement).value)
  const text = ($('followup-text') as HTMLInputElement).value
  void act('followup', { after_ms: Math.round(secs * 1000), text }).then((r) => {
    if (r) $('followup-state').textContent = `On: ${secs} s after the last message.`
  })
})
$('followup-off').addEventListener('click', () => {
  void act('followup', { after_ms: null }).then((r) => {
    if (r) $('followup-state').textContent = 'Off.'
  })
})
$('room-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const name = ($('room') as HTMLInputElement).value.trim()
  if (name && name !== roomName) {
    const u = new URL(location.href)
    u.searchParams.set('room', name)
    location.href = u.toString()
  }
})
;(window as unknown as { roostChat: unknown }).roostChat = { socket }
