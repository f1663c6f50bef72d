/* SPDX-License-Identifier: MIT */
/**
 * @file delivery.h
 * @brief Delivery you can reason about: per-message completion callbacks
 *        and request/response calls.
 *
 * @defgroup delivery Delivery
 * @brief Knowing what happened to a message, and getting an answer to it.
 *
 * tether_conn_send() says only that a message was queued. When the
 * application must know more, tether_conn_send_cb() takes a callback that
 * runs exactly once per message with its outcome: written, or failed with
 * the reason the connection gave. Plain tether_conn_send() pays nothing for
 * this: a tracked message is followed in the send queue by an empty marker
 * that the write path reaches once every byte before it has been written.
 *
 * **Calls.** tether_call() sends a request and runs a callback exactly once
 * with its reply, or with why there is none: its timeout passed
 * (#TETHER_ETIMEDOUT), it was canceled (#TETHER_ECANCELED), the peer does
 * not take calls (#TETHER_ENOTSUP), or the connection ended (its close
 * reason, as for completions). Any number of calls may be pending; the
 * replies may come in any order. On the other side a request reaches
 * `on_message` like any message, and tether_conn_msg_call_id() gives its
 * id there; tether_conn_reply() answers it then or later, in any order. A
 * request the server never answers ends on the caller's side by its
 * timeout or the end of the connection.
 *
 * Both ends must set tether_conn_opts::calls (len32 framing); they agree
 * through the HELLO control frame (capability bit 0, see "Heartbeat wire
 * format" in the connection group). Where the peer did not agree (a plain
 * length-prefixed peer, or a tether peer without the option), plain
 * messages work exactly as before, tether_call() fails with
 * #TETHER_ENOTSUP and tether_conn_last_error() says why, and the
 * connection logs the fallback once (#TETHER_LOG_INFO on a dialled
 * connection, #TETHER_LOG_DEBUG on an accepted one).
 *
 * **Wire format.** A request is a CALL control frame carrying the call id,
 * immediately followed by an ordinary len32 data frame with the request:
 *
 *     FF 05 00 04 | id (4 bytes, big-endian, never 0) | len32 | request
 *
 * and a reply is the same with type 6, REPLY, and the id of the request.
 * The two frames are queued as one piece, so nothing comes between them;
 * plain messages are not touched (12 bytes of framing per request or reply
 * instead of 4, nothing at all per plain message).
 *
 * **A reconnecting client** (tether_client): tether_client_send_cb()
 * reports when a message held by the client was completely written to one
 * of its connections, or that it was handed back through `on_undelivered`
 * (with the same reason). tether_client_call() calls on the current
 * connection; set tether_conn_opts::calls in tether_client_opts::conn_opts.
 * Calls are not held across reconnects: while the client is not connected
 * tether_client_call() returns #TETHER_ENOTCONN, and when the connection is
 * lost every pending call fails once with its close reason. They are never
 * retried, because a request may have been processed before the
 * connection broke (retry in the callback when the request is idempotent).
 */
#ifndef TETHER_DELIVERY_H
#define TETHER_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/export.h>
#include <tether/reconnect.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @ingroup delivery
 * @brief Reports the outcome of one message sent with tether_conn_send_cb().
 *
 * Runs exactly once per message that tether_conn_send_cb() accepted, on the
 * loop thread, never from inside tether_conn_send_cb() itself. Completions
 * of one connection run in the order their messages were sent. The
 * callback may send, close or abort the connection.
 * @param[in] c      The connection (still valid; it may be closing).
 * @param[in] status
 *   - #TETHER_OK: the whole message, framing included, was handed to the
 *     socket (to OpenSSL for `tls://`). This is not a delivery receipt: the
 *     peer may still lose it if the connection breaks afterwards.
 *   - otherwise the message was never completely written, and the code is
 *     the reason the connection ended, as `on_close` gets it:
 *     #TETHER_ECONNRESET, #TETHER_EOF, #TETHER_ETIMEDOUT, ... when the
 *     connection was lost; #TETHER_ECANCELED when it was aborted
 *     (tether_conn_abort(), or tether_loop_close_all() on a connection
 *     still in its handshake); #TETHER_ECLOSED when it was closed locally
 *     and the message could not be flushed (a close timeout), or the
 *     connect failed with no other reason. The failed completions of a
 *     connection run just before its `on_close`.
 * @param[in] ud     The user data given to tether_conn_send_cb().
 */
typedef void (*tether_send_cb)(tether_conn *c, int status, void *ud);

/**
 * @ingroup delivery
 * @brief Queues a copy of one message, as tether_conn_send(), and reports
 *        once what became of it.
 *
 * The same as tether_conn_send() (the bytes are copied, the message goes out
 * in order with the others) plus one small allocation for the record that
 * follows the message through the send queue.
 *
 * Closing the loop: tether_loop_free() refuses a loop with connections, so
 * a program that ends calls tether_loop_close_all() and runs the loop until
 * it has no handles; every outstanding callback has run by then (with
 * #TETHER_OK for what the close still flushed).
 * @param[in] c    The connection.
 * @param[in] data The message; may be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @param[in] cb   Called exactly once with the outcome; must not be NULL.
 * @param[in] ud   Passed to @p cb.
 * @retval TETHER_OK Queued; @p cb will run.
 * @retval TETHER_EINVAL @p c or @p cb NULL, or @p data NULL with @p len > 0.
 * @return Otherwise the codes of tether_conn_send() (#TETHER_EAGAIN,
 *         #TETHER_EMSGSIZE, #TETHER_ECLOSED, #TETHER_ENOMEM): nothing was
 *         queued and @p cb will not run.
 *
 * Thread rules: the connection's loop thread only.
 */
TETHER_API int tether_conn_send_cb(tether_conn *c, const void *data, size_t len, tether_send_cb cb,
                                   void *ud);

/**
 * @ingroup delivery
 * @brief Receives the outcome of one tether_call().
 *
 * Runs exactly once per call that tether_call() accepted, on the loop
 * thread, never from inside tether_call(). It may call, send, close or abort.
 * @param[in] c      The connection.
 * @param[in] status #TETHER_OK with the reply; otherwise why there is none:
 *   #TETHER_ETIMEDOUT (the call's timeout passed), #TETHER_ECANCELED
 *   (tether_call_cancel()), #TETHER_ENOTSUP (the peer's HELLO, or its
 *   first frame without one, showed that it does not take calls; for calls
 *   made before it arrived), or the connection's close reason, as
 *   tether_send_cb gets it (#TETHER_EOF, #TETHER_ECONNRESET,
 *   #TETHER_ECLOSED after tether_conn_close(), ...).
 * @param[in] data   The reply (borrowed until the callback returns); NULL
 *                   unless @p status is #TETHER_OK.
 * @param[in] len    Its length.
 * @param[in] ud     The user data given to tether_call().
 */
typedef void (*tether_reply_cb)(tether_conn *c, int status, const uint8_t *data, size_t len,
                                void *ud);

/**
 * @ingroup delivery
 * @brief Sends a request and calls @p on_reply once with its reply.
 *
 * On a dialled connection a call may be made before the peer's HELLO has
 * arrived (right after tether_conn_dial()): the request is kept, copied,
 * until the HELLO shows whether the peer takes calls, then sent in order
 * or failed with #TETHER_ENOTSUP.
 * @param[in]  c          The connection; tether_conn_opts::calls must be set.
 * @param[in]  req        The request; copied before this returns. May be NULL
 *                        if @p len is 0.
 * @param[in]  len        Its length (at most tether_conn_opts::max_msg).
 * @param[in]  timeout_ms Fail the call with #TETHER_ETIMEDOUT after this
 *                        many milliseconds without a reply; 0: no timeout
 *                        (it still ends with the connection).
 * @param[in]  on_reply   Called exactly once; must not be NULL.
 * @param[in]  ud         Passed to @p on_reply.
 * @param[out] out_id     The call's id (for tether_call_cancel()), unique
 *                        among the connection's pending calls; may be NULL.
 * @retval TETHER_OK       Sent (or kept until the HELLO); @p on_reply will run.
 * @retval TETHER_EINVAL   NULL @p c or @p on_reply, NULL @p req with
 *                         @p len > 0, or a negative @p timeout_ms.
 * @retval TETHER_ENOTSUP  tether_conn_opts::calls is off, or the peer did
 *                         not negotiate calls; tether_conn_last_error()
 *                         names which.
 * @retval TETHER_ECLOSED  The connection is closing or closed.
 * @retval TETHER_EMSGSIZE @p len is above tether_conn_opts::max_msg.
 * @retval TETHER_EAGAIN   The send queue is at its high-water mark (as
 *                         tether_conn_send()).
 * @retval TETHER_ENOMEM   Out of memory.
 * On any error nothing was sent and @p on_reply will not run.
 *
 * Thread rules: the connection's loop thread only.
 */
TETHER_API int tether_call(tether_conn *c, const void *req, size_t len, int timeout_ms,
                           tether_reply_cb on_reply, void *ud, uint32_t *out_id);

/**
 * @ingroup delivery
 * @brief Cancels a pending call: its callback runs from the loop with
 *        #TETHER_ECANCELED.
 *
 * The request may already be with the peer, which may still act on it; a
 * reply that arrives later is dropped (counted in
 * tether_stats::calls_late_replies).
 * @param[in] c  The connection.
 * @param[in] id The id tether_call() gave.
 * @retval TETHER_OK     Canceled; the callback will run with #TETHER_ECANCELED.
 * @retval TETHER_EINVAL No call with this id is pending on @p c (it has
 *                       ended already, or never existed).
 */
TETHER_API int tether_call_cancel(tether_conn *c, uint32_t id);

/**
 * @ingroup delivery
 * @brief The call id of the message `on_message` is delivering, for
 *        tether_conn_reply().
 *
 * Valid only inside `on_message`; keep the value to reply later.
 * @param[in] c The connection.
 * @return The id (never 0) when the message is a request made with
 *         tether_call(); 0 for a plain message, and outside `on_message`.
 */
TETHER_API uint32_t tether_conn_msg_call_id(const tether_conn *c);

/**
 * @ingroup delivery
 * @brief Sends the reply to a request received in `on_message`.
 *
 * Any time after the request arrived, in any order, from the loop thread;
 * exactly one reply per request is what the caller expects (a second one,
 * or one for an unknown id, is dropped by the caller and counted in its
 * tether_stats::calls_late_replies).
 * @param[in] c    The connection the request came from.
 * @param[in] id   tether_conn_msg_call_id() of the request.
 * @param[in] data The reply; copied. May be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @retval TETHER_OK      Queued.
 * @retval TETHER_EINVAL  NULL @p c, @p id 0, or NULL @p data with @p len > 0.
 * @retval TETHER_ENOTSUP Calls were not negotiated on this connection.
 * @return Otherwise the codes of tether_conn_send().
 */
TETHER_API int tether_conn_reply(tether_conn *c, uint32_t id, const void *data, size_t len);

/**
 * @ingroup delivery
 * @brief Reports the outcome of one message sent with
 *        tether_client_send_cb().
 *
 * Runs exactly once per accepted message, on the loop thread, never from
 * inside tether_client_send_cb(); in the order the messages were sent.
 * @param[in] cl     The client.
 * @param[in] status #TETHER_OK once the message was completely written to a
 *                   connection's socket (a connection lost after that does
 *                   not resend it; see "Which messages can be lost" in the
 *                   README); otherwise the reason it was handed back
 *                   through `on_undelivered`, which ran just before for the
 *                   same message: #TETHER_ECANCELED when the client was
 *                   closed, else the failure that ended the last connection
 *                   or attempt (tether_client_opts::max_attempts,
 *                   tether_client_opts::fail_fast).
 * @param[in] ud     The user data given to tether_client_send_cb().
 */
typedef void (*tether_client_done_cb)(tether_client *cl, int status, void *ud);

/**
 * @ingroup delivery
 * @brief tether_client_send() with a completion callback.
 *
 * The message is held, sent and resent exactly as with
 * tether_client_send(); @p cb says once what became of it.
 * @param[in] cl   The client.
 * @param[in] data The message; copied. May be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @param[in] cb   Called exactly once; must not be NULL.
 * @param[in] ud   Passed to @p cb.
 * @retval TETHER_OK     Held; @p cb will run.
 * @retval TETHER_EINVAL @p cl or @p cb NULL, or NULL @p data with @p len > 0.
 * @return Otherwise the codes of tether_client_send(); @p cb will not run.
 */
TETHER_API int tether_client_send_cb(tether_client *cl, const void *data, size_t len,
                                     tether_client_done_cb cb, void *ud);

/**
 * @ingroup delivery
 * @brief Receives the outcome of one tether_client_call(); as
 *        #tether_reply_cb, with the client.
 */
typedef void (*tether_client_reply_cb)(tether_client *cl, int status, const uint8_t *data,
                                       size_t len, void *ud);

/**
 * @ingroup delivery
 * @brief tether_call() on a reconnecting client's current connection.
 *
 * The client's connections must be made with tether_conn_opts::calls
 * (tether_client_opts::conn_opts). A call is tied to the connection it
 * went out on: when that connection is lost, the call fails once with its
 * close reason and is not retried.
 * @param[in]  cl         The client.
 * @param[in]  req        The request; copied. May be NULL if @p len is 0.
 * @param[in]  len        Its length.
 * @param[in]  timeout_ms As for tether_call() (0: none).
 * @param[in]  on_reply   Called exactly once; must not be NULL.
 * @param[in]  ud         Passed to @p on_reply.
 * @param[out] out_id     The call's id, for tether_client_call_cancel(); may be NULL.
 * @retval TETHER_OK       Sent; @p on_reply will run.
 * @retval TETHER_ENOTCONN The client is not connected (connecting, waiting
 *                         to retry, or gave up).
 * @retval TETHER_ECLOSED  The client is closed.
 * @return Otherwise the codes of tether_call(); @p on_reply will not run.
 */
TETHER_API int tether_client_call(tether_client *cl, const void *req, size_t len, int timeout_ms,
                                  tether_client_reply_cb on_reply, void *ud, uint32_t *out_id);

/**
 * @ingroup delivery
 * @brief Cancels a pending tether_client_call(), as tether_call_cancel().
 * @param[in] cl The client.
 * @param[in] id The id tether_client_call() gave.
 * @retval TETHER_OK     Canceled; its callback runs with #TETHER_ECANCELED.
 * @retval TETHER_EINVAL No such call is pending on the current connection.
 */
TETHER_API int tether_client_call_cancel(tether_client *cl, uint32_t id);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_DELIVERY_H */
