// The collaborative editor: CodeMirror 6 + y-codemirror.next on a Roost `ydoc`.
// Each document name is its own object (`/v1/yjs/{doc}`); RoostProvider
// (client-ts) syncs it, relays awareness (cursors, names) and reports `saved`
// when the server has fsynced every change this page sent (type-100 messages).
import * as Y from 'yjs'
import { RoostProvider } from '@roost/client/yjs'
import { EditorView, basicSetup } from 'codemirror'
import { yCollab } from 'y-codemirror.next'
import { $, colorFor, demoToken, displayName, escapeText, param, rememberName, serverUrl, setParam, showStatus, tokenPrompt } from './common'

interface Session {
  name: string
  doc: Y.Doc
  provider: RoostProvider
  view: EditorView
}

let session: Session | null = null
let userName = displayName()

// With --auth-secret: say why the document cannot open, and take a token
// (the provider then connects again with it).
const auth = tokenPrompt(
  () => `ydoc/${session?.name ?? ''}`,
  () => {
    session?.provider.disconnect()
    session?.provider.connect()
  },
)

function recent(add?: string): string[] {
  let list: string[] = []
  try {
    list = JSON.parse(localStorage.getItem('roost-demo-docs') ?? '[]')
  } catch {
    list = []
  }
  if (add) {
    list = [add, ...list.filter((d) => d !== add)].slice(0, 10)
    localStorage.setItem('roost-demo-docs', JSON.stringify(list))
  }
  return list
}

function renderRecent(): void {
  $('recent').innerHTML = recent().map((d) => `<option value="${escapeText(d)}"></option>`).join('')
}

function setUser(provider: RoostProvider): void {
  const color = colorFor(userName)
  provider.awareness.setLocalStateField('user', { name: userName, color, colorLight: `${color}33` })
}

function renderPeople(provider: RoostProvider): void {
  const people: string[] = []
  provider.awareness.getStates().forEach((state, client) => {
    const user = (state as { user?: { name?: string; color?: string } }).user
    if (!user?.name) return
    const me = client === provider.awareness.clientID ? ' (you)' : ''
    people.push(
      `<span><i class="dot" style="background:${escapeText(user.color ?? '#888')}"></i>${escapeText(user.name)}${me}</span>`,
    )
  })
  $('people').innerHTML = people.join('')
}

function open(name: string): void {
  if (session) {
    session.view.destroy()
    session.provider.destroy()
    session.doc.destroy()
    session = null
  }
  setParam('doc', name)
  ;($('doc') as HTMLInputElement).value = name
  recent(name)
  renderRecent()
  document.title = `Roost · ${name}`

  const doc = new Y.Doc()
  const text = doc.getText('codemirror')
  const provider = new RoostProvider(name, doc, { url: serverUrl, token: demoToken })
  const undoManager = new Y.UndoManager(text)
  setUser(provider)

  const status = $('status')
  const saved = $('saved')
  showStatus(status, provider.status)
  auth.hide()
  provider.on('status', (s) => {
    showStatus(status, s)
    if (s === 'open') auth.hide()
  })
  provider.on('error', () => auth.check())
  // The server refused the token (close code 4401/4403): say why.
  provider.on('auth-failed', () => auth.check())
  const showSaved = (ok: boolean) => {
    saved.dataset.state = ok ? 'saved' : 'saving'
    saved.textContent = ok ? 'saved' : 'saving…'
  }
  showSaved(provider.saved)
  provider.on('saved', showSaved)
  provider.awareness.on('change', () => renderPeople(provider))
  renderPeople(provider)

  const view = new EditorView({
    doc: text.toString(),
    extensions: [basicSetup, EditorView.lineWrapping, yCollab(text, provider.awareness, { undoManager })],
    parent: $('editor'),
  })
  session = { name, doc, provider, view }
  // For the browser tests and the curious: window.roostEditor.
  ;(window as unknown as { roostEditor: Session }).roostEditor = session
}

$('picker').addEventListener('submit', (e) => {
  e.preventDefault()
  const name = ($('doc') as HTMLInputElement).value.trim()
  if (name && name !== session?.name) open(name)
})

const nameInput = $('name') as HTMLInputElement
nameInput.value = userName
nameInput.addEventListener('change', () => {
  const n = nameInput.value.trim().slice(0, 32)
  if (!n) return
  userName = n
  rememberName(n)
  if (session) setUser(session.provider)
})

open(param('doc', 'welcome'))
