/* SPDX-License-Identifier: MIT */
/**
 * @file reconnect.h
 * @brief Reconnecting clients: a connection to one URL that comes back by
 *        itself, with exponential backoff, and never loses a message
 *        silently.
 *
 * @defgroup reconnect Reconnecting clients
 * @brief Keep a connection to a URL alive across failures and restarts.
 *
 * A #tether_client dials a URL with tether_conn_dial() and, whenever the
 * attempt fails or the connection is lost, waits and dials again. Every
 * attempt resolves the name again (a service that moved is found) and, for
 * `tls://`, offers the session of the previous connection, so reconnecting
 * costs an abbreviated handshake (tether_conn_opts::tls is shared by every
 * attempt, and that configuration keeps the sessions; see the TLS group).
 * With `tcp+srv://` or `tls+srv://` every attempt takes the SRV records
 * again (from the loop's cache while their TTL lasts, from DNS after) and
 * chooses a target by priority and weight anew, so servers added to DNS
 * receive new clients, and servers removed from it stop receiving them once
 * the TTL has passed (see "Service discovery" in the connections group).
 *
 * **Backoff.** The waits follow gRPC's connection-backoff specification
 * (grpc/grpc `doc/connection-backoff.md`). The n-th consecutive attempt
 * (n = 0, 1, ...) gets a backoff of
 * `b = min(initial_backoff_ms × multiplier^n, max_backoff_ms)`, spread by
 * `± jitter × b` uniformly at random (never below 0; the jitter is applied
 * after the cap, as gRPC does, so a wait can exceed max_backoff_ms by up to
 * the jitter). The next attempt starts that long after the *start* of the
 * failed one, or at once if the attempt itself took longer; each attempt may
 * take max(b, min_connect_timeout_ms) to connect (name resolution, TCP and
 * TLS included). With the defaults the waits are about 1, 1.6, 2.6, 4.1,
 * 6.6 ... seconds, up to 120 s.
 *
 * The schedule starts over only once a connection has really been
 * established (for TLS: the handshake completed) *and* stayed up for
 * tether_client_opts::stable_ms; a server that accepts and at once drops
 * connections therefore still sees growing waits. After a connection that
 * was stable is lost, the first new attempt waits a random time between 0
 * and tether_client_opts::reconnect_spread_ms, so that the clients of a
 * restarting server do not all come back in the same instant.
 * tether_client_opts::max_attempts optionally gives up after that many
 * attempts in a row without a stable connection. tether_client_reconnect_now()
 * skips a wait.
 *
 * **States.** `on_state` reports every transition with a
 * #tether_client_event: #TETHER_CLIENT_CONNECTING (an attempt starts),
 * #TETHER_CLIENT_CONNECTED, #TETHER_CLIENT_DISCONNECTED (an attempt failed or
 * the connection was lost; with the reason), #TETHER_CLIENT_WAITING (with
 * the delay), #TETHER_CLIENT_GAVE_UP and finally #TETHER_CLIENT_CLOSED.
 *
 * **Messages.** tether_client_send() works in every state. The client keeps
 * each message until it has been handed to a connection's socket
 * completely (to TLS, for `tls://`), and sends the messages in order:
 * - while disconnected they wait, bounded by
 *   tether_client_opts::queue_max_bytes and tether_client_opts::queue_max_msgs
 *   (above either, tether_client_send() fails with #TETHER_EAGAIN and
 *   `on_drain` follows once there is room again), and go out after the next
 *   connection is established;
 * - when a connection is lost, every message it had not completely written
 *   (queued, or only partly written) is sent again, *in full*, on the next
 *   connection. A partly written frame dies with its connection (the peer
 *   discards it: #TETHER_ETRUNCATED), so no truncated or duplicated frame
 *   ever reaches the peer's `on_message`;
 * - messages the client still holds when it gives up or is closed are
 *   handed back, in order, through `on_undelivered`;
 * - with tether_client_opts::fail_fast, sending while not connected fails
 *   with #TETHER_ENOTCONN, and the held messages are handed back through
 *   `on_undelivered` as soon as a connection is lost instead of waiting.
 *
 * **Drain (GOAWAY).** When the server asks the connection to drain
 * (tether_conn_goaway(), tether_listener_shutdown(), its `max_age_ms`), or
 * the client's own tether_conn_opts::max_age_ms starts a drain, the client
 * does what gRPC does: it reports #TETHER_CLIENT_DISCONNECTED with reason
 * #TETHER_OK and the detail `the connection is draining (GOAWAY): moving to
 * a new connection`, and dials a new connection at once (a fresh name or
 * SRV lookup, and a fresh backoff schedule), **before** the old connection
 * closes. The old connection writes the messages it had been handed,
 * delivers what the server still sends (through `on_message`, as usual)
 * and closes once the drain is complete. The messages it had not been
 * handed go to the new connection, after the old one has written its own,
 * so the order is kept; if the old connection ends before writing its
 * messages (the drain deadline, a reset), they are sent first on the new
 * one. Nothing queued is lost (completions of tether_client_send_cb()
 * are reported whichever connection wrote the message). This needs
 * control frames on the connections: set `heartbeat_ms` or `calls` in
 * tether_client_opts::conn_opts (the dialling side speaks first; a tether
 * server always answers). Without
 * them, a drain reaches the client as an ordinary close. While the new
 * connection is being set up the client is not connected: with
 * tether_client_opts::fail_fast, sends fail with #TETHER_ENOTCONN until it
 * is. tether_client_pause() and tether_client_resume() apply to the
 * draining connection too, and tether_client_close() closes it.
 *
 * **At-least-once streams.** With tether_client_opts::at_least_once (len32
 * framing), the server acknowledges what its application has received,
 * and the client keeps every message until an acknowledgement covers it,
 * not merely until it is written: what a connection loses in flight is
 * sent again on the next one (tether_stats::resent), and
 * tether_client_send_cb() reports #TETHER_OK only once the message is
 * acknowledged. The client's HELLO (sent even without `heartbeat_ms`)
 * announces capability bit 1; every tether server takes it, with no
 * option: its answer carries bit 1 too. Each connection then carries no
 * data until the server's HELLO is in (one round trip), since the
 * numbering starts with a RESUME control frame: a random 64-bit resume
 * token, the same for the client's whole life, and the number of the
 * next message. Messages carry no number of their own; the server
 * acknowledges cumulatively after a read batch, at most once a
 * millisecond unless 256 KiB arrived since the last (the rest follows
 * within 1 ms; an echoing server's ACK rides with its replies), and drops a message whose number its loop
 * has delivered under that token before (tether_stats::dups_dropped).
 * Guarantees and limits:
 * - while the server process lives (and the client's connections land on
 *   the same loop of it), every message reaches its `on_message` exactly
 *   once and in order, across resets, cuts, blackholes and drains;
 * - across a crash or restart of the server, messages delivered but not
 *   yet acknowledged are delivered again: at least once;
 * - an acknowledged message is never sent again; an unacknowledged one is
 *   never dropped silently: it is resent, or handed back through
 *   `on_undelivered` when the client gives up or is closed (a closing
 *   client waits for the acknowledgements, within `close_timeout_ms`);
 * - the held messages stay bounded by queue_max_bytes/queue_max_msgs, so
 *   at most that many are unacknowledged at once;
 * - each server loop remembers up to 4096 tokens (the least recently used
 *   token without a connection is forgotten first), and forgets a token
 *   unused for 10 minutes: a client back after longer may see duplicates;
 * - a server whose HELLO lacks bit 1 (a tether server older than
 *   acknowledgements) gets the messages as without this option, and the
 *   client logs `no acknowledgements on this connection` (a warning);
 * - a plain length-prefixed server (no control frames at all) reads the
 *   HELLO as an oversized length: it closes, or waits for four gigabytes.
 *   When three connections in a row end, or see no HELLO from the server
 *   within the HELLO deadline ((heartbeat_misses + 1) × heartbeat_ms of
 *   `conn_opts`, or 3 s with heartbeats off; not counted while the client
 *   is paused), after the client's HELLO and before any answer (so before
 *   any data was sent on them; once could be a fault of the network, and
 *   those attempts follow the usual schedule), the client logs a warning
 *   (`the server does not speak tether's control frames ...; falling back
 *   to plain len32 without acknowledgements`), reports DISCONNECTED and
 *   dials again at once (not counted against max_attempts) without HELLO.
 *   That connection carries the messages as without this option (done
 *   once written; no heartbeats or calls either); nothing is lost by the
 *   probes. The fallback is not remembered: once that plain connection
 *   has been up and ends, the next one asks for acknowledgements again (so
 *   a tether server that was only slow to answer, or replaced a plain one,
 *   gets them back), at the price of three failed probes per reconnect
 *   against a server that stays plain. A load balancer that accepts and
 *   closes while its backends are down looks like a plain server too:
 *   after three such connections one connection goes without
 *   acknowledgements (and what it loses in flight is lost);
 * - the answers (server to client) are not acknowledged: they are as
 *   reliable as without this option;
 * - send through tether_client_send() only: data sent directly on
 *   tether_client_conn() would break the numbering.
 *
 * **Which messages can be lost.** A message the client has completely
 * written to the socket is no longer held: it sits in kernel buffers (ours,
 * then the network's, then the peer's) until the peer's application reads
 * it. If the connection dies in that window, the message is lost, and
 * neither side's TCP can say so: TCP acknowledges bytes when the peer's
 * *kernel* has them, not when its application has processed them, and it
 * does not report acknowledgements to the application at all. Such a
 * message is counted in tether_stats::msgs_out, never handed back and
 * never sent twice. Only an acknowledgement from the peer's application
 * (a reply) can close that gap; see the README section "Which messages can
 * be lost".
 *
 * **Ownership and threading.** A client belongs to its loop's thread; every
 * function here must be called on it. Callbacks run on that thread from
 * loop dispatch, never from inside the call that caused them (so
 * tether_client_new() reports #TETHER_CLIENT_CONNECTING on a later
 * iteration), and it is safe to call tether_client_send(),
 * tether_client_reconnect_now() and tether_client_close() from inside any
 * of them. The client counts as an active handle of its loop until
 * `on_state` has reported #TETHER_CLIENT_CLOSED; the library frees it when
 * that callback returns.
 * @{
 */
#ifndef TETHER_RECONNECT_H
#define TETHER_RECONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/error.h>
#include <tether/export.h>
#include <tether/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A reconnecting client (opaque). */
typedef struct tether_client tether_client;

/** @brief The states a client reports through `on_state`. */
typedef enum tether_client_state {
    TETHER_CLIENT_CONNECTING = 1,   /**< An attempt starts: resolving, connecting, handshaking. */
    TETHER_CLIENT_CONNECTED = 2,    /**< The connection is established (TLS handshake done). */
    TETHER_CLIENT_DISCONNECTED = 3, /**< An attempt failed or the connection was lost;
                                         tether_client_event::reason says why. */
    TETHER_CLIENT_WAITING = 4,      /**< Waiting tether_client_event::delay_ms before the
                                         next attempt. */
    TETHER_CLIENT_GAVE_UP = 5,      /**< tether_client_opts::max_attempts reached. The client
                                         stays until closed; tether_client_reconnect_now()
                                         starts over. */
    TETHER_CLIENT_CLOSED = 6,       /**< tether_client_close() finished: the last callback. */
} tether_client_state;

/** @brief One state transition, passed to `on_state`. */
typedef struct tether_client_event {
    tether_client_state state; /**< The new state. */
    int reason;                /**< #TETHER_CLIENT_DISCONNECTED, #TETHER_CLIENT_WAITING,
                                    #TETHER_CLIENT_GAVE_UP: the TETHER_E* code of the failure
                                    (#TETHER_OK after a graceful close at
                                    tether_conn_opts::max_age_ms); otherwise 0. */
    const char *detail;        /**< The failure in words, e.g. "connect to tcp://127.0.0.1:9:
                                    connection refused"; "" when there is none. Borrowed until
                                    the callback returns. */
    uint32_t delay_ms;         /**< #TETHER_CLIENT_WAITING: the wait before the next attempt. */
    uint32_t attempt;          /**< The number of the current attempt since the schedule last
                                    started over (1 for the first). */
} tether_client_event;

/**
 * @brief Reports a state transition.
 * @param[in] cl The client.
 * @param[in] ev The transition; **borrowed** until the callback returns.
 * @param[in] ud tether_client_opts::userdata.
 */
typedef void (*tether_client_state_cb)(tether_client *cl, const tether_client_event *ev, void *ud);

/**
 * @brief Delivers one whole message received on the current connection.
 * @param[in] cl   The client.
 * @param[in] data The payload, **borrowed** until the callback returns.
 * @param[in] len  Its length (may be 0).
 * @param[in] ud   tether_client_opts::userdata.
 */
typedef void (*tether_client_msg_cb)(tether_client *cl, const uint8_t *data, size_t len, void *ud);

/**
 * @brief Hands back a message the client will not send.
 *
 * Called once per such message, in the order they were sent, when the
 * client gives up, is closed, or (with tether_client_opts::fail_fast) loses
 * its connection.
 * @param[in] cl     The client.
 * @param[in] data   The message, **borrowed** until the callback returns.
 * @param[in] len    Its length.
 * @param[in] reason Why: #TETHER_ECANCELED when the client was closed, else
 *                   the failure that ended the last connection or attempt.
 * @param[in] ud     tether_client_opts::userdata.
 */
typedef void (*tether_client_undelivered_cb)(tether_client *cl, const uint8_t *data, size_t len,
                                             int reason, void *ud);

/**
 * @brief Fires when there is room again after tether_client_send() returned
 *        #TETHER_EAGAIN (the held messages fell to a quarter of the bounds).
 * @param[in] cl The client.
 * @param[in] ud tether_client_opts::userdata.
 */
typedef void (*tether_client_drain_cb)(tether_client *cl, void *ud);

/**
 * @brief Options for tether_client_new().
 *
 * Initialise with tether_client_opts_init(); fields are only ever added at
 * the end (see #tether_conn_opts).
 */
typedef struct tether_client_opts {
    size_t size;                                 /**< Set by tether_client_opts_init(). */
    void *userdata;                              /**< Passed to every callback. */
    tether_client_state_cb on_state;             /**< State transitions; may be NULL. */
    tether_client_msg_cb on_message;             /**< Received messages; may be NULL. */
    tether_client_undelivered_cb on_undelivered; /**< Messages handed back; may be NULL
                                                      (they are then dropped, but still
                                                      counted in tether_stats::undelivered). */
    tether_client_drain_cb on_drain;   /**< Room again after #TETHER_EAGAIN; may be NULL. */
    const tether_conn_opts *conn_opts; /**< Options for every connection (copied), or
                                            NULL. Its callbacks and user data are not
                                            used (the client's are), nor is
                                            connect_timeout_ms (see
                                            `min_connect_timeout_ms`). Heartbeats,
                                            timeouts, keepalive and max_age_ms apply to
                                            each connection; a connection they end is
                                            reconnected like any other. */
    uint32_t initial_backoff_ms;       /**< The first backoff; default 1000. */
    double multiplier;                 /**< Growth per failed attempt; default 1.6, at
                                            least 1. */
    double jitter;                     /**< Spread of each wait, as a fraction of the
                                            backoff (0..1); default 0.2 (±20 %). */
    uint32_t max_backoff_ms;           /**< The largest backoff; default 120000. */
    uint32_t min_connect_timeout_ms;   /**< The least time an attempt may take to
                                            connect; default 20000. */
    uint32_t stable_ms;                /**< How long a connection must stay established
                                            before the schedule starts over; default
                                            10000. */
    uint32_t reconnect_spread_ms;      /**< After losing a stable connection, the first
                                            attempt waits a random time up to this;
                                            default 1000. 0 reconnects at once (as gRPC
                                            does). */
    uint32_t max_attempts;             /**< Give up after this many attempts in a row
                                            without a stable connection; 0 (default)
                                            never gives up. */
    size_t queue_max_bytes;            /**< Bound on the payload bytes the client holds;
                                            default 4 MiB. */
    size_t queue_max_msgs;             /**< Bound on the number of messages it holds;
                                            default 65536. */
    bool fail_fast;                    /**< Fail sends while not connected
                                            (#TETHER_ENOTCONN) and hand held messages back
                                            when a connection is lost; default false. */
    bool at_least_once;                /**< At-least-once stream (len32 framing only):
                                            keep each message until the server
                                            acknowledges it, resend the unacknowledged
                                            ones on the next connection, and let the
                                            server drop duplicates. See "At-least-once
                                            streams" above. Default false. */
} tether_client_opts;

/**
 * @brief Fills @p opts with defaults; used through tether_client_opts_init().
 * @param[out] opts The options.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_client_opts_init_sized(tether_client_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_client_opts with the defaults.
 * @param opts Pointer to the options.
 */
#define tether_client_opts_init(opts) tether_client_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Creates a client that keeps a connection to @p url alive.
 *
 * The first attempt starts on the next loop iteration (reported as
 * #TETHER_CLIENT_CONNECTING). Messages may be sent at once; they wait for
 * the connection.
 * @param[out] out     Receives the client; valid until `on_state` has
 *                     reported #TETHER_CLIENT_CLOSED.
 * @param[in]  loop    The loop.
 * @param[in]  url     Where to connect (as for tether_conn_dial()). Copied.
 * @param[in]  opts    Options, or NULL for defaults.
 * @param[out] out_err Optional: on failure, the code and a message.
 * @retval TETHER_OK     Created; close it with tether_client_close().
 * @retval TETHER_EINVAL A NULL argument, a malformed URL or a bad option; no
 *                       callback runs.
 * @retval TETHER_ENOMEM Out of memory; no callback runs.
 */
TETHER_API int tether_client_new(tether_client **out, tether_loop *loop, const char *url,
                                 const tether_client_opts *opts, tether_error *out_err);

/**
 * @brief Sends a copy of one message, now or after the next connection.
 *
 * The bytes are copied before this returns. The message is held until the
 * socket has taken all of it; see the group description for what happens
 * to it when a connection is lost.
 * @param[in] cl   The client.
 * @param[in] data The message; may be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @retval TETHER_OK       Accepted: it will be written, or handed back through
 *                         `on_undelivered`.
 * @retval TETHER_EAGAIN   The client holds tether_client_opts::queue_max_bytes
 *                         or queue_max_msgs already; nothing was queued. Wait
 *                         for `on_drain`.
 * @retval TETHER_ENOTCONN tether_client_opts::fail_fast is set and the client
 *                         is not connected.
 * @retval TETHER_EMSGSIZE @p len is above tether_conn_opts::max_msg or
 *                         tether_client_opts::queue_max_bytes.
 * @retval TETHER_ECLOSED  The client has given up or is closing.
 * @retval TETHER_EINVAL   NULL arguments.
 * @retval TETHER_ENOMEM   Out of memory; nothing was queued.
 */
TETHER_API int tether_client_send(tether_client *cl, const void *data, size_t len);

/**
 * @brief Skips the current wait and starts the next attempt now.
 *
 * Also starts over after #TETHER_CLIENT_GAVE_UP (with a fresh schedule).
 * The attempt is reported through `on_state` on a later iteration.
 * @param[in] cl The client.
 * @retval TETHER_OK     An attempt will start.
 * @retval TETHER_EBUSY  An attempt is already running, or the client is
 *                       connected.
 * @retval TETHER_ECLOSED The client is closing.
 * @retval TETHER_EINVAL @p cl is NULL.
 */
TETHER_API int tether_client_reconnect_now(tether_client *cl);

/**
 * @brief Closes the client: asynchronous and idempotent.
 *
 * When connected, everything the client holds is written first and the
 * connection is closed gracefully (bounded by
 * tether_conn_opts::close_timeout_ms); otherwise the current attempt or
 * wait is abandoned. Messages that were not completely written are handed
 * back through `on_undelivered` (with #TETHER_ECANCELED, or the error that
 * ended the connection), then `on_state` reports #TETHER_CLIENT_CLOSED, and
 * the library frees the client when that callback returns.
 * @param[in] cl The client; NULL is ignored.
 */
TETHER_API void tether_client_close(tether_client *cl);

/**
 * @brief Lets tether_loop_run() return while the client is open.
 *
 * A client keeps the loop running from tether_client_new() until it is
 * freed, and so does its current connection. After this call neither
 * does, as with libuv's uv_unref(): for a client that must not keep the
 * program running by itself. The client goes on connecting, sending and
 * reconnecting whenever the loop runs. Idempotent. Loop thread only.
 * @param[in] cl The client; NULL is ignored.
 */
TETHER_API void tether_client_unref(tether_client *cl);

/**
 * @brief Undoes tether_client_unref(): an open client keeps the loop
 *        running (the default). Idempotent. Loop thread only.
 * @param[in] cl The client; NULL is ignored.
 */
TETHER_API void tether_client_ref(tether_client *cl);

/**
 * @brief Stops delivering messages, on this connection and every later one.
 *
 * Receive-side flow control for a client, as tether_conn_pause() is for a
 * connection: no `on_message` runs until tether_client_resume(). The
 * current connection (or attempt) stops reading, so the kernel's buffers
 * fill and TCP slows the server down, and every connection the client
 * makes while paused starts paused, before it reads anything: a reconnect
 * does not undo the pause. Sending is not affected. Idempotent; may be
 * called from any of the client's callbacks (from `on_message`, no
 * further message is delivered).
 *
 * As with tether_conn_pause(), a paused connection does not read, so it
 * does not notice the server closing it (a reset is noticed once a write
 * fails); the idle, frame and heartbeat timeouts rest while paused. Use
 * pausing for short stretches, e.g. while a consumer catches up, not to
 * park a client.
 * @param[in] cl The client; NULL is ignored.
 */
TETHER_API void tether_client_pause(tether_client *cl);

/**
 * @brief Resumes delivering messages after tether_client_pause().
 *
 * The current connection resumes reading and delivers what arrived in the
 * meantime, in order; later connections start unpaused. Idempotent.
 * @param[in] cl The client; NULL is ignored.
 */
TETHER_API void tether_client_resume(tether_client *cl);

/**
 * @brief Whether the client is paused (tether_client_pause()).
 * @param[in] cl The client.
 * @return true between tether_client_pause() and tether_client_resume();
 *         false for NULL.
 */
TETHER_API bool tether_client_is_paused(const tether_client *cl);

/**
 * @brief The client's current state.
 * @param[in] cl The client.
 * @return The state last reported through `on_state` (0 before the first).
 */
TETHER_API tether_client_state tether_client_get_state(const tether_client *cl);

/**
 * @brief The current connection, if there is one.
 *
 * For reading its details (tether_conn_peer(), tether_conn_tls_info(),
 * tether_conn_get_stats()); sending through it directly bypasses the
 * client's guarantees, and closing it makes the client reconnect. Pause
 * with tether_client_pause(), not tether_conn_pause() on this connection:
 * the next connection would not be paused.
 * @param[in] cl The client.
 * @return The connection of the attempt in progress (from just after the
 *         #TETHER_CLIENT_CONNECTING report) or the established connection;
 *         NULL while waiting, after giving up and once closed. Valid until
 *         the next state transition.
 */
TETHER_API tether_conn *tether_client_conn(const tether_client *cl);

/**
 * @brief The detail of the last failure (of an attempt or a connection).
 * @param[in] cl The client.
 * @return A string owned by the client, valid until the next failure; ""
 *         if nothing failed yet.
 */
TETHER_API const char *tether_client_last_error(const tether_client *cl);

/**
 * @brief Fills a #tether_stats; used through tether_client_get_stats().
 * @param[in]  cl   The client.
 * @param[out] st   Receives the statistics.
 * @param[in]  size `sizeof *st` as the caller's header defines it.
 * @retval TETHER_OK     Filled.
 * @retval TETHER_EINVAL A NULL argument or a @p size too small.
 */
TETHER_API int tether_client_get_stats_sized(const tether_client *cl, tether_stats *st,
                                             size_t size);

/**
 * @brief Reads the client's counters: bytes and messages over all its
 *        connections, the messages it holds, connections, reconnections,
 *        attempts, the current backoff, and the current connection's
 *        heartbeat interval, RTT and uptime.
 * @param cl The client.
 * @param st Pointer to a #tether_stats.
 */
#define tether_client_get_stats(cl, st) tether_client_get_stats_sized((cl), (st), sizeof(*(st)))

/**
 * @brief Returns the client's user data (tether_client_opts::userdata).
 * @param[in] cl The client.
 * @return The pointer.
 */
TETHER_API void *tether_client_userdata(const tether_client *cl);

/**
 * @brief The name of a state, e.g. "connecting", for logs.
 * @param[in] state A #tether_client_state.
 * @return A static string; "unknown" for other values.
 */
TETHER_API const char *tether_client_state_name(tether_client_state state);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_RECONNECT_H */
/** @} */
