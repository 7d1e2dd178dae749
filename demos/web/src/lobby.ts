// The game lobby page, on the demo class `lobby` (demos/lobby/lobby.rs).
// The socket carries our player id (`?player=`), so after a reconnect (a
// network blip or a server restart) the server binds it to the seat we hold.
import { connect, RoostError } from '@roost/client'
import { $, demoToken, displayName, escapeText, param, rememberName, serverUrl, showStatus, tokenPrompt } from './common'

interface Player {
  id: string
  name: string
  ready: boolean
  seat: number
  host: boolean
}
interface LobbyState {
  status: 'open' | 'started' | 'closed'
  seats: number
  close_after_ms: number
  closes_at: number | null
  started_at: number | null
  host: string | null
  players: Player[]
  can_start: boolean
  /** Our own player's handle (only in the state a socket gets when it opens). */
  you?: string
}

const lobbyName = param('lobby', 'main')
$('lobby-name').textContent = lobbyName
;($('lobby') as HTMLInputElement).value = lobbyName
document.title = `Roost · lobby ${lobbyName}`

// Our player id for this lobby, per tab (sessionStorage), so two tabs are two
// players. Without auth it is a secret (whoever knows it acts as us): random,
// and never shown to the others, who see our handle instead.
const idKey = `roost-lobby-player:${lobbyName}`
let playerId = sessionStorage.getItem(idKey)
if (!playerId) {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  playerId = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  sessionStorage.setItem(idKey, playerId)
}
// Our handle, as the lobby lists us: from the join answer, or from the state
// our socket gets when it opens while we hold a seat.
let you: string | null = null

const nameInput = $('name') as HTMLInputElement
nameInput.value = displayName()

const socket = connect({ url: serverUrl, class: 'lobby', name: lobbyName, params: { player: playerId }, token: demoToken })
// With --auth-secret: say why the socket cannot open, and take a token.
const auth = tokenPrompt(() => `lobby/${lobbyName}`, () => socket.reconnect())
socket.onError(() => auth.check())
// The server refused the token (close code 4401/4403): say why.
socket.onAuthFailed(() => auth.check())
socket.onStatus((s) => {
  showStatus($('status'), s)
  if (s === 'open') auth.hide()
})

let state: LobbyState | null = null

function me(): Player | undefined {
  return state?.players.find((p) => p.id === you)
}

function render(): void {
  if (!state) return
  const mine = me()
  const seats: string[] = []
  for (let i = 0; i < state.seats; i++) {
    const p = state.players[i]
    if (!p) {
      seats.push(`<li class="empty" data-seat="${i}">seat ${i + 1} — free</li>`)
      continue
    }
    const badges = [
      p.host ? '<span class="badge host">host</span>' : '',
      p.ready ? '<span class="badge ready">ready</span>' : '<span class="badge">not ready</span>',
    ].join(' ')
    const mark = p.id === you ? ' <span class="muted">(you)</span>' : ''
    seats.push(
      `<li class="${p.id === you ? 'me' : ''}" data-seat="${i}" data-player="${escapeText(p.name)}">` +
        `<b>${escapeText(p.name)}</b>${mark} ${badges}</li>`,
    )
  }
  $('seats').innerHTML = seats.join('')
  $('summary').textContent =
    `${state.players.length} of ${state.seats} seats taken · status ${state.status}` +
    (state.closes_at ? ` · closes at ${new Date(state.closes_at).toLocaleTimeString()} unless someone joins` : '')
  const banner = $('banner')
  banner.dataset.status = state.status
  if (state.status === 'started') {
    banner.className = 'banner'
    banner.textContent = 'The game has started!'
  } else if (state.status === 'closed') {
    banner.className = 'banner closed'
    banner.textContent = 'This lobby was empty and closed itself. Join to open it again.'
  } else {
    banner.className = ''
    banner.textContent = ''
  }
  const seated = mine !== undefined
  ;($('join') as HTMLButtonElement).disabled = seated
  nameInput.disabled = seated
  const ready = $('ready') as HTMLButtonElement
  ready.disabled = !seated || state.status !== 'open'
  ready.textContent = mine?.ready ? 'Not ready' : 'Ready'
  ;($('start') as HTMLButtonElement).disabled = !(mine?.host && state.can_start)
  ;($('end') as HTMLButtonElement).hidden = !(mine?.host && state.status === 'started')
  ;($('leave') as HTMLButtonElement).disabled = !seated
  document.body.dataset.seated = String(seated)
}

socket.on<LobbyState>('state', (s) => {
  if (typeof s.you === 'string') you = s.you
  state = s
  render()
})

async function act(method: string, args: Record<string, unknown> = {}): Promise<unknown> {
  $('error').textContent = ''
  try {
    return await socket.call(method, { player: playerId, ...args }, { timeout: 10_000 })
  } catch (e) {
    $('error').textContent = e instanceof RoostError ? e.message : String(e)
    return undefined
  }
}

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const name = nameInput.value.trim()
  if (!name) return
  rememberName(name)
  void act('join', { name, player: playerId }).then((joined) => {
    // With --auth-secret the lobby seats the token's holder (its `sub`),
    // not the id this page chose: take the one it answers with.
    const answer = joined as { player?: unknown, you?: unknown } | undefined
    if (typeof answer?.you === 'string') you = answer.you
    const player = answer?.player
    if (typeof player === 'string' && player !== playerId) {
      playerId = player
      sessionStorage.setItem(idKey, player)
    }
    render()
  })
})
$('ready').addEventListener('click', () => void act('ready', {}))
$('start').addEventListener('click', () => void act('start', {}))
$('end').addEventListener('click', () => void act('end', {}))
$('leave').addEventListener('click', () => void act('leave', {}))
$('lobby-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const name = ($('lobby') as HTMLInputElement).value.trim()
  if (name && name !== lobbyName) {
    const u = new URL(location.href)
    u.searchParams.set('lobby', name)
    location.href = u.toString()
  }
})
;(window as unknown as { roostLobby: unknown }).roostLobby = { socket, get playerId() { return playerId }, get you() { return you }, get state() { return state } }
