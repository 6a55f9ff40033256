// Preloaded into the js-ipfs daemon by scripts/ipfs_daemon.sh (NODE_OPTIONS=--require).
//
// js-ipfs 0.18.1's CLI exits on any unhandled promise rejection (ipfs/src/cli.js). A read that
// its client gives up on (IpfsStore's probe_timeout, or the request's own `timeout` option)
// while the daemon still wants a block of the file, as for a canonical DAG whose root and first
// leaf the daemon holds and a later leaf it lacks, rejects ipfs-bitswap's want with "Want for
// <cid> aborted" after the request is gone: nobody handles it, and the daemon exited, so one
// site able to place such a root in a reader's daemon stopped every read there (h-333). This
// guard keeps the CLI's handler for every other rejection and logs that one instead: the
// request it belonged to is already over, the daemon's state is unchanged.
'use strict'

const ABORTED_WANT = /^(Failed to cat file: )?Want for \S+ aborted$/
const once = process.once.bind(process)

function guard (listener) {
  const guarded = function (err, promise) {
    const message = err && typeof err.message === 'string' ? err.message : ''
    if (ABORTED_WANT.test(message)) {
      console.error(`fedtrail guard: ${message} (a read its client gave up on; the daemon goes on)`)
      once('unhandledRejection', guarded) // `once`: the next rejection is guarded too
      return
    }
    return listener.call(this, err, promise)
  }
  return guarded
}

process.once = function (event, listener) {
  if (event === 'unhandledRejection' && typeof listener === 'function') {
    return once(event, guard(listener))
  }
  return once(event, listener)
}
