// The admin console: plain DOM, no framework. Every value from the server
// is shown through textContent (never parsed as HTML). The admin token is
// kept in sessionStorage for this tab and sent as `Authorization: Bearer`.
'use strict'

const $ = (id) => document.getElementById(id)
const state = { token: sessionStorage.getItem('roost-admin-token') || '', cursor: null, current: null }
window.roostAdmin = state

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag)
  if (text !== undefined && text !== null) e.textContent = String(text)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  return e
}

const seg = encodeURIComponent

async function api(path, options = {}) {
  const headers = { authorization: `Bearer ${state.token}`, ...(options.headers || {}) }
  const resp = await fetch(path, { ...options, headers })
  const text = await resp.text()
  let body = text
  try { body = JSON.parse(text) } catch { /* metrics are text */ }
  if (!resp.ok) throw new Error(body?.error?.message || `${resp.status} ${text}`)
  return body
}

function showError(id, e) { $(id).textContent = e ? String(e.message || e) : '' }

// ---- objects ----
async function listObjects(more) {
  showError('list-error')
  const q = new URLSearchParams({ limit: '50' })
  if ($('class').value) q.set('class', $('class').value)
  if ($('prefix').value) q.set('prefix', $('prefix').value)
  if (more && state.cursor) q.set('cursor', state.cursor)
  try {
    const body = await api(`/v1/admin/objects?${q}`)
    if (!more) $('objects').replaceChildren()
    for (const o of body.objects) {
      const li = el('li', `${o.class}/${o.name}`, { 'data-object': `${o.class}/${o.name}` })
      li.addEventListener('click', () => openObject(o.class, o.name))
      $('objects').append(li)
    }
    state.cursor = body.next_cursor
    $('more').hidden = !body.next_cursor
  } catch (e) { showError('list-error', e) }
}

function objectPath(cls, name) { return `/v1/admin/objects/${seg(cls)}/${seg(name)}` }

async function openObject(cls, name) {
  state.current = { cls, name }
  for (const li of $('objects').children) li.classList.toggle('selected', li.dataset.object === `${cls}/${name}`)
  $('object').hidden = false
  $('object-title').textContent = `${cls}/${name}`
  showError('object-error')
  try {
    const d = await api(objectPath(cls, name))
    const rows = [
      ['state', d.live ? 'live' : 'hibernated'], ['sockets', d.sockets], ['storage', `${d.storage_bytes} bytes`],
      ['next alarm', d.next_alarm_ms ? new Date(d.next_alarm_ms).toISOString() : 'none'],
      ['created', d.created_ms ? new Date(d.created_ms).toISOString() : '?'],
      ['last active', d.last_active_ms ? new Date(d.last_active_ms).toISOString() : '?'], ['id', d.id],
    ]
    $('details').replaceChildren(...rows.flatMap(([k, v]) => [el('span', k, { class: 'muted' }), el('span', v, { 'data-field': k })]))
    await Promise.all([showKv(), showSockets(), showTables(), showYjs()])
  } catch (e) { showError('object-error', e) }
}

async function showKv() {
  const { cls, name } = state.current
  const body = await api(`${objectPath(cls, name)}/kv`)
  $('kv-section').hidden = false
  const rows = body.entries.map((e) => {
    const tr = el('tr')
    tr.append(el('td', e.key), el('td'))
    tr.lastChild.append(el('pre', JSON.stringify(e.value, null, 2)))
    return tr
  })
  if (rows.length === 0) rows.push(el('tr')), rows[0].append(el('td', 'no entries', { class: 'muted' }))
  $('kv').tBodies[0].replaceChildren(...rows)
}

async function showSockets() {
  const { cls, name } = state.current
  const body = await api(`${objectPath(cls, name)}/sockets`)
  $('sockets-section').hidden = false
  const rows = body.sockets.map((s) => {
    const tr = el('tr', null, { 'data-socket': s.id })
    const who = s.identity ? (s.identity.name || s.identity.sub || 'token') : 'anonymous'
    tr.append(el('td', s.id), el('td', who), el('td', s.tags.join(', ')), el('td', s.read_only ? 'read' : 'write'))
    const close = el('button', 'Close')
    close.addEventListener('click', async () => {
      await api(`${objectPath(cls, name)}/sockets/${s.id}`, { method: 'DELETE' })
      setTimeout(showSockets, 300)
    })
    const td = el('td'); td.append(close); tr.append(td)
    return tr
  })
  $('sockets').tBodies[0].replaceChildren(...rows)
}

function renderResult(result) {
  const table = el('table')
  const head = el('tr'); head.append(...result.columns.map((c) => el('th', c)))
  table.append(head)
  for (const row of result.rows) {
    const tr = el('tr')
    tr.append(...row.map((v) => el('td', typeof v === 'object' && v !== null ? JSON.stringify(v) : v)))
    table.append(tr)
  }
  return table
}

async function runSql(sql) {
  const { cls, name } = state.current
  return api(`${objectPath(cls, name)}/sql`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql }),
  })
}

async function showTables() {
  $('tables-section').hidden = false
  const result = await runSql("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
  const buttons = result.rows.map(([table]) => {
    const b = el('button', table, { 'data-table': table })
    b.addEventListener('click', () => {
      $('sql').value = `SELECT * FROM "${table.replaceAll('"', '""')}" LIMIT 100`
      $('run-sql').click()
    })
    return b
  })
  $('tables').replaceChildren(...buttons)
  $('sql-result').replaceChildren()
}

async function showYjs() {
  const { cls, name } = state.current
  $('yjs').hidden = cls !== 'ydoc'
  if (cls !== 'ydoc') return
  const body = await api(`/v1/admin/yjs/${seg(name)}`)
  const roots = Object.entries(body.content.roots).map(([root, value]) => {
    const div = el('div', null, { 'data-root': root })
    div.append(el('strong', root), el('pre', typeof value === 'string' ? value : JSON.stringify(value, null, 2)))
    return div
  })
  $('yjs-roots').replaceChildren(...roots)
  $('versions').tBodies[0].replaceChildren(...body.versions.map((v) => {
    const tr = el('tr')
    tr.append(el('td', v.name), el('td', new Date(v.created_ms).toISOString()), el('td', v.bytes))
    return tr
  }))
}

// ---- metrics ----
const CHARTS = [
  ['roost_live_objects', 'live objects', false], ['roost_open_sockets', 'open sockets', false],
  ['roost_events_total', 'events / s', true], ['roost_commits_total', 'commits / s', true],
  ['roost_log_fsyncs_total', 'fsyncs / s', true], ['roost_errors_total', 'errors / s', true],
]
const series = new Map()
let lastSample = null

function parseMetrics(text) {
  const sums = new Map()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = line.match(/^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)/)
    if (m) sums.set(m[1], (sums.get(m[1]) || 0) + Number(m[3]))
  }
  return sums
}

function drawChart(name, label, points) {
  let box = document.querySelector(`[data-metric="${name}"]`)
  if (!box) {
    box = el('div', null, { class: 'chart', 'data-metric': name })
    box.append(el('div', label, { class: 'muted' }), el('div', '', { class: 'value' }))
    box.append(document.createElementNS('http://www.w3.org/2000/svg', 'svg'))
    $('charts').append(box)
  }
  const last = points.length ? points[points.length - 1] : 0
  box.querySelector('.value').textContent = Number.isInteger(last) ? last : last.toFixed(1)
  const svg = box.querySelector('svg')
  svg.setAttribute('viewBox', '0 0 60 40')
  svg.setAttribute('preserveAspectRatio', 'none')
  const max = Math.max(1, ...points)
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline')
  line.setAttribute('fill', 'none'); line.setAttribute('stroke', '#3b63d6'); line.setAttribute('stroke-width', '1.5')
  line.setAttribute('points', points.map((v, i) => `${i + 60 - points.length},${38 - (v / max) * 36}`).join(' '))
  svg.replaceChildren(line)
}

async function sampleMetrics() {
  try {
    const now = Date.now()
    const sums = parseMetrics(await api('/metrics'))
    for (const [name, label, rate] of CHARTS) {
      let value = sums.get(name) || 0
      if (rate) {
        const before = lastSample?.sums.get(name)
        value = before === undefined ? 0 : Math.max(0, (value - before) / ((now - lastSample.at) / 1000))
      }
      const points = series.get(name) || []
      points.push(value)
      if (points.length > 60) points.shift()
      series.set(name, points)
      drawChart(name, label, points)
    }
    lastSample = { at: now, sums }
    showError('metrics-error')
  } catch (e) { showError('metrics-error', e) }
}

// ---- wiring ----
$('login').addEventListener('submit', (ev) => {
  ev.preventDefault()
  state.token = $('token').value
  sessionStorage.setItem('roost-admin-token', state.token)
  $('token').value = ''
  start()
})
$('search').addEventListener('submit', (ev) => { ev.preventDefault(); listObjects(false) })
$('more').addEventListener('click', () => listObjects(true))
$('run-sql').addEventListener('click', async () => {
  try {
    $('sql-result').replaceChildren(renderResult(await runSql($('sql').value)))
  } catch (e) { $('sql-result').replaceChildren(el('p', e.message, { class: 'error' })) }
})
$('delete').addEventListener('click', async () => {
  const { cls, name } = state.current
  if (!confirm(`Delete ${cls}/${name} and all its data? This cannot be undone.`)) return
  try {
    await api(objectPath(cls, name), { method: 'DELETE' })
    for (const li of [...$('objects').children]) if (li.dataset.object === `${cls}/${name}`) li.remove()
    for (const id of ['object', 'yjs', 'sockets-section', 'kv-section', 'tables-section']) $(id).hidden = true
    await listObjects(false)
  } catch (e) { showError('object-error', e) }
})

let timer = null
function start() {
  $('who').textContent = state.token ? 'signed in' : 'not signed in'
  if (!state.token) return
  listObjects(false)
  sampleMetrics()
  clearInterval(timer)
  timer = setInterval(sampleMetrics, 2000)
}
start()
