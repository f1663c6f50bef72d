/* SPDX-License-Identifier: MIT */
/**
 * @file delivery.h
 * @brief Delivery you can reason about: per-message completion callbacks.
 *
 * @defgroup delivery Delivery
 * @brief Knowing what happened to a message.
 *
 * tether_conn_send() says only that a message was queued. When the
 * application must know more, tether_conn_send_cb() takes a callback that
 * runs exactly once per message with its outcome: written, or failed with
 * the reason the connection gave. Plain tether_conn_send() pays nothing for
 * this: a tracked message is followed in the send queue by an empty marker
 * that the write path reaches once every byte before it has been written.
 */
#ifndef TETHER_DELIVERY_H
#define TETHER_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/export.h>

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

#ifdef __cplusplus
}
#endif

#endif /* TETHER_DELIVERY_H */
