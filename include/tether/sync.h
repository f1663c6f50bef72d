/* SPDX-License-Identifier: MIT */
/**
 * @file sync.h
 * @brief The blocking API: connect, send, receive and close with timeouts.
 *
 * @defgroup sync Blocking API
 * @brief For small clients and scripts: like Python's socket module, but with
 *        whole messages and a timeout on every call.
 *
 * Each #tether_sync owns a private event loop that runs only inside its
 * calls; it is the same connection code as the event API, not a second
 * implementation. A #tether_sync may be used by one thread at a time. Every
 * call takes a timeout in milliseconds; a negative timeout waits without
 * limit (not recommended), 0 does what can be done without waiting.
 *
 * @code
 * tether_sync *s;
 * tether_error err;
 * if (tether_sync_connect(&s, "tcp://127.0.0.1:5555", NULL, 5000, &err) != 0) {
 *     fprintf(stderr, "error: %s\n", err.message);
 *     return 1;
 * }
 * tether_sync_send(s, "hello", 5, 5000);
 * tether_msg m;
 * if (tether_sync_recv(s, &m, 5000) == 0) {
 *     printf("%.*s\n", (int)m.len, (const char *)m.data);
 *     tether_msg_free(&m);
 * }
 * tether_sync_close(s);
 * @endcode
 * @{
 */
#ifndef TETHER_SYNC_H
#define TETHER_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/error.h>
#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A blocking connection (opaque). */
typedef struct tether_sync tether_sync;

/** @brief A received message, owned by the caller. */
typedef struct tether_msg {
    uint8_t *data; /**< The payload (NULL when @ref len is 0); free with tether_msg_free(). */
    size_t len;    /**< Its length. */
} tether_msg;

/**
 * @brief Connects, waiting at most @p timeout_ms.
 *
 * Resolution, Happy Eyeballs and the error messages are those of
 * tether_conn_dial(). The private loop's resolver takes its settings (DNS
 * servers, DNS timeout and tries) from tether_conn_opts::loop_opts; the
 * connect deadline is the smaller of @p timeout_ms and
 * tether_conn_opts::connect_timeout_ms, and covers resolution, every
 * attempt and the TLS handshake.
 * @param[out] out        Receives the connection.
 * @param[in]  url        Where to connect, as for tether_conn_dial().
 * @param[in]  opts       Options (callbacks are ignored), or NULL for defaults.
 * @param[in]  timeout_ms Deadline for the whole set-up.
 * @param[out] out_err    Optional: on failure, the code and a message naming
 *                        the cause, e.g. "connect to tcp://127.0.0.1:9:
 *                        connection refused".
 * @retval TETHER_OK        Connected; close with tether_sync_close().
 * @retval TETHER_ETIMEDOUT The deadline passed.
 * @retval TETHER_EINVAL    A bad URL or option, including tether_conn_opts::loop_opts.
 * @return Any other code tether_conn_dial() or its `on_connect` can report.
 */
TETHER_API int tether_sync_connect(tether_sync **out, const char *url, const tether_conn_opts *opts,
                                   int timeout_ms, tether_error *out_err);

/**
 * @brief Sends one message and waits until it is written to the socket.
 *
 * On #TETHER_ETIMEDOUT the message stays queued in full and is sent by later
 * calls; it is never cut short on the wire.
 *
 * **Pipelining.** The timeout covers queueing and writing to the socket
 * (the kernel's buffer), never the peer's answer, so requests pipeline:
 * `send(a, 1000); send(b, 1000); recv(&ra, 5000); recv(&rb, 5000)` returns
 * from each send as soon as its bytes are written, whether or not the peer
 * has read them, and a send that timed out must not be repeated, because
 * its message is still queued and goes out, in order, before the next one.
 * @param[in] s          The connection.
 * @param[in] data       The message.
 * @param[in] len        Its length.
 * @param[in] timeout_ms How long to wait for room in the queue and for the write.
 * @retval TETHER_OK        Written to the socket.
 * @retval TETHER_ETIMEDOUT Not (fully) written in time; still queued.
 * @retval TETHER_EMSGSIZE  Larger than tether_conn_opts::max_msg.
 * @return Or the error that closed the connection (#TETHER_EOF, #TETHER_ECONNRESET...).
 */
TETHER_API int tether_sync_send(tether_sync *s, const void *data, size_t len, int timeout_ms);

/**
 * @brief Receives the next message, waiting at most @p timeout_ms.
 *
 * The payload is allocated for the caller; tether_sync_recv_into() receives
 * into a buffer of the caller's instead.
 * @param[in]  s          The connection.
 * @param[out] out_msg    Receives the message; free it with tether_msg_free().
 * @param[in]  timeout_ms How long to wait.
 * @retval TETHER_OK        A message was received.
 * @retval TETHER_ETIMEDOUT None arrived in time (the connection stays usable).
 * @retval TETHER_EOF       The peer closed the connection; no more messages.
 * @return Or the error that closed the connection.
 */
TETHER_API int tether_sync_recv(tether_sync *s, tether_msg *out_msg, int timeout_ms);

/**
 * @brief Receives the next message into the caller's buffer.
 *
 * Like tether_sync_recv() without an allocation. A message that does not
 * fit is not lost: it stays first in line, @p out_len says how large it is,
 * and a later call with a buffer that large returns it.
 * @code
 * uint8_t small[64];
 * size_t n;
 * int rv = tether_sync_recv_into(s, small, sizeof small, &n, 5000);
 * if (rv == TETHER_EMSGSIZE) {          // n is the size of the waiting message
 *     uint8_t *big = malloc(n);
 *     rv = tether_sync_recv_into(s, big, n, &n, 0);   // the same message
 * }
 * @endcode
 * @param[in]  s          The connection.
 * @param[out] buf        Receives the payload; may be NULL when @p cap is 0.
 * @param[in]  cap        Size of @p buf in bytes.
 * @param[out] out_len    The payload's length; with #TETHER_EMSGSIZE, the
 *                        size @p buf needs. 0 on the other errors.
 * @param[in]  timeout_ms How long to wait for a message.
 * @retval TETHER_OK        A message of *@p out_len bytes is in @p buf.
 * @retval TETHER_EMSGSIZE  The next message is larger than @p cap; nothing
 *                          was consumed and @p buf is unchanged.
 * @retval TETHER_ETIMEDOUT None arrived in time (the connection stays usable).
 * @retval TETHER_EOF       The peer closed the connection; no more messages.
 * @retval TETHER_EINVAL    @p s or @p out_len is NULL, or @p buf is NULL
 *                          with @p cap > 0.
 * @return Or the error that closed the connection.
 */
TETHER_API int tether_sync_recv_into(tether_sync *s, void *buf, size_t cap, size_t *out_len,
                                     int timeout_ms);

/**
 * @brief Sends a request with tether_call() and waits for its reply.
 *
 * The connection must have been opened with tether_conn_opts::calls set,
 * to a peer that set it too (see tether/delivery.h). Messages that arrive
 * meanwhile are kept for tether_sync_recv().
 * @param[in]  s          The connection.
 * @param[in]  req        The request; may be NULL if @p len is 0.
 * @param[in]  len        Its length.
 * @param[out] out_reply  Receives the reply; free it with tether_msg_free().
 * @param[in]  timeout_ms How long to wait for the reply; negative: until the
 *                        reply comes or the connection ends.
 * @retval TETHER_OK        The reply is in @p out_reply.
 * @retval TETHER_ETIMEDOUT No reply in time; the connection stays usable
 *                          and a late reply is dropped.
 * @retval TETHER_ENOTSUP   Calls are off here or the peer did not
 *                          negotiate them; tether_sync_last_error() says which.
 * @retval TETHER_EINVAL    NULL @p s or @p out_reply, or NULL @p req with
 *                          @p len > 0.
 * @return Or the error that closed the connection (#TETHER_EOF,
 *         #TETHER_ECONNRESET...), or a code of tether_call().
 */
TETHER_API int tether_sync_call(tether_sync *s, const void *req, size_t len, tether_msg *out_reply,
                                int timeout_ms);

/**
 * @brief Frees a message's payload and clears the record. NULL is ignored.
 * @param[in,out] msg The message.
 */
TETHER_API void tether_msg_free(tether_msg *msg);

/**
 * @brief Sends what is still queued, closes and frees the connection.
 *
 * Waits at most tether_conn_opts::close_timeout_ms for the queue to drain.
 * @param[in] s The connection; NULL is ignored.
 * @retval TETHER_OK Everything queued was sent.
 * @return Otherwise the error that prevented it; the connection is freed anyway.
 */
TETHER_API int tether_sync_close(tether_sync *s);

/**
 * @brief The detail of the last failure on this connection.
 * @param[in] s The connection.
 * @return A string owned by @p s, "" if nothing failed.
 */
TETHER_API const char *tether_sync_last_error(const tether_sync *s);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SYNC_H */
/** @} */
