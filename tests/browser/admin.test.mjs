// Browser test of the admin console (/admin) against the real roost binary,
// started here with --admin-token: sign in, find objects by class, see an
// object's details, KV decoded as JSON, its tables and the SQL console, its
// live sockets (closing one), a Yjs document's text and versions, the live
// metric charts, and deleting an object with confirmation. Screenshots go to
// $SCREENSHOT_DIR.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  SCREENSHOTS,
  freePort,
  launchBrowser,
  newPage,
  rpc,
  screenshot,
  startRoost,
  stopRoost,
  tempDir,
} from './harness.mjs'

const TOKEN = 'browser-admin-token'
let browser
let server
const errors = []

before(async () => {
  server = await startRoost({ port: await freePort(), data: tempDir('roost-admin-'), args: ['--admin-token', TOKEN] })
  browser = await launchBrowser()
  console.log(`screenshots: ${SCREENSHOTS}`)
})

after(async () => {
  await browser?.close()
  if (server) await stopRoost(server)
})

async function signIn(page) {
  await page.goto(`${server.url}/admin`)
  await page.fill('#token', TOKEN)
  await page.click('#login button')
  await page.waitForSelector('#objects li')
}

test('the console shows objects, KV as JSON, tables, SQL, sockets, metrics; closes a socket', async () => {
  for (let i = 0; i < 4; i++) await rpc(server.url, 'counter', 'visits', 'increment')
  await rpc(server.url, 'counter', 'other', 'increment')
  // A live socket on the counter, held by another page (a user).
  const holder = await newPage(browser, errors)
  await holder.goto(`${server.url}/admin`)
  await holder.evaluate((url) => new Promise((ok, fail) => {
    const ws = new WebSocket(url)
    ws.onclose = (e) => { window.closedWith = { code: e.code, reason: e.reason } }
    ws.onopen = ok
    ws.onerror = fail
  }), `${server.url.replace('http', 'ws')}/v1/objects/counter/visits/ws`)

  const page = await newPage(browser, errors)
  await signIn(page)
  await page.fill('#class', 'counter')
  await page.fill('#prefix', 'vis')
  await page.click('#search button')
  await page.waitForFunction(() => document.querySelectorAll('#objects li').length === 1)
  assert.equal(await page.textContent('#objects li'), 'counter/visits')
  await page.click('#objects li')
  await page.waitForSelector('#kv tbody tr td pre')
  assert.equal(await page.textContent('#kv tbody tr td'), 'value')
  assert.equal(await page.textContent('#kv tbody tr td pre'), '4')
  assert.match(await page.textContent('[data-field="storage"]'), /\d+ bytes/)

  // Tables: one click browses `_roost_kv` through the read-only console.
  await page.click('[data-table="_roost_kv"]')
  await page.waitForSelector('#sql-result table')
  assert.match(await page.textContent('#sql-result table'), /key.*value/s)
  // The console refuses writes, and says why.
  await page.fill('#sql', 'DELETE FROM _roost_kv')
  await page.click('#run-sql')
  await page.waitForSelector('#sql-result .error')
  assert.match(await page.textContent('#sql-result .error'), /not allowed|read-only|readonly/i)

  // Metrics: the charts draw a line after two samples.
  await page.waitForFunction(() => document.querySelectorAll('#charts .chart polyline').length >= 6)
  await page.waitForFunction(
    () => Number(document.querySelector('[data-metric="roost_open_sockets"] .value').textContent) >= 1,
  )

  // Sockets: the test's socket is listed; Close closes it.
  await page.waitForSelector('#sockets tbody tr')
  console.log(await screenshot(page, 'admin-object'))
  await page.click('#sockets tbody tr button')
  await holder.waitForFunction(() => window.closedWith !== undefined)
  assert.deepEqual(await holder.evaluate(() => window.closedWith), { code: 1000, reason: 'closed by an administrator' })
  await holder.context().close()
  await page.waitForFunction(() => document.querySelectorAll('#sockets tbody tr').length === 0)
  // Nothing was changed by looking.
  assert.deepEqual((await rpc(server.url, 'counter', 'visits', 'get')).body, 4)
  await page.context().close()
  assert.deepEqual(errors.splice(0), [], 'errors thrown in the page')
})

test('the console shows a Yjs document with its versions, and deletes after confirmation', async () => {
  const doc = 'admin-notes'
  // Write the document through the editor demo page, then name a version.
  const editor = await newPage(browser, errors)
  await editor.goto(`${server.url}/demos/editor.html?doc=${doc}&name=Ann`)
  await editor.waitForFunction(() => window.roostEditor?.provider.synced === true)
  await editor.click('.cm-content')
  await editor.keyboard.type('Notes for the admin.')
  await editor.waitForFunction(() => window.roostEditor.provider.saved === true)
  const resp = await fetch(`${server.url}/v1/yjs/${doc}/versions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'first draft' }),
  })
  assert.equal(resp.status, 201)
  await editor.context().close()

  const page = await newPage(browser, errors)
  await signIn(page)
  await page.fill('#class', 'ydoc')
  await page.click('#search button')
  await page.click(`[data-object="ydoc/${doc}"]`)
  await page.waitForSelector('#yjs-roots pre')
  assert.match(await page.textContent('#yjs-roots'), /Notes for the admin\./)
  await page.waitForSelector('#versions tbody tr')
  assert.equal(await page.textContent('#versions tbody tr td'), 'first draft')
  console.log(await screenshot(page, 'admin-yjs'))

  // Delete: the first confirmation is dismissed (nothing happens), the second accepted.
  let dialogs = 0
  page.on('dialog', (d) => (dialogs++ === 0 ? d.dismiss() : d.accept()))
  await page.click('#delete')
  await page.waitForTimeout(300)
  assert.equal((await fetch(`${server.url}/v1/admin/objects/ydoc/${doc}`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200)
  await page.click('#delete')
  await page.waitForFunction(() => document.getElementById('object').hidden)
  assert.equal(dialogs, 2)
  const gone = await fetch(`${server.url}/v1/admin/objects/ydoc/${doc}`, { headers: { authorization: `Bearer ${TOKEN}` } })
  assert.equal(gone.status, 404)
  // The list refreshes after the panel hides; the deleted object must not come back.
  await page.waitForTimeout(300)
  assert.equal(await page.locator(`[data-object="ydoc/${doc}"]`).count(), 0)
  await page.context().close()
  assert.deepEqual(errors.splice(0), [], 'errors thrown in the page')
})
