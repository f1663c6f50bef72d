// SPDX-License-Identifier: MIT
// The Node end of the WebSocket interoperability test (ws_interop.sh),
// built on the ws package installed here by tests/deps.sh.
//
//   node ws_peer.mjs client URL CA_FILE
//       Against tests/interop/ws_peer (tether) in server mode: the echo
//       matrix (0 B to 16 MiB, binary and text, whole and fragmented),
//       a burst of small messages tether sends with tether_conn_send_batch(),
//       subprotocol choice, ping/pong, close codes both ways, invalid
//       UTF-8 (1007), an oversized fragmented message (1009), a refused
//       origin (403) and the health check. Prints "ok: ..." per check and
//       exits 0 when all passed.
//
//   node ws_peer.mjs server CERT KEY|- 
//       An echo server on 127.0.0.1 (wss when CERT is not "-"), printing
//       "listening on PORT". It echoes with the same type, sending messages
//       of 1000 bytes or more as three fragments; a text message
//       "close:CODE:REASON" makes it close with that code; it pings every
//       new connection and prints "pong from client: PAYLOAD".
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { WebSocket, WebSocketServer } from 'ws';

const [mode, a1, a2] = process.argv.slice(2);
let failures = 0;

function ok(msg) {
    console.log(`ok: ${msg}`);
}

function fail(msg) {
    failures++;
    console.log(`FAIL: ${msg}`);
}

function pattern(n, seed, text) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
        b[i] = text ? 0x61 + ((i + seed) % 26) : (i * 31 + seed) & 0xff;
    }
    return b;
}

// ---- client --------------------------------------------------------------

function open(url, ca, opts = {}) {
    return new WebSocket(url, opts.protocols ?? [], {
        ca,
        origin: opts.origin ?? 'http://interop.test',
        maxPayload: 64 * 1024 * 1024,
        headers: { 'X-Interop': 'node' },
    });
}

// Resolves with the next message, the close, or an error of ws.
function events(ws) {
    const queue = [];
    const waiters = [];
    const push = (e) => (waiters.length ? waiters.shift()(e) : queue.push(e));
    ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
    ws.on('pong', (data) => push({ kind: 'pong', data }));
    ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
    ws.on('error', (err) => push({ kind: 'error', err }));
    ws.on('unexpected-response', (req, res) => push({ kind: 'http', status: res.statusCode }));
    return () =>
        new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error('timed out waiting for an event')), 60000);
            const done = (e) => {
                clearTimeout(t);
                resolve(e);
            };
            if (queue.length) {
                done(queue.shift());
            } else {
                waiters.push(done);
            }
        });
}

function opened(ws) {
    return new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
}

async function sendFragmented(ws, buf, binary) {
    const third = Math.floor(buf.length / 3);
    const parts = [buf.subarray(0, third), buf.subarray(third, 2 * third), buf.subarray(2 * third)];
    for (let i = 0; i < 3; i++) {
        await new Promise((resolve, reject) =>
            ws.send(parts[i], { binary, fin: i === 2 }, (e) => (e ? reject(e) : resolve())));
    }
}

async function client(url, caFile) {
    const ca = url.startsWith('wss:') ? fs.readFileSync(caFile) : undefined;

    // 1. The echo matrix, subprotocols, ping/pong, and a client close code.
    let ws = open(`${url}/echo?n=1`, ca, { protocols: ['x.v0', 'echo.v1'] });
    let next = events(ws);
    await opened(ws);
    ws.protocol === 'echo.v1' ? ok('subprotocol echo.v1 chosen') : fail(`protocol ${ws.protocol}`);
    const sizes = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, 16 << 20];
    const sent = [];
    for (const [i, n] of sizes.entries()) {
        for (const text of [false, true]) {
            for (const frag of [false, true]) {
                if (frag && n < 3) {
                    continue;
                }
                const b = pattern(n, i, text);
                sent.push({ n, text, frag, b });
                if (frag) {
                    await sendFragmented(ws, b, !text);
                } else {
                    ws.send(b, { binary: !text });
                }
            }
        }
    }
    let good = 0;
    for (const s of sent) {
        const e = await next();
        if (e.kind !== 'message') {
            fail(`echo of ${s.n} bytes: got ${e.kind} ${e.code ?? ''} ${e.reason ?? e.err ?? ''}`);
            process.exit(1);
        }
        const what = `${s.n} B ${s.text ? 'text' : 'binary'}${s.frag ? ' fragmented' : ''}`;
        if (e.isBinary !== !s.text || !Buffer.from(e.data).equals(s.b)) {
            fail(`echo of ${what}: ${e.data.length} B, binary=${e.isBinary}`);
        } else {
            good++;
        }
    }
    good === sent.length ? ok(`${good} echoes (0 B to 16 MiB, text/binary, whole/fragmented)`) : 0;
    ws.ping(Buffer.from('ping-payload'));
    let e = await next();
    while (e.kind === 'message') {
        e = await next();
    }
    e.kind === 'pong' && e.data.toString() === 'ping-payload'
        ? ok('pong carries the ping payload')
        : fail(`after ping: ${e.kind} ${e.data}`);
    ws.close(4001, 'client done');
    e = await next();
    while (e.kind === 'pong') {
        e = await next();
    }
    e.kind === 'close' && e.code === 4001
        ? ok('client close 4001 echoed by tether')
        : fail(`client close: ${e.kind} ${e.code}`);

    // 1b. A burst of small messages the tether server sends in two
    // tether_conn_send_batch() calls (ws_peer.c, send_burst()): message j
    // is j % 260 bytes, binary in the first half and text in the second.
    ws = open(`${url}/echo`, ca);
    next = events(ws);
    await opened(ws);
    const burst = 2000;
    ws.send(`burst:${burst}`, { binary: false });
    let bgood = 0;
    for (let j = 0; j < burst; j++) {
        const m = await next();
        if (m.kind !== 'message') {
            fail(`burst message ${j}: got ${m.kind} ${m.code ?? ''} ${m.reason ?? m.err ?? ''}`);
            process.exit(1);
        }
        const text = j >= burst / 2;
        const want = pattern(j % 260, j, text);
        if (m.isBinary !== !text || !Buffer.from(m.data).equals(want)) {
            fail(`burst message ${j}: ${m.data.length} B, binary=${m.isBinary}`);
            break;
        }
        bgood++;
    }
    bgood === burst ? ok(`${burst} batched messages from tether, in order (0-259 B, binary then text)`) : 0;
    ws.close(1000);
    let bc = await next();
    while (bc.kind !== 'close') {
        bc = await next();
    }

    // 2. The server closes with a code and a reason.
    ws = open(`${url}/echo`, ca);
    next = events(ws);
    await opened(ws);
    ws.send('close:4003:server bye', { binary: false });
    e = await next();
    e.kind === 'close' && e.code === 4003 && e.reason === 'server bye'
        ? ok('tether_ws_close(4003, "server bye") reached ws')
        : fail(`server close: ${e.kind} ${e.code} ${e.reason}`);

    // 3. Invalid UTF-8 in a text message: 1007.
    ws = open(`${url}/echo`, ca);
    next = events(ws);
    await opened(ws);
    ws.send(Buffer.from([0x61, 0xc0, 0xaf]), { binary: false });
    e = await next();
    e.kind === 'close' && e.code === 1007 ? ok('invalid UTF-8 closed with 1007') : fail(`utf8: ${e.kind} ${e.code}`);

    // 4. A fragmented message whose running total passes max_msg: 1009.
    ws = open(`${url}/echo`, ca);
    next = events(ws);
    await opened(ws);
    const nine = Buffer.alloc(9 << 20);
    ws.send(nine, { binary: true, fin: false });
    ws.send(nine, { binary: true, fin: true });
    e = await next();
    e.kind === 'close' && e.code === 1009 ? ok('18 MiB in fragments closed with 1009') : fail(`size: ${e.kind} ${e.code}`);

    // 5. An origin that is not on the allow-list: 403.
    ws = open(`${url}/echo`, ca, { origin: 'http://evil.test' });
    next = events(ws);
    e = await next();
    e.kind === 'http' && e.status === 403 ? ok('refused origin answered 403') : fail(`origin: ${e.kind} ${e.status}`);
    ws.terminate();

    // 6. The health check.
    const lib = url.startsWith('wss:') ? https : http;
    const hurl = url.replace(/^ws/, 'http') + '/health';
    const body = await new Promise((resolve, reject) => {
        lib.get(hurl, { ca }, (res) => {
            let b = `${res.statusCode} `;
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(b));
        }).on('error', reject);
    });
    body === '200 ok\n' ? ok('health check answered 200 ok') : fail(`health: ${JSON.stringify(body)}`);

    console.log(failures === 0 ? 'node client ok' : `${failures} failures`);
    process.exit(failures === 0 ? 0 : 1);
}

// ---- server --------------------------------------------------------------

function server(certFile, keyFile) {
    let base;
    if (certFile !== '-') {
        base = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
    } else {
        base = http.createServer();
    }
    const wss = new WebSocketServer({
        server: base,
        maxPayload: 64 * 1024 * 1024,
        handleProtocols: (protocols) => (protocols.has('echo.v1') ? 'echo.v1' : false),
    });
    wss.on('connection', (ws, req) => {
        console.log(`connection origin=${req.headers.origin} x-interop=${req.headers['x-interop']}`);
        ws.on('pong', (d) => console.log(`pong from client: ${d}`));
        ws.ping(Buffer.from('hello-tether'));
        ws.on('message', (data, isBinary) => {
            const b = Buffer.from(data);
            if (!isBinary && b.toString().startsWith('close:')) {
                const [, code, ...reason] = b.toString().split(':');
                ws.close(Number(code), reason.join(':'));
                return;
            }
            if (b.length >= 1000) {
                const t = Math.floor(b.length / 3);
                ws.send(b.subarray(0, t), { binary: isBinary, fin: false });
                ws.send(b.subarray(t, 2 * t), { binary: isBinary, fin: false });
                ws.send(b.subarray(2 * t), { binary: isBinary, fin: true });
            } else {
                ws.send(b, { binary: isBinary });
            }
        });
        ws.on('close', (code, reason) => console.log(`closed code=${code} reason=${reason}`));
    });
    base.listen(0, '127.0.0.1', () => console.log(`listening on ${base.address().port}`));
    process.on('SIGTERM', () => process.exit(0));
}

// ---- hold: an idle client that waits for the server to close it --------

async function hold(url, caFile) {
    const ca = url.startsWith('wss:') ? fs.readFileSync(caFile) : undefined;
    const ws = open(`${url}/hold`, ca);
    const next = events(ws);
    await opened(ws);
    console.log('held');
    const e = await next();
    if (e.kind !== 'close') {
        console.log(`FAIL: expected the close, got ${e.kind}`);
        process.exit(1);
    }
    console.log(`closed code=${e.code} reason=${e.reason}`);
    process.exit(0);
}

if (mode === 'hold') {
    hold(a1, a2).catch((e) => {
        console.log(`FAIL: ${e.stack}`);
        process.exit(1);
    });
} else if (mode === 'client') {
    client(a1, a2).catch((e) => {
        console.log(`FAIL: ${e.stack}`);
        process.exit(1);
    });
} else if (mode === 'server') {
    server(a1, a2);
} else {
    console.error('usage: node ws_peer.mjs client|hold URL CA | server CERT|- KEY');
    process.exit(2);
}
