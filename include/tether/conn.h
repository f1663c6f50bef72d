/* SPDX-License-Identifier: MIT */
/**
 * @file conn.h
 * @brief Connections and listeners: dial, listen, send and receive messages.
 *
 * @defgroup conn Connections
 * @brief Message-oriented connections over TCP, TLS and Unix sockets.
 *
 * **Addresses** are URLs:
 * - `tcp://host:port`, `tcp://127.0.0.1:port`, `tcp://[::1]:port`
 * - `tls://host:port` (TLS over TCP; see the TLS group)
 * - `unix:///path/to/socket` (a filesystem socket)
 * - `unix://@name` (a Linux abstract socket)
 * - `tcp+srv://_service._tcp.example.com` and
 *   `tls+srv://_service._tcp.example.com` (dialling only): the servers are
 *   found through DNS SRV records (RFC 2782); see "Service discovery" below.
 *   The name must have the form `_service._proto.domain` and the URL has no
 *   port: the records give the ports.
 *
 * For tether_listen(), the host `*` or `0.0.0.0` listens on
 * every IPv4 address, `tcp://[::]:port` on every IPv6 (and, where the system
 * allows, IPv4) address, and port 0 picks a free port (see
 * tether_listener_port()).
 *
 * **Connecting to a name.** tether_conn_dial() never blocks. A numeric host
 * is used as it is. `localhost` (also `localhost.` and `*.localhost`, RFC
 * 6761) means ::1 and 127.0.0.1 without asking any DNS server. Any other
 * name is looked up, A and AAAA together, on the loop's asynchronous
 * resolver (c-ares): /etc/hosts first, then the DNS servers of
 * /etc/resolv.conf or of tether_loop_opts::dns_servers. Every dial looks the
 * name up again, so a service that moved is found by the next connection.
 * tether_conn_opts::family restricts all of this to IPv4 or IPv6.
 *
 * Every address is a candidate, and they are tried with Happy Eyeballs
 * (RFC 8305): the families interleaved, starting with the preferred one
 * (RFC 6724 order, usually IPv6); the next attempt starts after
 * tether_conn_opts::attempt_delay_ms while earlier attempts keep running,
 * or at once when an attempt fails; the first attempt to connect wins and
 * the others are closed at once.
 *
 * tether_conn_opts::connect_timeout_ms bounds the whole set-up: resolution,
 * every attempt and, for `tls://`, the handshake. In addition each attempt
 * is abandoned after max(2 s, L / n), where L is the time left before that
 * deadline when the attempt starts and n the number of candidates not yet
 * started (itself included), so that one dead address cannot use up the
 * time of the addresses after it.
 *
 * A failed dial has a distinct code (see tether_conn_dial()) and
 * tether_conn_last_error() says what was tried, for example
 * `connect to tcp://db.test:5432 failed: 2 addresses tried: [::1]:5432
 * refused; 127.0.0.1:5432 timed out after 3000 ms`.
 *
 * **Service discovery (DNS SRV).** For `tcp+srv://` and `tls+srv://` the
 * dial first asks DNS (the loop's resolver, DNS servers only, not
 * /etc/hosts) for the SRV records of the name. The targets are tried one
 * after the other in RFC 2782 order: the lowest priority value first, and
 * within one priority a weighted random choice (a target with twice the
 * weight is tried first twice as often; one of weight 0 seldom goes first,
 * with a chance of 1 in the sum of the weights plus 1, and targets that all
 * have weight 0 are tried in random order). Each target is dialled
 * like `tcp://target:port` (Happy Eyeballs over its addresses), and when all
 * of its addresses fail the next target starts at once. One
 * tether_conn_opts::connect_timeout_ms covers the SRV lookup and every
 * target, and each attempt's share of it counts the targets still waiting.
 * For `tls+srv://` the certificate must name the **target** that was
 * connected to (e.g. `a.example.com`), not the SRV name, as RFC 6125 and
 * gRPC have it (SRV-ID certificates are not checked);
 * tether_tls_opts::server_name overrides it as for `tls://`. The SRV answer is kept per loop for its TTL (the
 * smallest of its records, at most one day; failures are not kept), and
 * every dial after that asks again, so a #tether_client, which dials anew
 * on each reconnect, moves to servers added to DNS and away from servers
 * removed from it once the TTL has passed. Errors say what happened:
 * `no SRV records for _chat._tcp.example.com`, `_chat._tcp.example.com: the
 * service is not available (its SRV target is ".", RFC 2782)` (both
 * #TETHER_ENOTFOUND, as is a name that does not exist), or `all 3 SRV
 * targets failed: a.example.com:7001 refused; b.example.com:7002 (host
 * b.example.com not found); ...` with the most telling code of the
 * targets' (see tether_conn_dial()).
 *
 * **Messages.** tether_conn_send() takes a whole message and the
 * `on_message` callback delivers whole messages, in order, however TCP cut
 * the stream. The framing (see the framing group) is chosen per connection.
 *
 * **Backpressure.** Every connection has a send queue: the bytes accepted
 * by tether_conn_send() and not yet written to the socket, framing included
 * (tether_conn_queued()). The rule, in one sentence: tether_conn_send()
 * returns #TETHER_EAGAIN, and queues nothing, when the bytes already queued
 * have reached tether_conn_opts::send_hwm at the moment of the call;
 * otherwise it queues the whole message, even one that takes the queue past
 * `send_hwm` (so the queue may exceed the mark by up to one message, and a
 * message larger than `send_hwm` is accepted whenever the queue is below
 * it). After a #TETHER_EAGAIN, `on_drain` runs once, when the queue has
 * fallen to tether_conn_opts::send_lwm; a send from there always finds
 * room. Nothing is dropped: a refused message is the caller's to keep.
 *
 * A relay that forwards what one connection receives to another holds the
 * one refused message and stops reading until `on_drain`:
 * @code
 * struct relay { tether_conn *in, *out; uint8_t *held; size_t held_len; };
 *
 * static void in_on_message(tether_conn *in, const uint8_t *data, size_t len, void *ud)
 * {
 *     struct relay *r = ud;
 *     if (tether_conn_send(r->out, data, len) == TETHER_EAGAIN) {
 *         r->held = malloc(len);              // data is borrowed: copy it
 *         memcpy(r->held, data, len);
 *         r->held_len = len;
 *         tether_conn_pause(in);              // no more messages until on_drain
 *     }
 * }
 *
 * static void out_on_drain(tether_conn *out, void *ud)  // the queue is at send_lwm
 * {
 *     struct relay *r = ud;
 *     if (r->held != NULL && tether_conn_send(out, r->held, r->held_len) == TETHER_OK) {
 *         free(r->held);
 *         r->held = NULL;
 *         tether_conn_resume(r->in);          // order kept: the held one went first
 *     }
 * }
 * @endcode
 *
 * **Lifecycle and callbacks.** A connection from tether_conn_dial() reports
 * its outcome once through `on_connect`. Every connection handle, dialled or
 * accepted, ends with exactly one `on_close` call that carries the reason;
 * it is the last callback for that handle, and the library frees the handle
 * when it returns. All callbacks run on the loop's thread, never from inside
 * the call that caused them, and it is safe to call tether_conn_close(),
 * tether_conn_abort() or tether_conn_send() from inside any of them.
 *
 * **Liveness, heartbeats and timeouts.** Everything here is off by default
 * on dialled connections; accepted connections reap slow and stuck peers
 * by default (see "Slow and stuck peers" below). All is set per
 * connection in #tether_conn_opts:
 * - TCP keepalive (`keepalive`, `keepalive_idle_ms`,
 *   `keepalive_interval_ms`, `keepalive_count`) and TCP_USER_TIMEOUT
 *   (`user_timeout_ms`), on dialled and accepted TCP sockets, let the
 *   kernel notice a peer that vanished. They work with every framing and
 *   with any peer, but a proxy or load balancer in between answers for the
 *   real peer, and keepalive only probes an idle connection.
 * - Heartbeats (`heartbeat_ms`, `heartbeat_misses`) are pings and pongs
 *   between the two tether endpoints themselves, end to end through any
 *   proxy; they measure the round-trip time (tether_stats::rtt_us).
 * - `idle_timeout_ms` closes a connection on which nothing was received for
 *   a while, `frame_timeout_ms` one whose peer started a frame and does not
 *   finish it (a slowloris peer), `write_timeout_ms` one whose queued
 *   output makes no progress (a peer that stopped reading, which would
 *   otherwise hold its queue, up to the high-water mark, forever).
 * - `max_age_ms` closes a connection gracefully after a while (±10 %
 *   jitter), so that a long-lived client re-resolves the name, spreads over
 *   new servers and re-checks the certificate; a reconnecting client
 *   (tether_client_new()) reconnects at once. Where both ends negotiated
 *   control frames this is a drain (see "Draining: GOAWAY"), bounded by
 *   `close_timeout_ms`, so nothing in flight is lost.
 *
 * Each failure ends the connection with #TETHER_ETIMEDOUT and a detail
 * naming the timeout, e.g. `heartbeat timeout: 3 pings unanswered, nothing
 * received for 4000 ms (interval 1000 ms)`. The checks cost nothing per message: the
 * connection only records when it last read and wrote, and one coarse
 * timer per connection compares those times with the limits.
 *
 * These closes (and `max_age_ms`) are clean: where both ends negotiated
 * control frames (see the wire format below) a GOAWAY frame with the
 * reason goes out first, behind what is already queued; then the queue is
 * flushed and the transport shut down (TLS close_notify, then FIN), as by
 * tether_conn_close(). A plain len32 peer sees only the end of the stream,
 * and over TLS a proper close_notify rather than a truncation. A peer that
 * does not read (a write timeout) may take neither: close_timeout_ms
 * (or write_timeout_ms, if shorter) bounds the attempt, and `on_close`
 * still reports the timeout that started it, not "close timed out". On
 * the other side, a tether connection that receives GOAWAY closes at once
 * with #TETHER_EOF ("the peer closed the connection cleanly") and the
 * detail `closed by peer: ` followed by the peer's text, e.g. `closed by
 * peer: idle timeout (nothing received for 4000 ms)`: the deadline was the
 * peer's, not its own, so it
 * is not reported as #TETHER_ETIMEDOUT.
 *
 * While reading is paused (tether_conn_pause()) silence is expected, so the
 * idle, frame and heartbeat checks rest until tether_conn_resume(). The
 * write check does not: a peer that stops reading while the application
 * paused its input is still reaped.
 *
 * **Slow and stuck peers.** Several option fields take
 * #TETHER_ROLE_DEFAULT, which tether_conn_opts_init() sets: a dialled
 * connection turns them all off (as before), and an accepted connection
 * gets these server defaults:
 * - `frame_timeout_ms` 30000 with `frame_min_rate` 1024: a frame that has
 *   started to arrive must either complete or bring at least 1024 bytes/s,
 *   measured over each 30 s window (Apache mod_reqtimeout's MinRate idea,
 *   without credit beyond one window). A peer trickling a byte a second,
 *   or sending a header and nothing more, is closed 30 s after its frame
 *   started; a 16 MiB message over a 100 kB/s link is not cut. A frame
 *   of which nothing at all arrives for a whole window is closed then,
 *   whatever came before.
 * - `write_timeout_ms` 60000 with `write_min_rate` 1024: while output is
 *   queued, the peer must receive at least 1024 bytes/s over each 60 s
 *   window (nginx's `send_timeout` is 60 s). On TCP this counts what the
 *   peer acknowledged (TCP_INFO), not what the kernel's send buffer took:
 *   autotuning keeps growing that buffer for minutes for a peer that reads
 *   nothing. The first window starts once the queue has stayed non-empty
 *   for 1 s (so connections whose queue drains at once pay nothing), and
 *   no write progress at all for a window also closes. A peer that stops
 *   reading is thus closed about 61 s after its output got stuck (up to
 *   two windows if it read quickly before it stopped), plus at most
 *   close_timeout_ms (10 s) for the clean close it cannot take; then its
 *   queue is freed.
 * - `keepalive_idle_ms` resolves to TCP keepalive after 60 s idle, probes
 *   every 10 s, 6 probes; `user_timeout_ms` to 120000 (TCP_USER_TIMEOUT):
 *   a peer that vanished (a half-open connection) is dropped by the kernel
 *   within about 2 minutes, idle or with data in flight.
 *
 * The memory budget (tether_loop_set_mem_limit()) stops reading from the
 * heaviest connections without pausing them: their checks keep running,
 * so under sustained overload a connection held back longer than its frame
 * window is closed like a slow one, which frees its memory for the others.
 *
 * A peer that is alive but silent is not closed by default (set
 * `idle_timeout_ms` for that). Set a field to 0 to turn its server default
 * off, or to a value of your own. The worst case for a slow or stuck peer
 * is thus bounded: 30 s for a trickled frame (60 s if it was fast before
 * it slowed down), about 71 s for a non-reader, about 2 min for a vanished
 * host.
 *
 * **Heartbeat wire format** (#TETHER_FRAMING_LEN32 only). A len32 header
 * whose first byte is 0xFF would announce a message of at least 0xFF000000
 * bytes, far above what any tether connection accepts
 * (tether_conn_opts::max_msg is at most 1 GiB), so such headers carry
 * control frames instead:
 *
 *     0xFF | type (1 byte) | payload length (2 bytes, big-endian) | payload
 *
 * The types and their payloads:
 * - 1, HELLO: version (1 byte, = 1), flags (1 byte: capability bits),
 *   the sender's heartbeat interval in ms (4 bytes, big-endian; 0 = "I
 *   send no pings"). At least 6 bytes; receivers ignore any bytes after
 *   the sixth. For example `FF 01 00 06 01 00 00 00 03 E8` announces
 *   1000 ms and no capabilities. Flag bit 0 (0x01): "I take calls"
 *   (tether_conn_opts::calls; tether/delivery.h); bit 1 (0x02): "I take
 *   acknowledgements" (a client with tether_client_opts::at_least_once;
 *   every accepted tether connection announces it in its answer);
 *   receivers ignore bits they do not know. A capability is in use only
 *   when both HELLOs carry its bit.
 * - 2, PING: 1 to 64 opaque bytes (tether sends 8: its clock in µs,
 *   big-endian).
 * - 3, PONG: the payload of the PING it answers, unchanged.
 * - 4, GOAWAY: flags (1 byte), reason (2 bytes, big-endian), then a short
 *   human-readable text (printable ASCII, up to 200 bytes, no NUL; the
 *   rest of the payload). At least 3 bytes. For example
 *   `FF 04 00 05 00 00 01 69 64` is flags 0, reason 1, text "id". Flags:
 *   - 0x00, "closing now": the sender closes right after it. A receiver
 *     reports the text (non-printable bytes replaced) and closes; nothing
 *     it sends after the GOAWAY will be read.
 *   - 0x01, "drain": please stop sending new messages and finish; the
 *     sender keeps reading and may still send (replies). See "Draining:
 *     GOAWAY" below.
 *   - 0x03, "drain, done": the sender has sent its last data message (it
 *     precedes this frame) and will send none after it; control frames and
 *     the close may follow.
 *   The other bits are reserved (sent as 0, ignored). Reasons: 0 none
 *   given, 1 idle timeout, 2 frame timeout (a frame too slow), 3 write
 *   timeout (the receiver did not read), 4 heartbeat timeout, 5 maximum
 *   connection age, 6 shutting down; receivers treat unknown reasons as 0.
 * - 5, CALL, and 6, REPLY (only where both HELLOs carry flag bit 0): the
 *   call id (4 bytes, big-endian, never 0). The next frame is an ordinary
 *   len32 data frame holding the request (CALL) or the reply to the
 *   request with that id (REPLY); the sender queues both as one piece. For
 *   example `FF 05 00 04 00 00 00 07 00 00 00 02 68 69` is request 7,
 *   "hi". Elsewhere they are protocol errors like an unknown type.
 * - 7, ACK, and 8, RESUME (only where both HELLOs carry flag bit 1; see
 *   "At-least-once streams" in tether/reconnect.h). RESUME, sender to
 *   receiver: the sender's resume token (8 bytes) and the sequence number
 *   of the next data frame (8 bytes, big-endian, never 0); each data frame
 *   after it (frames tagged by CALL or REPLY excepted) is numbered one
 *   higher, nothing is added to the data frames. The sender sends RESUME
 *   before its first data frame and wherever the numbering jumps. ACK,
 *   receiver to sender: the highest sequence number received (8 bytes),
 *   cumulative, sent after a read batch: at most one per millisecond
 *   unless 256 KiB arrived since the last, the rest within 1 ms (a
 *   sender that waits for each is answered at once). Elsewhere they are protocol
 *   errors like an unknown type.
 *
 * The rules:
 * 1. Only the dialling side speaks first: a connection dialled with
 *    `heartbeat_ms` > 0 sends HELLO as its very first frame. An accepted
 *    connection never sends a control frame before it has received a
 *    HELLO, so a server with heartbeats enabled still serves plain
 *    length-prefixed clients byte for byte as before.
 * 2. Every len32 tether connection, whatever its own settings, answers the
 *    first HELLO it receives with its own (interval 0 when its heartbeats
 *    are off) and then answers every PING with a PONG. So heartbeats can be
 *    turned on in a client whose server runs tether with default options.
 *    A second HELLO, or a PING, PONG or GOAWAY from a peer that has not
 *    sent HELLO, is #TETHER_EPROTO naming the violation, e.g. `protocol
 *    error: the peer sent a second HELLO control frame` or `... a PING
 *    control frame before its HELLO`; so is an unknown type once either
 *    side has sent HELLO, and a malformed payload. An unknown type on a
 *    connection where neither side has is reported as before this
 *    protocol existed: #TETHER_EMSGSIZE, an oversized length.
 * 3. Each side with heartbeats enabled uses the larger of the two announced
 *    intervals; a side with heartbeats off sends no pings. The slower side
 *    decides, and tether never limits how often its peer pings, so a client
 *    can never be cut off for pinging too often. But a peer cannot switch
 *    detection off: its announced interval counts up to twice the own
 *    `heartbeat_ms` at most (and 300000 ms, 5 min), and the result is
 *    capped at half the own `idle_timeout_ms` when that is set (never
 *    below the own `heartbeat_ms`). When the peer did stretch the
 *    interval, silence still closes after the own detection time,
 *    max((heartbeat_misses + 1) × heartbeat_ms, interval + heartbeat_ms),
 *    once a ping is unanswered. A HELLO announcing 0xFFFFFFFF ms to a side
 *    with 1000 ms is thus pinged every 2 s and, silent, closed after 4 s.
 * 4. A side pings once it has received nothing (data or control) for one
 *    interval, then again every interval while the silence lasts; anything
 *    received counts as an answer. When `heartbeat_misses` pings in a row
 *    went unanswered for one interval each, it closes. A peer that vanished
 *    is thus noticed (heartbeat_misses + 1) × interval after the last byte
 *    it sent. Each side also pings once right after the HELLO exchange to
 *    measure the round-trip time.
 * 5. A dialled connection whose HELLO is not answered (nothing at all is
 *    received) within (heartbeat_misses + 1) × heartbeat_ms closes the
 *    same way.
 * 6. Enable heartbeats in a client only toward servers that speak this
 *    protocol (tether, with any options): a plain length-prefixed server
 *    reads the HELLO as an oversized message and closes. The one exception
 *    is a tether_client with `at_least_once` (include/tether/reconnect.h):
 *    when 3 connections in a row end, or stay silent for the HELLO
 *    deadline ((heartbeat_misses + 1) × heartbeat_ms, or 3 s with
 *    heartbeats off), after its HELLO and before any HELLO came back (no
 *    data has been sent on them), it logs a warning (`the server does not speak tether's
 *    control frames ...; falling back to plain len32 without
 *    acknowledgements`) and dials its next connection without HELLO:
 *    plain len32, no acknowledgements, heartbeats or calls on it. The
 *    fallback lasts for that one established connection; the connection
 *    after it asks again.
 *
 * Control frames never reach `on_message`, are not counted as messages,
 * and are not subject to the high-water mark (a PONG is skipped, not
 * queued, while the send queue is above it).
 *
 * **Draining: GOAWAY.** A connection on which both ends negotiated control
 * frames can be closed without losing anything in flight, as HTTP/2 and
 * gRPC do with GOAWAY (tether_conn_goaway(), tether_listener_shutdown(),
 * tether_conn_opts::max_age_ms):
 * 1. A asks: it sends GOAWAY flags 0x01 (drain) with a reason and a text,
 *    and goes on reading and writing as before.
 * 2. B receives it: B queues GOAWAY flags 0x03 ("done") behind everything
 *    it had queued, so its last messages go out first, and from then on
 *    refuses new sends (tether_conn_send() returns #TETHER_ECLOSED,
 *    tether_conn_drain_state() says #TETHER_DRAIN_ASKED_BY_PEER); its
 *    `on_goaway` runs. B keeps reading: what A sends is still delivered.
 * 3. A receives B's "done": B sends nothing more. A queues its own "done"
 *    behind its last messages (the replies to what B sent) and closes as
 *    tether_conn_close() does: flush, TLS close_notify, FIN. Its `on_close`
 *    gets #TETHER_OK, detail `drained (GOAWAY): ` and its text.
 * 4. B receives A's "done", after everything A sent, and closes the same
 *    way; its `on_close` gets #TETHER_EOF, detail `closed by peer after a
 *    drain (GOAWAY): ` and A's text.
 * So each side closes once it has sent and received "done": every message
 * either side's send accepted is delivered, in both directions. If both
 * ask at once, each answers the other's request and the exchange ends the
 * same way. A messages B still sends between its request and its "done"
 * (before it saw the request) are delivered; a reply B would send after
 * its "done" is refused, as HTTP/2 refuses a new stream after GOAWAY.
 * A's deadline turns a drain that does not finish into a close (GOAWAY
 * "closing now", #TETHER_ETIMEDOUT). A peer that never sent HELLO cannot be
 * asked; it is closed gracefully instead (what it sends meanwhile may be
 * lost). A #tether_client that is asked dials a new connection at once and
 * sends its unsent messages there (see tether_client_new()). Older tether
 * versions treat any GOAWAY as "closing now".
 *
 * **Behind a load balancer: the PROXY protocol.** A listener with
 * tether_listen_opts::proxy_protocol requires HAProxy's PROXY protocol
 * header (version 1, the text line, and/or version 2, the binary header;
 * the two are told apart by their signatures) at the start of every
 * accepted connection. It is read before the TLS handshake and the first
 * frame, never more bytes than the header, within a size limit (107 bytes
 * for v1, 16 + #TETHER_PROXY_V2_MAX_LEN for v2) and a deadline
 * (tether_listen_opts::proxy_timeout_ms). Then:
 * - tether_conn_peer(), and the texts that name the peer, report the
 *   client the header announced (IPv4, IPv6 or a Unix path);
 *   tether_conn_proxy_peer() reports the proxy; tether_conn_proxy_info()
 *   and tether_conn_proxy_tlv() give the rest (v2 TLVs such as ALPN and
 *   authority are kept as received; a CRC32C TLV is verified);
 * - a v2 `LOCAL` connection (a proxy's health check), a v1 `UNKNOWN` line
 *   and a v2 header with an unspecified family or transport are accepted
 *   as ordinary connections with the real peer address;
 * - a missing, malformed or late header closes the connection, which never
 *   reaches `on_accept`: the listener's `on_error` gets #TETHER_EPROTO
 *   (#TETHER_EMSGSIZE for a header over the limit, #TETHER_ETIMEDOUT after
 *   the deadline, #TETHER_EOF or #TETHER_ETRUNCATED if the peer closed
 *   first) and a detail naming the cause and the proxy, e.g.
 *   `PROXY protocol header from 127.0.0.1:40112: PROXY protocol v1 header
 *   has a bad source port "080" (0..65535, no heading zero)`.
 *
 * As the specification demands, a listener never guesses whether a header
 * is present: whoever can reach it can claim any address, so only trusted
 * proxies should reach it. A dialled connection sends a header with
 * tether_conn_opts::proxy_protocol.
 *
 * **Threading.** Loop thread only (see the loop group).
 * @{
 */
#ifndef TETHER_CONN_H
#define TETHER_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/error.h>
#include <tether/export.h>
#include <tether/framing.h>
#include <tether/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A connection (opaque). */
typedef struct tether_conn tether_conn;

/** @brief A listening socket that accepts connections (opaque). */
typedef struct tether_listener tether_listener;

/**
 * @brief Reports the outcome of tether_conn_dial(), exactly once.
 * @param[in] c      The connection.
 * @param[in] status #TETHER_OK when established (for TLS: after the handshake);
 *                   otherwise the error, with details in tether_conn_last_error().
 *                   After a failure, `on_close` follows with the same code.
 * @param[in] ud     The connection's user data.
 */
typedef void (*tether_connect_cb)(tether_conn *c, int status, void *ud);

/**
 * @brief Delivers one whole message.
 * @param[in] c    The connection.
 * @param[in] data The payload, **borrowed**: valid only until the callback
 *                 returns. Copy what you need to keep.
 * @param[in] len  Its length (may be 0).
 * @param[in] ud   The connection's user data.
 */
typedef void (*tether_msg_cb)(tether_conn *c, const uint8_t *data, size_t len, void *ud);

/**
 * @brief Fires when the send queue falls to the low-water mark after
 *        tether_conn_send() returned #TETHER_EAGAIN.
 *
 * Once per refusal: the next tether_conn_send() finds room (the queue is
 * at tether_conn_opts::send_lwm, below `send_hwm`). See "Backpressure" in
 * the connection group for an example.
 * @param[in] c  The connection.
 * @param[in] ud The connection's user data.
 */
typedef void (*tether_drain_cb)(tether_conn *c, void *ud);

/**
 * @brief The last callback of every connection handle, exactly once.
 *
 * The handle is freed when this returns; do not use it afterwards.
 * @param[in] c      The connection.
 * @param[in] reason Why it closed:
 *   - #TETHER_OK: closed by tether_conn_close() (or by
 *     tether_conn_opts::max_age_ms, or at the end of a drain this side
 *     asked for with tether_conn_goaway(); the detail says so), everything
 *     queued was sent;
 *   - #TETHER_ECANCELED: closed by tether_conn_abort() (queued data dropped);
 *   - #TETHER_EOF: the peer closed the connection cleanly; after a GOAWAY
 *     control frame the detail is `closed by peer: ` and the peer's reason
 *     (e.g. its idle timeout), after a drain the peer asked for `closed by
 *     peer after a drain (GOAWAY): ` and its text;
 *   - #TETHER_ECONNRESET: the peer reset it;
 *   - #TETHER_ETRUNCATED: the peer closed in the middle of a message;
 *   - #TETHER_EMSGSIZE, #TETHER_EPROTO: the peer broke the framing;
 *   - #TETHER_ETIMEDOUT: a deadline passed; the detail names which one
 *     ("connect", "heartbeat timeout", "idle timeout", "frame timeout",
 *     "write timeout", "close", or the kernel's TCP_USER_TIMEOUT);
 *   - any other code: the error that ended it (e.g. a failed connect).
 *   tether_conn_last_error() gives the detail while the callback runs.
 * @param[in] ud     The connection's user data.
 */
typedef void (*tether_close_cb)(tether_conn *c, int reason, void *ud);

/**
 * @brief Hands a newly accepted connection to the application.
 *
 * Set per-connection user data with tether_conn_set_userdata() here. The
 * connection's callbacks come from tether_listen_opts::conn_opts.
 * @param[in] l  The listener.
 * @param[in] c  The new connection, owned by the library as always (it ends
 *               with its `on_close`).
 * @param[in] ud tether_listen_opts::userdata.
 */
typedef void (*tether_accept_cb)(tether_listener *l, tether_conn *c, void *ud);

/**
 * @brief Reports a problem on a listener that no connection handle can carry.
 *
 * For example: the process ran out of file descriptors (#TETHER_EMFILE; the
 * listener backs off and retries by itself), or an incoming connection
 * failed before it was established (a TLS handshake error). Informational:
 * the listener keeps running.
 * @param[in] l      The listener.
 * @param[in] err    The TETHER_E* code.
 * @param[in] detail A message naming the cause and, where known, the peer
 *                   address; **borrowed** until the callback returns.
 * @param[in] ud     tether_listen_opts::userdata.
 */
typedef void (*tether_listener_error_cb)(tether_listener *l, int err, const char *detail, void *ud);

/**
 * @brief Releases a buffer handed over with tether_conn_send_zc().
 *
 * Called exactly once per buffer, on the loop thread: once the buffer has
 * been written to the socket (which may happen before
 * tether_conn_send_zc() returns, when the socket takes it at once), or when
 * the connection ends with it still queued (before that connection's
 * `on_close`). It must not call back into that connection's send functions.
 * @param[in] data The buffer.
 * @param[in] ud   The user data given with it.
 */

typedef void (*tether_free_cb)(void *data, void *ud);

/**
 * @brief The peer asked this connection to drain (a GOAWAY control frame
 *        with the drain flag; see "Draining: GOAWAY" in the group).
 *
 * Runs once per connection, on the loop thread, from inside the read path.
 * From this call on, tether_conn_send() on this connection returns
 * #TETHER_ECLOSED: what was queued before still goes out, and messages
 * the peer still sends are still delivered. Open a new connection for new
 * messages (a #tether_client does so by itself). The connection then
 * closes by itself once the peer has finished; its `on_close` gets
 * #TETHER_EOF and the detail `closed by peer after a drain (GOAWAY): ...`.
 * @param[in] c      The connection.
 * @param[in] reason The GOAWAY reason code (#TETHER_GOAWAY_SHUTDOWN,
 *                   #TETHER_GOAWAY_MAX_AGE, ...; unknown values are possible).
 * @param[in] text   The peer's text, non-printable bytes replaced; **borrowed**
 *                   until the callback returns; "" when none.
 * @param[in] ud     The connection's user data.
 */
typedef void (*tether_goaway_cb)(tether_conn *c, unsigned reason, const char *text, void *ud);

/**
 * @brief Reports the end of tether_listener_shutdown(), exactly once.
 * @param[in] loop   The loop the listener was on.
 * @param[in] status #TETHER_OK when every connection finished its drain
 *                   before the deadline; #TETHER_ETIMEDOUT when some had to
 *                   be closed at the deadline (their `on_close` says so).
 * @param[in] ud     The user data given to tether_listener_shutdown().
 */
typedef void (*tether_shutdown_cb)(tether_loop *loop, int status, void *ud);

/**
 * @ingroup dns
 * @brief Address families a dialled connection may use (tether_conn_opts::family).
 */
typedef enum tether_family {
    TETHER_FAMILY_ANY = 0, /**< IPv4 and IPv6, whichever answers first (default). */
    TETHER_FAMILY_V4 = 4,  /**< IPv4 only: only A records are looked up. */
    TETHER_FAMILY_V6 = 6,  /**< IPv6 only: only AAAA records are looked up. */
} tether_family;

/**
 * @brief Options for connections.
 *
 * Initialise with tether_conn_opts_init(), then set what you need. Fields
 * are only ever added at the end, and the `size` field tells the library
 * which ones the caller knows, so programs keep working with newer
 * libraries. Strings and pointers are copied when the connection or listener
 * is created, except tether_conn_opts::framer (see there).
 */
typedef struct tether_conn_opts {
    size_t size;                  /**< Set by tether_conn_opts_init(); do not change. */
    void *userdata;               /**< Passed to every callback of the connection; see
                                       tether_conn_set_userdata() and, for accepted
                                       connections, tether_listen_opts::userdata. */
    tether_connect_cb on_connect; /**< Dial outcome (dialled connections only); may be NULL. */
    tether_msg_cb on_message;     /**< Whole messages; may be NULL to discard them. */
    tether_drain_cb on_drain;     /**< Send queue drained below the low-water mark; may be NULL. */
    tether_close_cb on_close;     /**< Final callback; may be NULL. */
    tether_framing_kind framing;  /**< Framing; default #TETHER_FRAMING_LEN32. */
    const char *line_delim;      /**< #TETHER_FRAMING_LINE delimiter, 1 to 8 bytes; default "\n". */
    const tether_framer *framer; /**< #TETHER_FRAMING_CUSTOM framer; must outlive every
                                      connection that uses it. */
    size_t max_msg;              /**< Largest message accepted or sent; default 16 MiB
                                      (for lines: the longest line). At most 1 GiB. */
    size_t send_hwm;             /**< High-water mark on queued bytes: once the
                                      queue has reached it, tether_conn_send() returns
                                      #TETHER_EAGAIN; below it a message is queued whole.
                                      Default 1 MiB. See "Backpressure" in the group. */
    size_t send_lwm;             /**< Low-water mark: `on_drain` fires when the queue
                                      falls to it. Default a quarter of send_hwm. */
    bool nodelay;                /**< TCP_NODELAY (disable Nagle); default true. */
    int sndbuf;                  /**< SO_SNDBUF in bytes; 0 keeps the system's autotuning. */
    int rcvbuf;                  /**< SO_RCVBUF in bytes; 0 keeps the system's autotuning. */
    int connect_timeout_ms;      /**< Deadline for the whole connection set-up (name
                                      resolution, TCP connect, TLS handshake); default
                                      20000. Negative means none (not recommended). */
    int close_timeout_ms;        /**< How long tether_conn_close() may take to flush the
                                      queue before it aborts; default 10000. */
    int attempt_delay_ms;        /**< Happy Eyeballs "connection attempt delay": while an
                                      attempt is in progress, the next address is tried after
                                      this long (earlier attempts keep running). Default 250;
                                      values are clamped to 100..2000. */
    tether_family family;        /**< Which address families to resolve and connect to;
                                      default #TETHER_FAMILY_ANY. */
    const tether_loop_opts *loop_opts; /**< Blocking API only: options for the private loop
                                            of tether_sync_connect() (DNS servers, DNS
                                            timeout and tries); NULL for defaults. Read
                                            during that call only. Ignored elsewhere: an
                                            event-API connection uses its loop's options. */
    struct tether_tls_config *tls;     /**< TLS configuration for `tls://` URLs (see the TLS
                                            group); the connection or listener takes its own
                                            reference. NULL on a dialled `tls://` URL means a
                                            default client configuration that trusts the
                                            system's CA store; a `tls://` listener requires
                                            one with a certificate. Ignored for other URLs. */

    /* ---- Liveness (see "Liveness, heartbeats and timeouts" above). Every
     * feature below is off by default. ---- */

    bool keepalive;            /**< TCP keepalive (SO_KEEPALIVE) on TCP sockets, dialled and
                                    accepted; default false. The three fields below tune it. */
    int keepalive_idle_ms;     /**< TCP_KEEPIDLE: idle time before the first probe, rounded up
                                    to whole seconds; 0 keeps the system's (usually 2 h).
                                    #TETHER_ROLE_DEFAULT (what tether_conn_opts_init() sets):
                                    0 on dialled connections; on accepted TCP connections
                                    keepalive is turned on with 60 s, and an interval and
                                    count left at 0 become 10 s and 6. Set 0 (and leave
                                    `keepalive` false) for no keepalive on a server. */
    int keepalive_interval_ms; /**< TCP_KEEPINTVL: time between probes, rounded up to whole
                                    seconds; 0 keeps the system's (usually 75 s). */
    int keepalive_count;       /**< TCP_KEEPCNT: unanswered probes before the kernel drops the
                                    connection (1..127); 0 keeps the system's (usually 9). */
    int user_timeout_ms;       /**< TCP_USER_TIMEOUT: the kernel drops the connection when sent
                                    data stays unacknowledged (or cannot be sent into a zero
                                    window) this long; the close reason is
                                    #TETHER_ETIMEDOUT. 0 keeps the system's (about 15 min of
                                    retransmissions). Independent of `keepalive`.
                                    #TETHER_ROLE_DEFAULT: 0 on dialled connections, 120000
                                    on accepted ones. */
    int heartbeat_ms;          /**< Application heartbeats (len32 framing only): after this long
                                    without receiving anything, send a ping. Negotiated with
                                    the peer; see the wire format above. 0 (default) sends no
                                    heartbeat of its own. With `idle_timeout_ms` also set,
                                    the idle timeout must be at least twice this
                                    (#TETHER_EINVAL otherwise). */
    int heartbeat_misses;      /**< Unanswered pings, each given `heartbeat_ms` (the negotiated
                                    interval) to be answered, before the connection closes
                                    with #TETHER_ETIMEDOUT ("heartbeat timeout"). Default 3,
                                    at least 1. */
    int idle_timeout_ms;       /**< Read-idle timeout: close with #TETHER_ETIMEDOUT when nothing
                                    at all (data or control) has been received for this long.
                                    0 (default) means none. At least 2 × `heartbeat_ms` when
                                    both are set; it also caps the negotiated heartbeat
                                    interval at half of it. */
    int frame_timeout_ms;      /**< Close with #TETHER_ETIMEDOUT when a frame has started to
                                    arrive but is not complete after this long (a peer that
                                    trickles bytes: "slowloris"); with `frame_min_rate`, the
                                    window over which the rate is measured instead. 0 means
                                    none. #TETHER_ROLE_DEFAULT (the default): none on
                                    dialled connections, 30000 on accepted ones. */
    int write_timeout_ms;      /**< Close with #TETHER_ETIMEDOUT when queued output has made no
                                    progress for this long (a peer that stopped reading);
                                    with `write_min_rate`, the window over which the rate is
                                    measured instead. 0 means none. #TETHER_ROLE_DEFAULT
                                    (the default): none on dialled connections, 60000 on
                                    accepted ones. Checked while reading is paused too. */
    int max_age_ms;            /**< Close gracefully (as tether_conn_close(); `on_close` gets
                                    #TETHER_OK and the detail "maximum connection age
                                    reached") once the connection has been established this
                                    long, ±10 % random jitter. 0 (default) means never.
                                    Where both ends negotiated control frames this is a
                                    drain (tether_conn_goaway() with reason
                                    #TETHER_GOAWAY_MAX_AGE and `close_timeout_ms` as its
                                    deadline; the detail then reads "drained (GOAWAY):
                                    maximum connection age reached (N ms)"). */

    /* ---- PROXY protocol (see "Behind a load balancer" above). ---- */

    int proxy_protocol;       /**< Dialled connections: send a PROXY protocol header of this
                                   version, #TETHER_PROXY_V1 or #TETHER_PROXY_V2, as the very
                                   first bytes, before the TLS handshake and the first frame
                                   (as curl's CURLOPT_HAPROXYPROTOCOL). It announces
                                   `proxy_source` (or the connection's local address) to the
                                   address dialled; over a Unix socket v1 sends `UNKNOWN` and
                                   v2 an unspecified address. 0 (default): none. Ignored on
                                   accepted connections (see tether_listen_opts). */
    const char *proxy_source; /**< With `proxy_protocol`: the client address to announce,
                                   "IP", "IP:port" or "[IPv6]:port" (port 0 if none), instead
                                   of the local address (as curl's CURLOPT_HAPROXY_CLIENT_IP),
                                   for a relay that forwards its own clients' connections.
                                   Copied. NULL (default): the local address. */

    /* ---- Slow and stuck peers (see "Slow and stuck peers" above). ---- */

    int frame_min_rate;        /**< Bytes per second a started frame must keep arriving at,
                                    measured over `frame_timeout_ms` windows: a frame still
                                    incomplete at the end of a window closes the connection
                                    when that window brought fewer than rate × window bytes,
                                    or as soon as nothing at all arrived for a window.
                                    0: `frame_timeout_ms` is a flat deadline per frame.
                                    Needs `frame_timeout_ms`. #TETHER_ROLE_DEFAULT (the
                                    default): 0 on dialled connections, 1024 on accepted
                                    ones. */
    int write_min_rate;        /**< Bytes per second the peer must keep receiving while
                                    output is queued, measured over `write_timeout_ms`
                                    windows from what it acknowledged (on TCP; see "Slow
                                    and stuck peers"); no write progress at all for a window
                                    closes too. 0: a window in which the peer received
                                    nothing closes. Needs
                                    `write_timeout_ms`. #TETHER_ROLE_DEFAULT (the default): 0
                                    on dialled connections, 1024 on accepted ones. */

    /* ---- Delivery (see tether/delivery.h). ---- */

    bool calls;                /**< Request/response calls (tether_call(),
                                    tether_conn_reply()), len32 framing only: announce HELLO
                                    capability bit 0. A dialled connection then sends HELLO
                                    first (as with `heartbeat_ms`: dial only servers that
                                    speak tether's control frames); an accepted one announces
                                    it in the HELLO it answers with, and still serves plain
                                    length-prefixed clients unchanged. Calls work once both
                                    ends set it. Default false. */

    /* ---- Drain (see "Draining: GOAWAY" above). ---- */

    tether_goaway_cb on_goaway; /**< The peer asked this connection to drain (a GOAWAY with the
                                     drain flag); may be NULL: the connection still drains and
                                     closes by itself. */

    /* ---- WebSocket (see tether/ws.h). ---- */
    const struct tether_ws_opts *ws; /**< Options for `ws://` and `wss://` URLs (see the
                                          @ref ws group), copied at creation; NULL: the
                                          defaults. Ignored for other URLs. */
} tether_conn_opts;

/** PROXY protocol version 1, the text line (tether_conn_opts::proxy_protocol,
 *  tether_listen_opts::proxy_protocol). */
#define TETHER_PROXY_V1 0x1
/** PROXY protocol version 2, the binary header. */
#define TETHER_PROXY_V2 0x2
/** The default of tether_listen_opts::proxy_timeout_ms: 5 seconds. */
#define TETHER_PROXY_TIMEOUT_DEFAULT 5000
/** The largest PROXY v2 address and TLV block a listener accepts (the spec
 *  allows 65535): a header takes at most 16 + 4096 bytes. */
#define TETHER_PROXY_V2_MAX_LEN 4096

/**
 * @brief "The default for the connection's role", for the fields of
 *        #tether_conn_opts that say they take it.
 *
 * tether_conn_opts_init() sets it in those fields. tether_conn_dial() (and
 * the reconnecting client and blocking API) resolve it to 0, "off", as
 * before; tether_listen() resolves it to the server values that reap slow
 * and stuck peers (see "Slow and stuck peers" above). Any other negative
 * value is #TETHER_EINVAL.
 */
#define TETHER_ROLE_DEFAULT (-1)

/**
 * @brief Fills @p opts with defaults; used through tether_conn_opts_init().
 * @param[out] opts The options.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_conn_opts_init_sized(tether_conn_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_conn_opts with the defaults.
 * @param opts Pointer to the options.
 */
#define tether_conn_opts_init(opts) tether_conn_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Options for tether_listen().
 *
 * Initialise with tether_listen_opts_init().
 */
typedef struct tether_listen_opts {
    size_t size;                /**< Set by tether_listen_opts_init(); do not change. */
    tether_accept_cb on_accept; /**< Called for every accepted connection; may be NULL. */
    /** The listener's own user data, passed to `on_accept` and `on_error`.
     *
     *  Two pointers are in play on a server, and they differ: this one
     *  belongs to the listener, while each accepted connection starts
     *  with `conn_opts->userdata` (tether_conn_opts::userdata, the same
     *  value for every connection of this listener), which its
     *  `on_message`, `on_drain` and `on_close` receive. To give each
     *  connection its own state, call tether_conn_set_userdata() in
     *  `on_accept`, before any other callback of that connection runs. */
    void *userdata;
    const tether_conn_opts *conn_opts; /**< Options for accepted connections (copied);
                                            NULL for defaults. `on_connect` is not used. */
    int backlog;    /**< listen() backlog; default 1024 (capped by the system). */
    bool reuseport; /**< SO_REUSEPORT, to spread accepts over several loops. */
    tether_listener_error_cb on_error; /**< Accept-side problems; may be NULL. */
    size_t max_conns;                  /**< Most accepted connections alive at once (handshaking
                                            included); beyond it a new client is accepted and
                                            closed at once, counted in
                                            tether_listener_stats::rejected and reported through
                                            `on_error` (#TETHER_EAGAIN) once per episode.
                                            Default #TETHER_MAX_CONNS_DEFAULT; 0 for no limit. */

    /* ---- PROXY protocol (see "Behind a load balancer" above). ---- */

    unsigned proxy_protocol; /**< Require a PROXY protocol header on every accepted
                                  connection: #TETHER_PROXY_V1, #TETHER_PROXY_V2 or both
                                  (OR-ed; the two are told apart by their signatures). A
                                  connection without one, or with a malformed one, is closed
                                  and reported through `on_error` (never guessed: a listener
                                  that enables it requires it). 0 (default): off. Only enable
                                  it on listeners that only trusted proxies can reach. */
    int proxy_timeout_ms;    /**< How long an accepted connection may take to send its whole
                                  PROXY header (#TETHER_ETIMEDOUT otherwise); the TLS
                                  handshake timeout starts after it. 0 (default) means
                                  #TETHER_PROXY_TIMEOUT_DEFAULT; negative means none. */
} tether_listen_opts;

/** The default of tether_listen_opts::max_conns. */
#define TETHER_MAX_CONNS_DEFAULT 16384u

/**
 * @brief Fills @p opts with defaults; used through tether_listen_opts_init().
 * @param[out] opts The options.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_listen_opts_init_sized(tether_listen_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_listen_opts with the defaults.
 * @param opts Pointer to the options.
 */
#define tether_listen_opts_init(opts) tether_listen_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Starts connecting to @p url; never blocks.
 *
 * On #TETHER_OK, `on_connect` runs exactly once on a later loop iteration
 * with the outcome, and `on_close` runs once when the connection ends
 * (after a failed connect, right after `on_connect`). Messages sent before
 * the connection is established are queued and sent once it is.
 * @param[out] out     Receives the connection handle (valid until its `on_close` returns).
 * @param[in]  loop    The loop.
 * @param[in]  url     Where to connect (see the group description). Copied.
 * @param[in]  opts    Options, or NULL for defaults.
 * @param[out] out_err Optional: on failure, the code and a message naming the
 *                     problem (e.g. "invalid URL 'tcp://x': missing port").
 * @retval TETHER_OK      Connecting; the callbacks will report the rest.
 * @retval TETHER_EINVAL  A NULL argument, a malformed URL or a bad option; no callback runs.
 * @retval TETHER_ENOMEM  Out of memory; no callback runs.
 *
 * Failures reported through `on_connect` (and then `on_close`) include:
 * - #TETHER_ENOTFOUND: the name does not exist (NXDOMAIN);
 * - #TETHER_ENOADDR: the name has no address of the requested family
 *   (tether_conn_opts::family), or a numeric host is of the other family;
 * - #TETHER_EDNSTIMEDOUT: no DNS server answered in time, or
 *   connect_timeout_ms passed while the name was still being resolved;
 * - #TETHER_EDNS: any other resolver failure (server failure, refusal);
 * - #TETHER_ECONNREFUSED, #TETHER_ENETUNREACH, #TETHER_EHOSTUNREACH: every
 *   attempt failed; with several addresses the code is the most telling
 *   outcome, in this order: refused, timed out, host unreachable, network
 *   unreachable, anything else;
 * - #TETHER_ETIMEDOUT: connect_timeout_ms passed during the attempts or the
 *   TLS handshake, or every attempt timed out.
 */
TETHER_API int tether_conn_dial(tether_conn **out, tether_loop *loop, const char *url,
                                const tether_conn_opts *opts, tether_error *out_err);

/**
 * @brief Queues a copy of one message for sending.
 *
 * The bytes are copied (or written straight to the socket) before this
 * returns, so @p data may be reused at once. Messages go out in the order
 * they were sent, batched into few system calls.
 * @param[in] c    The connection.
 * @param[in] data The message; may be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @retval TETHER_OK       Queued; it will be sent unless the connection fails
 *                         or is aborted (`on_close` then says why).
 * @retval TETHER_EAGAIN   The bytes already queued have reached
 *                         tether_conn_opts::send_hwm; nothing was queued.
 *                         Keep the message and send it again from `on_drain`
 *                         (see "Backpressure" in the group description).
 * @retval TETHER_EMSGSIZE @p len is above tether_conn_opts::max_msg.
 * @retval TETHER_EINVAL   NULL arguments, or the framing cannot carry the
 *                         message (a line containing its delimiter).
 * @retval TETHER_ECLOSED  The connection is closing or closed.
 * @retval TETHER_ENOMEM   Out of memory; nothing was queued.
 */
TETHER_API int tether_conn_send(tether_conn *c, const void *data, size_t len);

/**
 * @brief Queues a message without copying it.
 *
 * For large payloads: the library keeps @p data until it has been written to
 * the socket (or the connection ends) and then calls @p free_cb exactly once,
 * on the loop thread. If this returns an error, @p free_cb is not called and
 * the buffer still belongs to the caller.
 * @param[in] c       The connection.
 * @param[in] data    The message; must stay valid and unchanged until @p free_cb.
 * @param[in] len     Its length.
 * @param[in] free_cb Releases @p data; may be NULL if nothing needs releasing.
 * @param[in] free_ud Passed to @p free_cb.
 * @return The same codes as tether_conn_send().
 */
TETHER_API int tether_conn_send_zc(tether_conn *c, void *data, size_t len, tether_free_cb free_cb,
                                   void *free_ud);

/** @brief One message of a batch (tether_conn_send_batch()). */
typedef struct tether_batch_msg {
    const void *data; /**< The payload, **borrowed** for the call; may be NULL if @ref len is 0. */
    size_t len;       /**< Its length. */
} tether_batch_msg;

/**
 * @brief Queues copies of several messages, in order, in one call.
 *
 * Each element of @p msgs is one whole message, framed like any other
 * (with WebSocket, one frame each): the peer sees exactly what
 * tether_conn_send() called for `msgs[0]`, `msgs[1]`, ... in turn would
 * have sent, and the call behaves exactly like that loop stopping at the
 * first message that is not accepted. Only cheaper: a producer of many
 * small messages (a throughput test, a relay forwarding what one read
 * delivered, a pipelining client) pays the per-message cost of the API
 * once per batch. Like sendmmsg(2), the count of messages taken comes back
 * beside the status:
 * - every message accepted: #TETHER_OK, `*out_sent == n`;
 * - otherwise the return value is the error tether_conn_send() gives for
 *   `msgs[*out_sent]`: messages `0 .. *out_sent - 1` are queued, that one
 *   and every one after it are not (none is ever queued in part, none
 *   skipped). With #TETHER_EAGAIN (backpressure: the bytes queued reached
 *   tether_conn_opts::send_hwm, by this call or before it) `on_drain` runs
 *   once when the queue has fallen to tether_conn_opts::send_lwm; send
 *   the rest, `msgs + *out_sent`, from there. With #TETHER_EMSGSIZE or
 *   #TETHER_EINVAL, `msgs[*out_sent]` is the offending message: the caller
 *   may drop or fix it and send the ones after it.
 *
 * The send_hwm rule applies message by message, as in "Backpressure"
 * above: a message is taken whole while the queue is below the mark, so a
 * batch may take the queue past it by up to one message. The bytes are
 * copied before this returns: @p msgs and the payloads may be reused at
 * once. Small messages in the default framing, and on an open WebSocket
 * connection (each encoded as its frame, masked on clients with a fresh
 * key per message as tether_conn_send() does), are copied straight into
 * the send queue; other framings take batches with the same results,
 * without the saving.
 * @param[in]  c        The connection.
 * @param[in]  msgs     The messages (borrowed); may be NULL if @p n is 0.
 * @param[in]  n        How many; 0 does nothing and returns #TETHER_OK.
 * @param[out] out_sent Messages queued, from the first (n on #TETHER_OK);
 *                      may be NULL.
 * @retval TETHER_OK       All @p n messages queued.
 * @retval TETHER_EAGAIN   `msgs[*out_sent]` met a full queue (see above).
 * @retval TETHER_EMSGSIZE `msgs[*out_sent]` is above tether_conn_opts::max_msg.
 * @retval TETHER_EINVAL   @p c is NULL, @p msgs is NULL with @p n above 0
 *                         (`*out_sent` 0), or `msgs[*out_sent]` has NULL
 *                         data and a length, or the framing cannot carry
 *                         it (a line containing its delimiter).
 * @retval TETHER_ECLOSED  The connection is closing or closed (`*out_sent`
 *                         says how many were queued before, if it closed
 *                         during the call, e.g. on a write error).
 * @retval TETHER_ENOMEM   Out of memory for `msgs[*out_sent]`.
 *
 * Loop thread only, like tether_conn_send(); safe from any callback of the
 * connection, `on_drain` included.
 */
TETHER_API int tether_conn_send_batch(tether_conn *c, const tether_batch_msg *msgs, size_t n,
                                      size_t *out_sent);

/**
 * @brief Closes gracefully: sends everything queued, then shuts down.
 *
 * Asynchronous and idempotent. No more messages are delivered. When the queue
 * has been written (for TLS, with close_notify) the write side is shut down
 * and `on_close` runs with #TETHER_OK; if that takes longer than
 * tether_conn_opts::close_timeout_ms it runs with #TETHER_ETIMEDOUT instead.
 *
 * After `on_close` the library keeps the socket for at most 2 seconds to
 * read and discard what the peer still sends, until the peer's FIN
 * ("lingering close"). Closing a socket with unread input makes the kernel
 * send a reset, and a reset can destroy the last messages before the peer
 * has read them. The loop counts such a socket as active, so
 * tether_loop_run() may return up to 2 seconds after the last `on_close`
 * when a peer never closes its side.
 * @param[in] c The connection; NULL is ignored.
 */
TETHER_API void tether_conn_close(tether_conn *c);

/** GOAWAY reason: none given. */
#define TETHER_GOAWAY_NONE 0u
/** GOAWAY reason: the maximum connection age (tether_conn_opts::max_age_ms). */
#define TETHER_GOAWAY_MAX_AGE 5u
/** GOAWAY reason: the server is shutting down or restarting. */
#define TETHER_GOAWAY_SHUTDOWN 6u
/** The drain deadline tether_conn_goaway() uses for `deadline_ms` 0: 30 s. */
#define TETHER_DRAIN_DEADLINE_DEFAULT 30000
/** tether_conn_drain_state(): we asked the peer to drain. */
#define TETHER_DRAIN_ASKED 0x1u
/** tether_conn_drain_state(): the peer asked us to drain (`on_goaway` ran). */
#define TETHER_DRAIN_ASKED_BY_PEER 0x2u

/**
 * @brief Asks the peer to finish and go away, then closes cleanly:
 *        nothing in flight is lost in either direction.
 *
 * Sends a GOAWAY control frame with the drain flag (see "Draining: GOAWAY"
 * in the group). The connection keeps reading and writing: messages the
 * peer sent before it saw the GOAWAY are delivered, and this side may go on
 * sending (replies). The peer stops sending new messages, flushes what it
 * had queued and says "done"; this side answers "done" behind its own last
 * messages, and both close as tether_conn_close() does (flush, TLS
 * close_notify, FIN). `on_close` then gets #TETHER_OK with the detail
 * `drained (GOAWAY): ` and @p text; sends after the peer's "done" return
 * #TETHER_ECLOSED.
 *
 * If the peer has not finished when @p deadline_ms has passed, the drain
 * becomes a close: a GOAWAY "closing now" is sent, the queue is flushed
 * (bounded by tether_conn_opts::close_timeout_ms), and `on_close` gets
 * #TETHER_ETIMEDOUT with the detail `drain deadline of N ms passed ...`;
 * what the peer sent after that is lost.
 *
 * A peer that did not negotiate control frames (it never sent HELLO: a
 * plain length-prefixed client, a tether client with neither
 * `heartbeat_ms` nor `calls`, or any framing other than len32) cannot be
 * asked: the connection is
 * closed as by tether_conn_close() instead, after flushing what is queued,
 * and the call returns #TETHER_OK; the detail in `on_close` says so. An
 * accepted connection only knows its peer speaks control frames once the
 * peer's HELLO (its first frame) has arrived.
 *
 * Idempotent: a second call only sets a new deadline.
 * @param[in] c           The connection.
 * @param[in] reason      A reason code for the peer (#TETHER_GOAWAY_SHUTDOWN,
 *                        #TETHER_GOAWAY_MAX_AGE, ...; 0 to 65535).
 * @param[in] text        A short text for the peer's logs, printable ASCII, up
 *                        to 200 bytes; NULL or "" for none. Copied.
 * @param[in] deadline_ms How long the drain may take; 0 for
 *                        #TETHER_DRAIN_DEADLINE_DEFAULT, negative for none.
 * @retval TETHER_OK       Draining (or closing, see above); `on_close` follows.
 * @retval TETHER_EINVAL   NULL, a reason above 65535, or a text that is too
 *                         long or not printable ASCII.
 * @retval TETHER_ENOTCONN The connection is not established yet.
 * @retval TETHER_ECLOSED  The connection is closing or closed.
 * @retval TETHER_ENOMEM   Out of memory.
 *
 * Loop thread only.
 */
TETHER_API int tether_conn_goaway(tether_conn *c, unsigned reason, const char *text,
                                  int deadline_ms);

/**
 * @brief Whether a drain is under way on the connection.
 * @param[in] c The connection.
 * @return 0 when none (or @p c is NULL); otherwise #TETHER_DRAIN_ASKED
 *         and/or #TETHER_DRAIN_ASKED_BY_PEER. Once the peer asked,
 *         tether_conn_send() returns #TETHER_ECLOSED.
 */
TETHER_API unsigned tether_conn_drain_state(const tether_conn *c);

/**
 * @brief Closes at once, dropping whatever is queued.
 *

 * Zero-copy buffers still queued are released through their free callbacks.
 * `on_close` runs on a later iteration with #TETHER_ECANCELED (unless the
 * connection had already ended for another reason).
 * @param[in] c The connection; NULL is ignored.
 */
TETHER_API void tether_conn_abort(tether_conn *c);

/**
 * @brief Lets tether_loop_run() return while the connection is open.
 *
 * An open connection (from tether_conn_dial() or `on_accept` until the
 * library frees it, lingering close included) keeps the loop running by
 * default. After this call it no longer does, as with libuv's uv_unref():
 * for a connection that lives alongside other work, such as a link to a
 * monitoring service, and must not keep the program running by itself. The
 * connection goes on working whenever the loop runs. Idempotent. Loop
 * thread only. A connection of a reconnecting client follows the client
 * (tether_client_unref()); do not call this on it.
 * @param[in] c The connection; NULL is ignored.
 */
TETHER_API void tether_conn_unref(tether_conn *c);

/**
 * @brief Undoes tether_conn_unref(): an open connection keeps the loop
 *        running (the default). Idempotent. Loop thread only.
 * @param[in] c The connection; NULL is ignored.
 */
TETHER_API void tether_conn_ref(tether_conn *c);

/**
 * @brief Stops reading from the connection (flow control toward the peer).
 *
 * No `on_message` runs until tether_conn_resume(); the kernel's buffers fill
 * and TCP slows the peer down. Idempotent.
 *
 * A paused connection does not read, so it also does not see the peer
 * close the connection: `on_close` for a peer's close comes after
 * tether_conn_resume() has delivered what was sent before it. (A reset
 * still ends it, once the next write fails.) The idle, frame and heartbeat
 * timeouts rest while reading is paused.
 * @param[in] c The connection.
 */
TETHER_API void tether_conn_pause(tether_conn *c);

/**
 * @brief Resumes reading after tether_conn_pause(). Idempotent.
 * @param[in] c The connection.
 */
TETHER_API void tether_conn_resume(tether_conn *c);

/**
 * @brief Returns the connection's user data.
 * @param[in] c The connection.
 * @return The pointer set by tether_conn_opts::userdata or tether_conn_set_userdata().
 */
TETHER_API void *tether_conn_userdata(const tether_conn *c);

/**
 * @brief Sets the user data passed to the connection's callbacks.
 * @param[in] c  The connection.
 * @param[in] ud Any pointer; the library does not own it.
 */
TETHER_API void tether_conn_set_userdata(tether_conn *c, void *ud);

/**
 * @brief Returns the loop a connection belongs to.
 * @param[in] c The connection.
 * @return The loop.
 */
TETHER_API tether_loop *tether_conn_loop(const tether_conn *c);

/**
 * @brief The detail of the last failure on this connection.
 *
 * For example `connect to tcp://127.0.0.1:9: connection refused` or
 * `peer announced a 4294967295-byte message; the limit is 16777216`.
 * @param[in] c The connection.
 * @return A string owned by the connection, valid until the next failure on it
 *         or until its `on_close` returns; "" if nothing failed.
 */
TETHER_API const char *tether_conn_last_error(const tether_conn *c);

/**
 * @brief Bytes accepted by tether_conn_send() and not yet written to the socket.
 * @param[in] c The connection.
 * @return The number of queued bytes, framing included.
 */
TETHER_API size_t tether_conn_queued(const tether_conn *c);

/**
 * @brief Counters and measurements of a connection or of a reconnecting client.
 *
 * Filled by tether_conn_get_stats() and tether_client_get_stats(). Like the
 * option structs it only grows at the end: the `size` field tells the
 * library how much of it the caller's header knows. Fields that do not
 * apply are 0 (or -1 for tether_stats::rtt_us).
 */
typedef struct tether_stats {
    size_t size;             /**< Set by the getter macros; do not change. */
    uint64_t bytes_in;       /**< Bytes received (framing and control frames included; for TLS
                                  the decrypted bytes). A client: over all its connections. */
    uint64_t bytes_out;      /**< Bytes handed to the socket (to TLS, for `tls://`), framing
                                  and control frames included. A client: over all connections. */
    uint64_t msgs_in;        /**< Messages delivered to `on_message` (control frames are not
                                  counted). */
    uint64_t msgs_out;       /**< A connection: messages accepted by tether_conn_send(). A
                                  client: messages completely handed to a socket. */
    size_t queued_bytes;     /**< A connection: bytes waiting in its send queue, framing
                                  included (tether_conn_queued()). A client: payload bytes of
                                  the messages it still holds (not yet completely written). */
    size_t queued_msgs;      /**< A client: messages it still holds. A connection: 0. */
    uint64_t connects;       /**< A client: connections established. A connection: 1 once
                                  established. */
    uint64_t reconnects;     /**< A client: connections established after the first one. */
    uint64_t attempts;       /**< A client: connection attempts started. */
    uint64_t undelivered;    /**< A client: messages handed back through `on_undelivered`. */
    uint32_t backoff_ms;     /**< A client: the delay before the current (or last) retry, jitter
                                  included; 0 before the first. */
    uint32_t heartbeat_ms;   /**< The heartbeat interval in use after negotiation; 0 when this
                                  side sends no pings. */
    int64_t rtt_us;          /**< The last round-trip time measured by a ping, in
                                  microseconds; -1 before the first measurement. */
    uint64_t pings_sent;     /**< Heartbeat pings sent. */
    uint64_t pongs_received; /**< Heartbeat pongs received (answers to our pings: 0 when
                                  this side sends none). */
    uint64_t uptime_ms;      /**< How long the (current) connection has been established; 0
                                  when it is not. */
    uint64_t calls_in_flight;    /**< tether_call(): calls waiting for their reply. A
                                      client: its tether_client_call() calls, over all
                                      connections (`calls_canceled` then also counts calls
                                      ended by closing the client). */
    uint64_t calls_completed;    /**< tether_call(): calls that got their reply. */
    uint64_t calls_timed_out;    /**< tether_call(): calls ended by their timeout. */
    uint64_t calls_failed;       /**< tether_call(): calls ended by the end of the connection
                                      or by a peer that does not take calls. */
    uint64_t calls_canceled;     /**< tether_call(): calls ended by tether_call_cancel(). */
    uint64_t calls_late_replies; /**< Replies that arrived after their call had ended (timed
                                      out or canceled), dropped. */
    uint64_t requests_in;        /**< Requests received (messages with a call id, also counted
                                      in `msgs_in`). */
    uint64_t acked;              /**< At-least-once streams: messages the peer acknowledged
                                      (a client: over all connections). */
    uint64_t resent;             /**< At-least-once streams (a client): messages sent again on
                                      a later connection because no acknowledgement covered
                                      them. */
    uint64_t dups_dropped;       /**< At-least-once streams (the receiver): messages dropped
                                      because their resume token had delivered them
                                      before. */
    uint64_t acks_in_flight;     /**< At-least-once streams (a client): messages sent and not
                                      yet acknowledged. */
    uint64_t acks_sent;          /**< At-least-once streams (the receiver): ACK control frames
                                      sent. */
} tether_stats;

/**
 * @brief Fills a #tether_stats; used through tether_conn_get_stats().
 * @param[in]  c    The connection.
 * @param[out] st   Receives the statistics.
 * @param[in]  size `sizeof *st` as the caller's header defines it.
 * @retval TETHER_OK     Filled.
 * @retval TETHER_EINVAL A NULL argument or a @p size too small.
 */
TETHER_API int tether_conn_get_stats_sized(const tether_conn *c, tether_stats *st, size_t size);

/**
 * @brief Reads a connection's counters and measurements (bytes, messages,
 *        queued bytes, heartbeat interval, last RTT).
 *
 * Cheap: it copies counters the connection keeps anyway. Also valid inside
 * `on_close`, where it gives the final numbers.
 * @param c  The connection.
 * @param st Pointer to a #tether_stats.
 */
#define tether_conn_get_stats(c, st) tether_conn_get_stats_sized((c), (st), sizeof(*(st)))

/**
 * @brief Formats the peer's address, e.g. "127.0.0.1:5555", "[::1]:80" or "unix:/tmp/s".
 *
 * On a connection accepted with tether_listen_opts::proxy_protocol, once
 * its header has arrived (from `on_accept` on), this is the client the
 * header announced; tether_conn_proxy_peer() gives the proxy's address.
 * @param[in]  c   The connection.
 * @param[out] buf Receives the NUL-terminated text.
 * @param[in]  len Size of @p buf (64 bytes is always enough for TCP).
 * @retval TETHER_OK       Written.
 * @retval TETHER_ENOTCONN Not connected (yet or any more).
 * @retval TETHER_EINVAL   A NULL argument or @p buf too small.
 */
TETHER_API int tether_conn_peer(const tether_conn *c, char *buf, size_t len);

/**
 * @name PROXY protocol details of an accepted connection
 * See "Behind a load balancer: the PROXY protocol" in the group description.
 * @{
 */

/** TLV type of the ALPN the client negotiated with the proxy (bytes, e.g. "h2"). */
#define TETHER_PROXY_TLV_ALPN 0x01
/** TLV type of the host name the client asked the proxy for (TLS SNI; UTF-8). */
#define TETHER_PROXY_TLV_AUTHORITY 0x02
/** TLV type of the proxy's unique connection ID (opaque, up to 128 bytes). */
#define TETHER_PROXY_TLV_UNIQUE_ID 0x05
/** TLV type of the client's TLS details (client flags, verify result, sub-TLVs). */
#define TETHER_PROXY_TLV_SSL 0x20

/**
 * @brief What the PROXY protocol header of an accepted connection said,
 *        filled by tether_conn_proxy_info().
 */
typedef struct tether_proxy_info {
    size_t size;           /**< Set by the getter macro; do not change. */
    int version;           /**< 1 or 2. */
    bool local;            /**< The header carried no client address: a v2 `LOCAL`
                                connection (a proxy's health check), a v1 `UNKNOWN` line,
                                or a v2 header with an unspecified family or transport.
                                tether_conn_peer() then reports the real peer. */
    char source[128];      /**< The original client, formatted as tether_conn_peer()
                                formats addresses ("" when `local`). */
    char destination[128]; /**< The address the client connected to ("" when `local`). */
    char proxy[128];       /**< The proxy: the socket's real peer address. */
} tether_proxy_info;

/**
 * @brief Fills a #tether_proxy_info; used through tether_conn_proxy_info().
 * @param[in]  c    The connection.
 * @param[out] info Receives the details.
 * @param[in]  size `sizeof *info` as the caller's header defines it.
 * @retval TETHER_OK       Filled.
 * @retval TETHER_ENOTSUP  The connection was not accepted by a listener with
 *                         tether_listen_opts::proxy_protocol.
 * @retval TETHER_ENOTCONN Its header has not been received yet.
 * @retval TETHER_EINVAL   A NULL argument or a @p size too small.
 */
TETHER_API int tether_conn_proxy_info_sized(const tether_conn *c, tether_proxy_info *info,
                                            size_t size);

/**
 * @brief Reads what an accepted connection's PROXY protocol header said:
 *        version, the client's and the proxy's addresses.
 *
 * Valid from `on_accept` until `on_close` returns. Loop thread only.
 * @param c    The connection.
 * @param info Pointer to a #tether_proxy_info.
 */
#define tether_conn_proxy_info(c, info) tether_conn_proxy_info_sized((c), (info), sizeof(*(info)))

/**
 * @brief Finds a TLV (type-length-value) of a connection's PROXY v2 header.
 *
 * The header's TLVs are kept with the connection as they arrived, e.g.
 * #TETHER_PROXY_TLV_ALPN, #TETHER_PROXY_TLV_AUTHORITY or an application
 * type (0xE0..0xEF). The first TLV of that type is returned.
 * @param[in]  c       The connection.
 * @param[in]  type    The TLV type.
 * @param[out] out_val Receives a pointer to the value, owned by the
 *                     connection and valid until its `on_close` returns.
 * @param[out] out_len Receives the value's length.
 * @retval TETHER_OK       Found.
 * @retval TETHER_ENOTFOUND No TLV of that type (or a v1 header, which has none).
 * @retval TETHER_ENOTSUP  Not a connection accepted with the PROXY protocol.
 * @retval TETHER_ENOTCONN Its header has not been received yet.
 * @retval TETHER_EINVAL   A NULL argument.
 */
TETHER_API int tether_conn_proxy_tlv(const tether_conn *c, uint8_t type, const uint8_t **out_val,
                                     size_t *out_len);

/**
 * @brief Formats the address of the proxy that relayed an accepted
 *        connection: the socket's real peer (tether_conn_peer() reports the
 *        client the PROXY header announced).
 *
 * For a connection without the PROXY protocol, the same as tether_conn_peer().
 * @param[in]  c   The connection.
 * @param[out] buf Receives the NUL-terminated text.
 * @param[in]  len Size of @p buf.
 * @retval TETHER_OK       Written.
 * @retval TETHER_ENOTCONN Not connected.
 * @retval TETHER_EINVAL   A NULL argument or @p buf too small.
 */
TETHER_API int tether_conn_proxy_peer(const tether_conn *c, char *buf, size_t len);

/** @} */

/**
 * @brief Starts listening on @p url and accepting connections.
 *
 * The socket is bound and listening when this returns, so clients can
 * connect at once. Accepted connections are reported through `on_accept`.
 * If the process runs out of file descriptors, the listener pauses accepting
 * with a growing back-off (up to one second) instead of spinning, and
 * recovers by itself once descriptors are free again.
 * @param[out] out     Receives the listener.
 * @param[in]  loop    The loop.
 * @param[in]  url     Where to listen, e.g. "tcp://127.0.0.1:0", "unix:///tmp/s".
 * @param[in]  opts    Options, or NULL for defaults.
 * @param[out] out_err Optional: on failure, the code and a message.
 * @retval TETHER_OK            Listening; close with tether_listener_close().
 * @retval TETHER_EINVAL        A NULL argument, a malformed URL or a bad option.
 * @retval TETHER_EADDRINUSE    The address is taken.
 * @retval TETHER_EADDRNOTAVAIL The address does not belong to this host.
 * @retval TETHER_EACCES        Permission denied (e.g. a port below 1024).
 * @retval TETHER_ENOMEM        Out of memory.
 */
TETHER_API int tether_listen(tether_listener **out, tether_loop *loop, const char *url,
                             const tether_listen_opts *opts, tether_error *out_err);

/**
 * @brief Stops listening and frees the listener.
 *
 * Connections already accepted are not affected. Safe inside `on_accept`.
 * A Unix socket's file is removed.
 * @param[in] l The listener; NULL is ignored.
 */
TETHER_API void tether_listener_close(tether_listener *l);

/**
 * @brief Graceful server shutdown: stops accepting, drains every
 *        connection of the listener, closes the rest at a deadline.
 *
 * The listener is closed at once, as by tether_listener_close() (the port
 * is free for a successor; the handle is invalid after this call). First,
 * connections the kernel has already completed are accepted (`on_accept`
 * may run inside this call), so that the close does not reset them and
 * lose what their clients sent. Connections it accepted that have not
 * reached `on_accept` yet (a TLS handshake under way) are aborted; every
 * other one still open is sent
 * tether_conn_goaway(c, #TETHER_GOAWAY_SHUTDOWN, "server shutting down",
 * @p deadline_ms) (peers without control frames are closed gracefully
 * instead). Each connection reports its own end through `on_close`. When
 * the last of them is gone, @p on_done runs once, from the loop (never from
 * inside this call), with #TETHER_OK, or #TETHER_ETIMEDOUT if the deadline
 * cut any drain short. With no connection open it runs on the next loop
 * iteration.
 * @param[in] l           The listener.
 * @param[in] deadline_ms How long the drains may take; 0 for
 *                        #TETHER_DRAIN_DEADLINE_DEFAULT, negative for none.
 *                        Closing after it is bounded by
 *                        tether_conn_opts::close_timeout_ms.
 * @param[in] on_done     Called when every connection is gone; may be NULL.
 * @param[in] ud          Passed to @p on_done.
 * @retval TETHER_OK     Shutting down; @p on_done will run.
 * @retval TETHER_EINVAL @p l is NULL; nothing happens.
 * @retval TETHER_ENOMEM Out of memory; nothing happens.
 *
 * Loop thread only. Keep the loop running until @p on_done.
 */
TETHER_API int tether_listener_shutdown(tether_listener *l, int deadline_ms,
                                        tether_shutdown_cb on_done, void *ud);

/**
 * @brief The port a TCP listener is bound to (useful after port 0).
 * @param[in] l The listener.

 * @return The port, or 0 for a Unix socket.
 */
TETHER_API int tether_listener_port(const tether_listener *l);

/**
 * @brief The URL a listener is bound to, with the real port filled in.
 * @param[in] l The listener.
 * @return A string owned by the listener, e.g. "tcp://127.0.0.1:40123",
 *         valid until tether_listener_close().
 */
TETHER_API const char *tether_listener_url(const tether_listener *l);

/**
 * @brief Lets tether_loop_run() return while the listener is open.
 *
 * For a listener that serves alongside other work and must not keep the
 * program running by itself (see the handle model in @ref loop). Accepting
 * goes on whenever the loop runs. Idempotent. Loop thread only.
 * @param[in] l The listener; NULL is ignored.
 */
TETHER_API void tether_listener_unref(tether_listener *l);

/**
 * @brief Undoes tether_listener_unref(): an open listener keeps the loop
 *        running (the default). Idempotent. Loop thread only.
 * @param[in] l The listener; NULL is ignored.
 */
TETHER_API void tether_listener_ref(tether_listener *l);

/**
 * @brief Counters of a listener, filled by tether_listener_get_stats().
 */
typedef struct tether_listener_stats {
    size_t size;       /**< Set by the getter macro; do not change. */
    uint64_t accepted; /**< Connections accepted and handed to the library. */
    uint64_t rejected; /**< Connections accepted and closed at once because
                            tether_listen_opts::max_conns were alive. */
    size_t active;     /**< Accepted connections alive now (handshaking included). */
} tether_listener_stats;

/**
 * @brief Fills a #tether_listener_stats; used through tether_listener_get_stats().
 * @param[in]  l    The listener.
 * @param[out] st   Receives the counters.
 * @param[in]  size `sizeof *st` as the caller's header defines it.
 * @retval TETHER_OK     Filled.
 * @retval TETHER_EINVAL A NULL argument or a @p size too small.
 */
TETHER_API int tether_listener_get_stats_sized(const tether_listener *l, tether_listener_stats *st,
                                               size_t size);

/**
 * @brief Reads a listener's counters (accepted, rejected, active).
 * @param l  The listener.
 * @param st Pointer to a #tether_listener_stats.
 */
#define tether_listener_get_stats(l, st) tether_listener_get_stats_sized((l), (st), sizeof(*(st)))

/**
 * @name Memory budget
 *
 * Every loop keeps account of the memory its connections hold for their
 * peers: the buffers of incomplete input frames (and of frames held back
 * while reading is paused) and the queued output. The worst case of one
 * connection is
 *
 *     send_hwm + 2 x max_msg + framing (a few bytes)
 *
 * A send is accepted while less than `send_hwm` is queued, so one more
 * message of up to `max_msg` can be queued on top; the input buffer of a
 * frame grows with what has arrived (at most twice that, never beyond the
 * frame's size), so it reaches `max_msg` only for a frame that has almost
 * all arrived. With the defaults (1 MiB, 16 MiB) that is about 33 MiB. TLS
 * adds OpenSSL's own state (about 15 KiB on an idle connection; while it
 * is busy, and for one to two seconds after its last read or write, also
 * OpenSSL's read and write buffers of about 17 KiB each; busy means from
 * the third read or write with data since a release, so one message and
 * its reply now and then keep none in between), and an
 * application that keeps copies of messages adds its own. A header that announces a large message reserves
 * nothing. Each loop also keeps the memory of up to four freed
 * connections (and of four connections' rarely used state; a few hundred
 * bytes each) for the next ones, which saves a malloc() and a free() per
 * connection; the budget does not count it, and tether_loop_free()
 * releases it.
 *
 * The budget bounds the sum: past tether_loop_set_mem_limit()'s limit, a
 * connection that holds more than its share (the limit divided by the
 * connections on the loop, and at least 64 KiB) stops being read, and
 * tether_conn_send() on it returns #TETHER_EAGAIN. Connections holding
 * less carry on. When the total falls to three quarters of the limit,
 * reading resumes and `on_drain` runs on every connection whose send was
 * refused. Usage can overshoot the limit by what one read or one send adds.
 * Held-back connections wait for memory to be freed by others (replies
 * written, frames completed, connections closed); timeouts decide how long
 * a stuck peer may keep its share. Size the limit for the large messages
 * expected at once: when every connection that holds memory is held back
 * (say, more concurrent uploads of `max_msg` than the limit holds), none
 * progresses until memory is freed, the limit is raised or a timeout
 * closes one. No connection is let past the limit to break such a tie,
 * because a peer that does not read its replies would turn that into
 * memory the budget cannot reclaim.
 * @{
 */

/** The default per-loop memory budget: 1 GiB. */
#define TETHER_MEM_LIMIT_DEFAULT ((size_t)1 << 30)

/**
 * @brief Sets the loop's memory budget for connection buffers.
 * @param[in] loop  The loop.
 * @param[in] bytes The limit in bytes; 0 for none. Applies at once, also to
 *                  connections that exist already.
 * @retval TETHER_OK     Set.
 * @retval TETHER_EINVAL @p loop is NULL.
 * @retval TETHER_ENOMEM Out of memory.
 *
 * Call from the loop's thread.
 */
TETHER_API int tether_loop_set_mem_limit(tether_loop *loop, size_t bytes);

/**
 * @brief Memory held by a loop's connections, filled by tether_loop_get_mem_stats().
 */
typedef struct tether_mem_stats {
    size_t size;         /**< Set by the getter macro; do not change. */
    size_t limit;        /**< The budget; 0 for none. */
    size_t input_bytes;  /**< Capacity of the input buffers (incomplete or held-back frames). */
    size_t output_bytes; /**< Bytes queued for sending, framing included. */
    size_t conns;        /**< Connections on the loop. */
    bool over;           /**< Past the limit and not yet back to the low-water mark. */
    uint64_t pauses;     /**< Times a connection stopped being read because of the budget. */
    uint64_t refusals;   /**< Sends refused with #TETHER_EAGAIN because of the budget. */
} tether_mem_stats;

/**
 * @brief Fills a #tether_mem_stats; used through tether_loop_get_mem_stats().
 * @param[in]  loop The loop.
 * @param[out] st   Receives the figures.
 * @param[in]  size `sizeof *st` as the caller's header defines it.
 * @retval TETHER_OK     Filled.
 * @retval TETHER_EINVAL A NULL argument or a @p size too small.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_loop_get_mem_stats_sized(tether_loop *loop, tether_mem_stats *st,
                                               size_t size);

/**
 * @brief Reads the memory a loop's connections hold and the budget's counters.
 * @param l  The loop.
 * @param st Pointer to a #tether_mem_stats.
 */
#define tether_loop_get_mem_stats(l, st) tether_loop_get_mem_stats_sized((l), (st), sizeof(*(st)))

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TETHER_CONN_H */
/** @} */
