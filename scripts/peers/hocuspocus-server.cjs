// Starts a Hocuspocus server on loopback with its SQLite persistence
// extension, for roost-load's side-by-side runs. Run with NODE_PATH pointing
// at the peers' cache (see run.sh):
//   PORT=1234 DB=/tmp/x/hocuspocus.sqlite node hocuspocus-server.cjs
'use strict'
const { Server } = require('@hocuspocus/server')
const { SQLite } = require('@hocuspocus/extension-sqlite')

const port = parseInt(process.env.PORT || '1234', 10)
const database = process.env.DB || ':memory:'

const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  extensions: [new SQLite({ database })],
})

server.listen().then(() => {
  console.log(`hocuspocus listening on 127.0.0.1:${port} db=${database}`)
})
