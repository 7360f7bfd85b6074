// A proxyless gRPC client in Node: @grpc/grpc-js with @grpc/grpc-js-xds, no sidecar.
// The Node twin of `tests/grpc/echo.py client-xds` (same commands, same answers): channels
// to `xds:///SERVICE` targets, resolved through the control plane named by the bootstrap in
// GRPC_XDS_BOOTSTRAP (`meshplane bootstrap --grpc`), kept open across calls. Reads one JSON
// command per line on stdin ({"target", "method", "payload", "count", "metadata",
// "timeout", "until", "max_seconds"}) and prints one JSON line per command:
// {"ok": true, "replies": [...]} or {"ok": false, "code", "details", "replies"}.
//
// With the argument `xds-credentials`, channels use gRPC's xDS channel credentials (gRFC
// A29) with plaintext as the fallback: mTLS where the control plane's clusters ask for it,
// with the bootstrap's certificate provider (`meshplane bootstrap --grpc --certs-dir`).
//
// No generated code: `meshplane.test.Echo` carries raw bytes (see tests/grpc/echo.py).
'use strict';

const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const readline = require('node:readline');

grpcXds.register();

const SERVICE = 'meshplane.test.Echo';
const identity = (b) => b;
const clients = new Map();
const credentials = process.argv[2] === 'xds-credentials'
  ? new grpcXds.XdsChannelCredentials(grpc.credentials.createInsecure())
  : grpc.credentials.createInsecure();

function client(target) {
  if (!clients.has(target)) {
    clients.set(target, new grpc.Client(target, credentials));
  }
  return clients.get(target);
}

function unary(c, method, payload, metadata, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata || {})) md.set(k, v);
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    c.makeUnaryRequest(`/${SERVICE}/${method}`, identity, identity, Buffer.from(payload), md,
      { deadline }, (err, reply) => (err ? reject(err) : resolve(reply.toString())));
  });
}

async function run(spec) {
  const c = client(spec.target);
  const replies = [];
  const count = spec.count ?? 1;
  const giveUp = Date.now() + (spec.max_seconds ?? 10) * 1000;
  for (;;) {
    try {
      replies.push(await unary(c, spec.method ?? 'Unary', spec.payload ?? '', spec.metadata,
        spec.timeout ?? 5));
    } catch (err) {
      return { ok: false, code: grpc.status[err.code] ?? String(err.code), details: err.details ?? '', replies };
    }
    if (spec.until !== undefined) {
      if (replies[replies.length - 1].startsWith(spec.until)) return { ok: true, replies };
      if (Date.now() > giveUp) {
        return { ok: false, code: 'TIMEOUT', details: `no reply from ${spec.until}`, replies };
      }
    } else if (replies.length >= count) {
      return { ok: true, replies };
    }
  }
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    process.stdout.write(JSON.stringify(await run(JSON.parse(line))) + '\n');
  }
  for (const c of clients.values()) c.close();
  process.exit(0);
}

main();
