// SPDX-License-Identifier: MIT
// A WebSocket chat client for examples/chat_server --ws, as a browser
// running examples/chat.html would be: every line of stdin is sent as one
// text message, every message received is printed as one line. At the end
// of stdin it closes with 1000 and exits 0; if the server closes first it
// prints "closed CODE REASON" and exits 0 as well.
//
//   node chat_peer.mjs ws://127.0.0.1:PORT/chat?nick=dave [CA_FILE]
import fs from 'node:fs';
import readline from 'node:readline';
import { WebSocket } from 'ws';

const [url, caFile] = process.argv.slice(2);
const ws = new WebSocket(url, { ca: caFile ? fs.readFileSync(caFile) : undefined });
const pending = [];
let open = false;
let ending = false;

ws.on('open', () => {
    open = true;
    console.log('connected');
    for (const l of pending.splice(0)) {
        ws.send(l);
    }
    if (ending) {
        ws.close(1000, 'bye');
    }
});
ws.on('message', (data, isBinary) => console.log(`${isBinary ? '(binary) ' : ''}${data}`));
ws.on('close', (code, reason) => {
    console.log(`closed ${code} ${reason}`);
    process.exit(0);
});
ws.on('error', (e) => {
    console.error(`error: ${e.message}`);
    process.exit(1);
});
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (l) => (open ? ws.send(l) : pending.push(l)));
rl.on('close', () => {
    ending = true;
    if (open) {
        ws.close(1000, 'bye');
    }
});
