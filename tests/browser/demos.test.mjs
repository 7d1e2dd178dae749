// Browser tests of the demos (demos/web) against the real roost binary,
// driven through Debian's Chromium with playwright-core. Each test opens
// pages in separate browser contexts, as separate users would.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  SCREENSHOTS,
  freePort,
  launchBrowser,
  mintToken,
  newPage,
  rpc,
  screenshot,
  sharedServer,
  startRoost,
  stopRoost,
  tempDir,
  unique,
} from './harness.mjs'

let browser
let server
const errors = []

before(async () => {
  server = await sharedServer()
  browser = await launchBrowser()
  console.log(`screenshots: ${SCREENSHOTS}`)
})

after(async () => {
  await browser?.close()
  if (server?.owned) await stopRoost(server.owned)
})

function noPageErrors() {
  assert.deepEqual(errors.splice(0), [], 'errors thrown in the pages')
}

const editorText = (page) => page.evaluate(() => window.roostEditor?.view.state.doc.toString() ?? '')

async function openEditor(page, url, doc, name) {
  await page.goto(`${url}/demos/editor.html?doc=${encodeURIComponent(doc)}&name=${encodeURIComponent(name)}`)
  await page.waitForSelector('#status[data-state="open"]')
  await page.waitForFunction(() => window.roostEditor?.provider.synced === true)
}

test('the index links the three demos', async () => {
  const page = await newPage(browser, errors)
  const resp = await page.goto(`${server.url}/`)
  assert.equal(resp.status(), 200)
  assert.match(resp.headers()['content-type'], /^text\/html/)
  for (const demo of ['editor', 'lobby', 'chat']) {
    const href = await page.getAttribute(`#card-${demo} h2 a`, 'href')
    assert.equal(href, `/demos/${demo}.html`)
  }
  assert.match(await page.textContent('#card-lobby'), /demos\/lobby\/lobby\.rs/)
  console.log(`${await screenshot(page, 'index')}`)
  await page.context().close()
  noPageErrors()
})

test('two pages edit the same document and see each other\'s text and cursor', async () => {
  const doc = unique('doc')
  const alice = await newPage(browser, errors)
  const bob = await newPage(browser, errors)
  await openEditor(alice, server.url, doc, 'Alice')
  await openEditor(bob, server.url, doc, 'Bob')

  await alice.click('.cm-content')
  await alice.keyboard.type('Hello from Alice. ')
  await bob.waitForFunction(() => window.roostEditor.view.state.doc.toString().includes('Hello from Alice.'))
  assert.match(await bob.textContent('.cm-content'), /Hello from Alice\./)

  await bob.click('.cm-content')
  await bob.keyboard.press('Control+End')
  await bob.keyboard.type('And Bob.')
  await alice.waitForFunction(() => window.roostEditor.view.state.doc.toString().includes('And Bob.'))
  assert.equal(await editorText(alice), await editorText(bob))

  // Remote cursors with names, from awareness.
  await alice.waitForSelector('.cm-ySelectionCaret', { state: 'attached' })
  await alice.waitForFunction(() =>
    [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent.includes('Bob')),
  )
  await bob.waitForFunction(() =>
    [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent.includes('Alice')),
  )
  await alice.waitForFunction(() => document.querySelector('#people').textContent.includes('Bob'))

  // The "saved" indicator follows the server's durable acknowledgements.
  await alice.waitForSelector('#saved[data-state="saved"]')
  await bob.waitForSelector('#saved[data-state="saved"]')

  console.log(`${await screenshot(alice, 'editor-alice')}`)
  console.log(`${await screenshot(bob, 'editor-bob')}`)

  // The document picker: another name is another, empty document.
  await bob.fill('#doc', `${doc}-other`)
  await bob.click('#picker button[type="submit"]')
  await bob.waitForFunction((d) => window.roostEditor.name === d && window.roostEditor.provider.synced, `${doc}-other`)
  assert.equal(await editorText(bob), '')
  assert.match(bob.url(), /doc=.*-other/)

  await alice.context().close()
  await bob.context().close()
  noPageErrors()
})

test('after a server restart (kill -9) the text is there', async () => {
  // Its own server on a fixed port, so the open page can reconnect to it.
  const port = await freePort()
  const data = tempDir('roost-browser-restart-')
  let own = await startRoost({ port, data })
  try {
    const doc = unique('durable')
    const page = await newPage(browser, errors)
    await openEditor(page, own.url, doc, 'Carol')
    await page.click('.cm-content')
    await page.keyboard.type('Written before the crash.')
    // "saved" means fsynced: safe to kill -9 now.
    await page.waitForFunction(() => window.roostEditor.provider.saved === true)
    await page.waitForSelector('#saved[data-state="saved"]')

    await stopRoost(own, 'SIGKILL')
    await page.waitForSelector('#status:not([data-state="open"])')
    own = await startRoost({ port, data })
    await page.waitForSelector('#status[data-state="open"]', { timeout: 30_000 })

    // A fresh visitor loads the document from the restarted server.
    const fresh = await newPage(browser, errors)
    await openEditor(fresh, own.url, doc, 'Dave')
    await fresh.waitForFunction(() => window.roostEditor.view.state.doc.toString() === 'Written before the crash.')
    // And the reconnected page still edits it.
    await page.click('.cm-content')
    await page.keyboard.press('Control+End')
    await page.keyboard.type(' And after.')
    await fresh.waitForFunction(() => window.roostEditor.view.state.doc.toString().endsWith('And after.'))
    console.log(`${await screenshot(fresh, 'editor-after-restart')}`)
    await page.context().close()
    await fresh.context().close()
  } finally {
    await stopRoost(own)
  }
  noPageErrors()
})

async function openLobby(page, url, lobby, name) {
  await page.goto(`${url}/demos/lobby.html?lobby=${encodeURIComponent(lobby)}&name=${encodeURIComponent(name)}`)
  await page.waitForSelector('#status[data-state="open"]')
  await page.waitForSelector('#seats li')
}

test('two players fill a lobby, a third is refused, they ready up and the host starts', async () => {
  const lobby = unique('lobby')
  const conf = await rpc(server.url, 'lobby', lobby, 'configure', { seats: 2 })
  assert.equal(conf.status, 200, JSON.stringify(conf.body))
  const [ann, ben, cat] = [
    await newPage(browser, errors),
    await newPage(browser, errors),
    await newPage(browser, errors),
  ]
  await openLobby(ann, server.url, lobby, 'Ann')
  await openLobby(ben, server.url, lobby, 'Ben')
  await openLobby(cat, server.url, lobby, 'Cat')

  await ann.click('#join')
  await ann.waitForSelector('body[data-seated="true"]')
  await ben.click('#join')
  await ben.waitForSelector('body[data-seated="true"]')
  await ann.waitForSelector('#seats li[data-player="Ben"]')

  // Both seats are taken: Cat is refused.
  await cat.click('#join')
  await cat.waitForFunction(() => /full/.test(document.querySelector('#error').textContent))
  assert.equal(await cat.getAttribute('body', 'data-seated'), 'false')
  assert.equal(await cat.locator('#seats li[data-player]').count(), 2)
  console.log(`${await screenshot(cat, 'lobby-full')}`)

  // Ann is host; she cannot start before everyone is ready.
  assert.match(await ann.textContent('#seats li[data-player="Ann"]'), /host/)
  assert.equal(await ann.isDisabled('#start'), true)
  assert.equal(await ben.isDisabled('#start'), true)
  await ann.click('#ready')
  await ben.click('#ready')
  await ann.waitForSelector('#start:not([disabled])')
  assert.equal(await ben.isDisabled('#start'), true, 'only the host may start')
  await ann.click('#start')
  for (const p of [ann, ben, cat]) {
    await p.waitForSelector('#banner[data-status="started"]')
  }
  assert.match(await ben.textContent('#banner'), /started/)
  console.log(`${await screenshot(ann, 'lobby-started')}`)

  // The host leaves: Ben becomes host.
  await ann.click('#leave')
  await ben.waitForFunction(() => /host/.test(document.querySelector('#seats li[data-player="Ben"]')?.textContent ?? ''))
  for (const p of [ann, ben, cat]) await p.context().close()
  noPageErrors()
})

test('chat: history, presence and follow-up; history survives a reload', async () => {
  const room = unique('room')
  const open = async (page, name) => {
    await page.goto(`${server.url}/demos/chat.html?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`)
    await page.waitForSelector('#status[data-state="open"]')
  }
  const eve = await newPage(browser, errors)
  const fay = await newPage(browser, errors)
  await open(eve, 'Eve')
  await open(fay, 'Fay')
  await eve.waitForFunction(() => document.querySelector('#who').textContent.includes('Fay'))

  for (const text of ['first message', 'second message']) {
    await eve.fill('#text', text)
    await eve.press('#text', 'Enter')
  }
  await fay.waitForFunction(() => document.querySelector('#messages').textContent.includes('second message'))
  await fay.fill('#text', 'hi Eve')
  await fay.click('#send-form button')
  await eve.waitForFunction(() => document.querySelector('#messages').textContent.includes('hi Eve'))

  // Reload: the history comes back from the room's storage.
  await eve.reload()
  await eve.waitForSelector('#status[data-state="open"]')
  await eve.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 3)
  const texts = await eve.$$eval('#messages .msg .text', (els) => els.map((e) => e.textContent))
  assert.deepEqual(texts, ['first message', 'second message', 'hi Eve'])

  // Presence: Fay leaves, Eve sees it.
  await fay.context().close()
  await eve.waitForFunction(() => !document.querySelector('#who').textContent.includes('Fay'))

  // Follow-up: the room posts a system message through its alarm.
  await eve.fill('#followup-secs', '1')
  await eve.fill('#followup-text', 'Anyone still here?')
  await eve.click('#followup-form button[type="submit"]')
  await eve.waitForFunction(() => document.querySelector('#followup-state').textContent.startsWith('On'))
  await eve.fill('#text', 'going quiet now')
  await eve.press('#text', 'Enter')
  await eve.waitForSelector('#messages .msg.system', { timeout: 20_000 })
  assert.match(await eve.textContent('#messages .msg.system'), /Anyone still here\?/)
  console.log(`${await screenshot(eve, 'chat')}`)
  await eve.context().close()
  noPageErrors()
})

test('with --auth-secret the demos say a token is needed, take one, and connect with it', async () => {
  const secret = 'browser-test-secret'
  const own = await startRoost({ port: await freePort(), data: tempDir('roost-browser-auth-'), args: ['--auth-secret', secret] })
  const prompt = (problem) => `#auth[data-problem="${problem}"]:not([hidden])`
  try {
    const page = await newPage(browser, errors)
    const lobby = unique('auth-lobby')
    await page.goto(`${own.url}/demos/lobby.html?lobby=${lobby}&name=Ivy`)
    // No token: the page says why it cannot connect, instead of only "reconnecting".
    await page.waitForSelector(prompt('missing'))
    assert.match(await page.textContent('#auth-message'), /requires an access token.*--auth-secret/)
    assert.match(await page.textContent('#auth'), /roost token --obj 'lobby\/\*'/)
    assert.notEqual(await page.getAttribute('#status', 'data-state'), 'open')
    console.log(`${await screenshot(page, 'auth-prompt-lobby')}`)

    // A valid token for another object: refused for that reason.
    await page.fill('#auth-token', mintToken(secret, 'lobby/some-other-lobby'))
    await page.click('#auth-form button[type="submit"]')
    await page.waitForSelector(prompt('forbidden'))
    assert.match(await page.textContent('#auth-message'), new RegExp(`does not open lobby/${lobby}`))

    // One that opens it: the page connects, the prompt goes, and it works.
    await page.fill('#auth-token', mintToken(secret, 'lobby/*'))
    await page.click('#auth-form button[type="submit"]')
    await page.waitForSelector('#status[data-state="open"]')
    await page.waitForSelector('#auth', { state: 'hidden' })
    await page.click('#join')
    await page.waitForSelector('body[data-seated="true"]')

    // The token is remembered for the other demos; it does not open a
    // document, so the editor says so. A token in ?token= is taken (and
    // taken out of the address bar).
    const doc = unique('auth-doc')
    await page.goto(`${own.url}/demos/editor.html?doc=${doc}&name=Ivy`)
    await page.waitForSelector(prompt('forbidden'))
    await page.goto(`${own.url}/demos/editor.html?doc=${doc}&name=Ivy&token=${mintToken(secret, `ydoc/${doc}`)}`)
    await page.waitForSelector('#status[data-state="open"]')
    assert.doesNotMatch(page.url(), /token=/)
    await page.waitForFunction(() => window.roostEditor?.provider.synced === true)
    await page.click('.cm-content')
    await page.keyboard.type('Typed with a token.')
    await page.waitForSelector('#saved[data-state="saved"]')
    assert.equal(await page.isHidden('#auth'), true)

    // A token signed with another secret: refused, and the chat says so.
    await page.goto(`${own.url}/demos/chat.html?room=auth-room&name=Ivy&token=${mintToken('another-secret', 'room/*')}`)
    await page.waitForSelector(prompt('refused'))
    assert.match(await page.textContent('#auth-message'), /refused the access token/)
    await page.fill('#auth-token', mintToken(secret, 'room/auth-room'))
    await page.click('#auth-form button[type="submit"]')
    await page.waitForSelector('#status[data-state="open"]')
    await page.waitForSelector('#auth', { state: 'hidden' })
    console.log(`${await screenshot(page, 'auth-chat-connected')}`)
    await page.context().close()
  } finally {
    await stopRoost(own)
  }
  noPageErrors()
})
