/* SPDX-License-Identifier: MIT */
/**
 * @file ws.h
 * @brief WebSocket (RFC 6455): `ws://` and `wss://` URLs on the usual
 *        connection API.
 *
 * @defgroup ws WebSocket
 * @brief One more layer under tether_conn: a WebSocket message is a tether
 *        message.
 *
 * tether_conn_dial() and tether_listen() take `ws://host:port/path` and
 * `wss://host:port/path` (TLS from tether_conn_opts::tls, exactly as for
 * `tls://`). After TCP (and TLS) the HTTP/1.1 upgrade runs as part of the
 * connection's handshake: `on_connect` and `on_accept` fire only once it
 * succeeded. From then on every tether_conn_send() is one WebSocket
 * message and every `on_message` is one whole message, reassembled from
 * its fragments; send, backpressure, statistics, limits and timeouts work
 * unchanged (tether_stats::bytes_in and tether_stats::bytes_out count the
 * messages as tether frames them internally, 4 bytes of header each, not
 * the WebSocket bytes on the wire). The options
 * specific to WebSocket are in #tether_ws_opts, named by
 * tether_conn_opts::ws; the framing must stay #TETHER_FRAMING_LEN32 (the
 * default), which the WebSocket layer replaces on the wire.
 *
 * **Handshake.** A client sends `GET /path` with `Host`, `Origin`
 * (#tether_ws_opts::origin), the subprotocols it offers
 * (#tether_ws_opts::protocols) and extra headers (#tether_ws_opts::headers),
 * and checks the server's `Sec-WebSocket-Accept`, the subprotocol it chose
 * (one of those offered, or none) and that it chose no extension. A
 * listener whose URL has a path accepts only that path (`404` otherwise);
 * without a path it accepts any. It checks `Origin` against
 * #tether_ws_opts::allowed_origins (`403`), answers a plain `GET` of
 * #tether_ws_opts::health_path with `200 ok`, a request for another
 * version with `426` and `Sec-WebSocket-Version: 13`, a plain HTTP request
 * with `426`, other methods with `405`, a head larger than
 * #tether_ws_opts::max_request with `431` and anything malformed with
 * `400`, then closes; such connections never reach `on_accept` and are
 * reported through tether_listen_opts::on_error. The whole request must
 * arrive within #tether_ws_opts::handshake_timeout_ms. In `on_accept` (and
 * later) tether_ws_path(), tether_ws_origin() and tether_ws_protocol() tell
 * what the client asked for.
 *
 * **Messages.** Messages are sent as binary frames unless
 * #tether_ws_opts::text or tether_ws_set_text() selects text; inside
 * `on_message`, tether_ws_msg_is_text() tells the type of the message. A
 * received text message that is not valid UTF-8 closes with 1007. A
 * message whose running total exceeds tether_conn_opts::max_msg closes
 * with 1009 before the excess is buffered. Clients mask every frame with
 * keys from OpenSSL's RAND_bytes(); a zero-copy message of 64 KiB or more
 * (tether_conn_send_zc()) is masked from the caller's buffer a chunk at a
 * time as it is written, without a copy, which is one more reason for
 * that buffer to stay unchanged until its free callback. A server closes
 * with 1002 on an unmasked frame, on set reserved bits (no extension is
 * negotiated: permessage-deflate is not supported), unknown opcodes,
 * fragmented or oversized (> 125 bytes) control frames and broken
 * fragment sequences.
 *
 * **Heartbeats.** A WebSocket ping from the peer is answered with a pong
 * carrying its payload and counts as traffic for
 * tether_conn_opts::idle_timeout_ms. With tether_conn_opts::heartbeat_ms,
 * tether sends WebSocket pings at that interval (browsers and most
 * libraries answer them), measures the round trip from the pong
 * (tether_stats::rtt_us) and closes after tether_conn_opts::heartbeat_misses
 * unanswered pings, as on `tcp://`.
 *
 * **Closing.** tether_conn_close() sends a close frame with 1000 after the
 * queued messages; tether_ws_close() chooses the code and reason. A
 * liveness close sends 1001 (idle, heartbeat, maximum age) or 1008 (a
 * stalled frame or a peer that does not read) with the reason text. A
 * peer's close frame is answered and ends the connection with
 * #TETHER_EOF; its code is then available from tether_ws_close_code() in
 * `on_close`, and tether_conn_last_error() reads e.g. `peer closed the
 * WebSocket with 4000: "bye"`. A connection dropped without a close frame
 * reports code 1006. The side that closes first gets `on_close` once its
 * close frame is sent (as tether_conn_close() does once the queue is
 * flushed); the peer's answering close frame is read in the background,
 * so tether_ws_close_code() is 0 there.
 *
 * **Between two tether ends.** A tether client offers the private
 * extension `Sec-WebSocket-Extensions: x-tether-control` in its upgrade
 * request and a tether server accepts it (other clients and servers ignore
 * or never send it, so browsers and other libraries see plain RFC 6455).
 * With it agreed, tether's own control frames (HELLO, heartbeat PING/PONG,
 * GOAWAY, tether_call() requests and replies) travel inside the WebSocket
 * stream, each as one binary frame with RSV2 set holding the control frame
 * as `tcp://` carries it; data messages are unchanged. HELLO is then
 * negotiated exactly as on `tcp://`: tether_call() works when both ends
 * set tether_conn_opts::calls, heartbeats measure the round trip with
 * tether's own PING, and tether_conn_goaway() / tether_listener_shutdown()
 * drain without loss (the peer answers the GOAWAY; a tether_client moves).
 * The final close frame then carries 1001.
 *
 * **Draining other peers.** A peer that is not tether (a browser, Node's
 * `ws`), or a tether peer with which no HELLO was exchanged, cannot answer
 * a GOAWAY: tether_conn_goaway() and tether_listener_shutdown() send the
 * queued messages, then a close frame 1001 with the GOAWAY text (or
 * "going away"), and finish the closing handshake at once instead of
 * waiting for the drain deadline. `on_close` reports #TETHER_OK. What the
 * peer sends after our close frame is not delivered (RFC 6455 7.1.2).
 *
 * Limitations: permessage-deflate (RFC 7692) and other extensions are not
 * implemented. A fragmented message is held by the WebSocket layer until
 * its last fragment (bounded by tether_conn_opts::max_msg): its fragments
 * count as traffic for tether_conn_opts::idle_timeout_ms, but
 * tether_conn_opts::frame_timeout_ms does not see it, and that buffer and
 * the layer's output buffer (at most 256 KiB ahead of the socket) are not
 * counted by tether_loop_set_mem_limit().
 *
 * Threading: like every connection call, the functions below belong to the
 * connection's loop thread.
 * @{
 */
#ifndef TETHER_WS_H
#define TETHER_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Default of #tether_ws_opts::max_request: 8 KiB. */
#define TETHER_WS_MAX_REQUEST_DEFAULT 8192
/** Default of #tether_ws_opts::handshake_timeout_ms: 10 s. */
#define TETHER_WS_HANDSHAKE_TIMEOUT_DEFAULT 10000

/**
 * @brief WebSocket options, named by tether_conn_opts::ws (dialled
 *        connections) or by the tether_listen_opts::conn_opts of a listener.
 *
 * Initialise with tether_ws_opts_init(). Everything is copied when the
 * connection or listener is created: the strings need not outlive the
 * call. Options that only make sense on one side are ignored on the other.
 */
typedef struct tether_ws_opts {
    size_t size;                        /**< Set by tether_ws_opts_init(); do not change. */
    const char *origin;                 /**< Client: the `Origin` header to send; NULL: none. */
    const char *const *protocols;       /**< NULL-terminated list of subprotocols. Client: those
                                             offered, in order of preference. Server: those it
                                             speaks; it picks the first of the client's list that
                                             is here, or none (the client then decides whether
                                             that is acceptable). NULL: none. */
    const char *headers;                /**< Client: extra header lines, each `Name: value\r\n`
                                             (e.g. an `Authorization`); NULL: none. */
    const char *const *allowed_origins; /**< Server: NULL-terminated list of accepted
                                             `Origin` values (exact, e.g.
                                             `"https://chat.example"`); a request with
                                             another origin, or with none, gets `403`.
                                             NULL: any origin, or none. */
    const char *health_path;            /**< Server: a plain `GET` of this path (no upgrade) is
                                             answered `200` with body `ok`, then closed, for load
                                             balancers; NULL: off (such a request gets `426`). */
    bool text;                          /**< Send messages as text frames instead of binary (see
                                             tether_ws_set_text()); default false. */
    size_t max_request;                 /**< Largest HTTP head accepted: the request on a server
                                             (`431` beyond), the response on a client; default
                                             #TETHER_WS_MAX_REQUEST_DEFAULT, at least 256. */
    int handshake_timeout_ms;           /**< Server: how long an accepted connection may take from
                                             accept to the end of its upgrade request (TLS
                                             included); default
                                             #TETHER_WS_HANDSHAKE_TIMEOUT_DEFAULT; negative: no
                                             limit. Clients use
                                             tether_conn_opts::connect_timeout_ms. */
} tether_ws_opts;

/**
 * @brief Fills @p opts with defaults; used through tether_ws_opts_init().
 * @param[out] opts the options
 * @param[in] size sizeof(*opts) as the caller was compiled
 */
TETHER_API void tether_ws_opts_init_sized(tether_ws_opts *opts, size_t size);

/** @brief Fills a #tether_ws_opts with defaults. */
#define tether_ws_opts_init(opts) tether_ws_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Sends the messages queued from now on as text (true) or binary
 *        (false) frames.
 *
 * The switch is queued in order with the messages: a message sent before
 * the call keeps the type it was sent with, so `set_text(c, true); send();
 * set_text(c, false); send();` sends one text and one binary message. The
 * text of a text message must be valid UTF-8 (the peer closes with 1007
 * otherwise); tether does not check what it sends.
 * @param[in] c a `ws://` or `wss://` connection
 * @param[in] text true for text frames
 * @retval TETHER_OK done
 * @retval TETHER_EINVAL @p c is NULL
 * @retval TETHER_ENOTSUP @p c is not a WebSocket connection
 * @retval TETHER_ECLOSED the connection is closing or closed
 * @retval TETHER_ENOMEM out of memory
 */
TETHER_API int tether_ws_set_text(tether_conn *c, bool text);

/**
 * @brief Whether the message being delivered is a text message.
 *
 * Valid inside `on_message`; false elsewhere and for other connections.
 * @param[in] c the connection
 * @return true for a text message, false for a binary one
 */
TETHER_API bool tether_ws_msg_is_text(const tether_conn *c);

/**
 * @brief The request path of a WebSocket connection (with its query
 *        string, as sent), e.g. `"/chat?room=1"`.
 * @param[in] c the connection
 * @return a string owned by the connection, valid until its `on_close`
 *         returns; NULL when @p c is not a WebSocket connection or its
 *         handshake is not done
 */
TETHER_API const char *tether_ws_path(const tether_conn *c);

/**
 * @brief The `Origin` the client sent (servers) or sent itself (clients).
 * @param[in] c the connection
 * @return owned by the connection (as tether_ws_path()); NULL when there
 *         was none or @p c is not a WebSocket connection
 */
TETHER_API const char *tether_ws_origin(const tether_conn *c);

/**
 * @brief The negotiated subprotocol (`Sec-WebSocket-Protocol`).
 * @param[in] c the connection
 * @return owned by the connection (as tether_ws_path()); NULL when none
 *         was agreed or @p c is not a WebSocket connection
 */
TETHER_API const char *tether_ws_protocol(const tether_conn *c);

/**
 * @brief Closes like tether_conn_close(), with this close code and
 *        reason in the close frame.
 * @param[in] c a WebSocket connection
 * @param[in] code 1000-1003, 1007-1014 or 3000-4999
 * @param[in] reason UTF-8 text of at most 123 bytes, or NULL
 * @retval TETHER_OK closing; `on_close` follows as for tether_conn_close()
 * @retval TETHER_EINVAL @p c is NULL, or the code or the reason is not
 *         allowed (RFC 6455 section 7.4)
 * @retval TETHER_ENOTSUP @p c is not a WebSocket connection
 */
TETHER_API int tether_ws_close(tether_conn *c, int code, const char *reason);

/**
 * @brief The close code the peer sent.
 *
 * Meant for `on_close`: 1000-4999 from the peer's close frame, 1005 when
 * its close frame had no code, 1006 when the connection ended without one
 * from the peer, 0 while none was received or when @p c is not a
 * WebSocket connection.
 * @param[in] c the connection
 * @return the code
 */
TETHER_API int tether_ws_close_code(const tether_conn *c);

#ifdef __cplusplus
}
#endif

/** @} */

#endif /* TETHER_WS_H */
