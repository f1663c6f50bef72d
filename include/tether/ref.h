/* SPDX-License-Identifier: MIT */
/**
 * @file ref.h
 * @brief Thread-safe connection references: send to, close, or run code on a
 *        connection from any thread.
 *
 * @defgroup ref Thread-safe connection references
 * @brief A small value any thread may hold for a connection of another
 *        loop, which fails safely with #TETHER_ECLOSED once the connection
 *        is gone.
 *
 * A #tether_conn pointer belongs to its loop's thread: another thread must
 * never call a function on it, and a pointer carried to another thread may
 * already be freed. A #tether_ref is the handle to give other threads
 * instead (like NNG's pipe ids). It is a 64-bit id: a slot in one table of
 * the process plus the slot's generation. The slot is released once the
 * connection's `on_close` has run (even while its socket still lingers),
 * and its generation moves on, so an old reference never reaches a newer
 * connection that reuses the slot; every call on it returns
 * #TETHER_ECLOSED instead. References are plain values:
 * copy them freely; there is nothing to release.
 *
 * **Getting one.** tether_ref_get() on the connection's loop thread
 * (for example in `on_accept` or `on_connect`). All other functions of this
 * group may be called from any thread, including the owning loop's own.
 *
 * **Batching.** Operations from other threads go into one lock-free
 * multi-producer queue per loop (one atomic exchange per push). The first
 * push after the loop last took the queue schedules the next batch: one
 * tether_loop_post() (its lock, no allocation) and one eventfd write per
 * batch, not per message; the loop then takes up to 1024 operations in one
 * go, in push order. The loop's own tether_conn_send() calls take no lock
 * and never touch this queue. The operations of one thread on one reference
 * (sends, tether_ref_post(), tether_ref_close(),
 * tether_ref_on_drain()) are carried out in the order that thread made
 * them; operations of different threads interleave. Because of that
 * order, a close or a post waits behind the sends before it: when the
 * connection's queue is full (its peer does not read), the sends wait
 * there, and the close or post with them. To act on a connection at once
 * whatever it still has to send (drop a slow consumer, say), post to its
 * loop with tether_loop_post() and find the connection there by your own
 * bookkeeping (examples/chat_server.c does so).
 *
 * **Delivery reports.** tether_ref_send() may take a callback, called
 * exactly once on the owning loop's thread (never inside the call) for a
 * message the call accepted: with #TETHER_OK once the whole message has
 * been written to the socket (handed to the kernel), or with an error if
 * it never will be: #TETHER_ECLOSED when the connection closed first (its
 * `on_close` says why), or the error tether_conn_send() gave on the loop
 * (#TETHER_EINVAL for a message the framing cannot carry, #TETHER_ENOMEM).
 * So every accepted message is either written or reported failed. Bytes the
 * kernel accepted can still be lost if the peer goes away before reading
 * them; only an application acknowledgement covers that.
 *
 * **Backpressure.** Each reference counts the payload bytes accepted from
 * any thread and not yet handed to the connection's own send queue. The
 * loop hands messages over only while the connection's queue
 * (tether_conn_queued()) is below its tether_conn_opts::send_hwm, so a slow
 * peer holds them back. Once the count has reached the connection's
 * `send_hwm`, tether_ref_send() refuses with #TETHER_EAGAIN and
 * queues nothing (a single message larger than `send_hwm` is still taken
 * when nothing is pending). The sender then calls
 * tether_ref_on_drain() to be told when the count has fallen to the
 * connection's `send_lwm`: on the owning loop's thread, or, given the
 * sender's own loop, on that loop's thread. The drain request is queued
 * behind the refused thread's earlier operations, so it cannot miss a drain
 * that happened between the refusal and the request. The connection's own
 * `on_drain` is not involved.
 *
 * **Loop lifetime.** The reference table belongs to the process and
 * outlives every loop; a reference never keeps a loop alive, never delays
 * tether_loop_free(), and stays safe to use after its connection and its
 * loop are both gone (every call returns #TETHER_ECLOSED). This holds
 * because a loop can only be freed once all its connections are, and a
 * connection's slot is closed (after its `on_close`, at the latest when it
 * is freed) by waiting for any push in progress on it (a few instructions,
 * and once per batch the post described above; never user code) before
 * the slot can be reused. Operations accepted before that are owed their
 * callbacks: like tether_loop_post() callbacks they keep the owning
 * loop's tether_loop_run() going, and tether_loop_free() returns
 * #TETHER_EBUSY until the loop has run them; run it again. A loop passed to
 * tether_ref_on_drain() is held with tether_loop_ref() until the
 * notification has been posted to it.
 *
 * **Across loops.** A server running several loops (one per thread) fans
 * out by giving each connection's reference to the others: a callback on
 * loop A sends to a connection of loop B with tether_ref_send(), and after
 * #TETHER_EAGAIN asks for the drain notification on loop A
 * (tether_ref_on_drain() with A as `notify_loop`), so that everything the
 * application sees still happens on its own loop's thread.
 * @{
 */
#ifndef TETHER_REF_H
#define TETHER_REF_H

#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/error.h>
#include <tether/export.h>
#include <tether/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief A thread-safe reference to a connection: a slot index and a
 *        generation. Copy it by value; an all-zero reference is never valid.
 */
typedef struct tether_ref {
    uint64_t id; /**< Slot and generation; 0 is never a valid reference. */
} tether_ref;

/**
 * @brief Reports the outcome of a tether_ref_send() or a
 *        tether_ref_on_drain().
 * @param[in] ref    The reference the call was made on.
 * @param[in] status #TETHER_OK or the reason (see the group description).
 * @param[in] ud     The user data given to the call.
 */
typedef void (*tether_ref_cb)(tether_ref ref, int status, void *ud);

/**
 * @brief Work run on the owning loop by tether_ref_post().
 * @param[in] c      The live connection, to use like any other inside a
 *                   callback (send, close, read its stats); NULL when
 *                   @p status is not #TETHER_OK.
 * @param[in] status #TETHER_OK, or #TETHER_ECLOSED when the connection was
 *                   gone by the time the loop ran the work.
 * @param[in] ud     The user data given to tether_ref_post().
 */
typedef void (*tether_ref_work_cb)(tether_conn *c, int status, void *ud);

/**
 * @brief Returns the reference of a connection, creating it on first use.
 *
 * **Loop thread only** (the thread that runs the connection's loop). The
 * same connection always gives the same reference. Works in every state
 * before the connection started closing, dialling included (sends are then
 * queued until it is established, as with tether_conn_send()).
 * @param[in]  c       The connection.
 * @param[out] out_ref The reference; set to {0} on error.
 * @retval TETHER_OK      Done.
 * @retval TETHER_EINVAL  @p c or @p out_ref is NULL.
 * @retval TETHER_ECLOSED The connection is closing or closed.
 * @retval TETHER_ENOMEM  Out of memory, or the process has 1 048 575
 *                        references in use (the table's size).
 */
TETHER_API int tether_ref_get(tether_conn *c, tether_ref *out_ref);

/**
 * @brief Sends a copy of a message on the connection, from any thread.
 *
 * **Thread-safe.** The bytes are copied before this returns. The loop
 * queues the message with tether_conn_send() when it takes the batch
 * (see the group description for order and backpressure).
 * @param[in] ref  The reference.
 * @param[in] data The message; may be NULL if @p len is 0.
 * @param[in] len  Its length.
 * @param[in] cb   Called exactly once on the owning loop's thread if this
 *                 returns #TETHER_OK: written, or why not. May be NULL.
 * @param[in] ud   Passed to @p cb.
 * @retval TETHER_OK       Accepted.
 * @retval TETHER_EAGAIN   The reference's pending bytes have reached the
 *                         connection's `send_hwm`; nothing was queued. Call
 *                         tether_ref_on_drain() and send again then.
 * @retval TETHER_ECLOSED  The connection is gone (its `on_close` has run),
 *                         the reference is stale, or the loop
 *                         has seen the connection closing (it refused a
 *                         message of this reference, or
 *                         tether_ref_close() ran).
 * @retval TETHER_EMSGSIZE @p len is above the connection's `max_msg`.
 * @retval TETHER_EINVAL   @p ref was never issued, or @p data is NULL with
 *                         @p len > 0.
 * @retval TETHER_ENOMEM   Out of memory; nothing was queued.
 */
TETHER_API int tether_ref_send(tether_ref ref, const void *data, size_t len, tether_ref_cb cb,
                               void *ud);

/**
 * @brief Closes the connection gracefully (tether_conn_close()), from any
 *        thread.
 *
 * **Thread-safe.** Runs on the owning loop after this thread's earlier
 * operations on @p ref, so messages this thread sent before are flushed
 * first. Messages other threads' batches bring after it are refused by the
 * closing connection and reported to their callbacks with #TETHER_ECLOSED.
 * @param[in] ref The reference.
 * @retval TETHER_OK      Queued.
 * @retval TETHER_ECLOSED The connection is gone.
 * @retval TETHER_EINVAL  @p ref was never issued.
 * @retval TETHER_ENOMEM  Out of memory.
 */
TETHER_API int tether_ref_close(tether_ref ref);

/**
 * @brief Runs @p cb on the connection's loop with the live connection.
 *
 * **Thread-safe.** The way to do anything else with a connection from
 * another thread (read its statistics, pause it, send without copying).
 * @p cb runs exactly once on the owning loop's thread if this returns
 * #TETHER_OK, never inside this call: with the connection as long as its
 * `on_close` has not run (it may be closing: sends on it then fail with
 * #TETHER_ECLOSED), or with NULL and #TETHER_ECLOSED after that.
 * @param[in] ref The reference.
 * @param[in] cb  The work.
 * @param[in] ud  Passed to @p cb.
 * @retval TETHER_OK      Queued.
 * @retval TETHER_ECLOSED The connection is gone; @p cb will not run.
 * @retval TETHER_EINVAL  @p ref was never issued, or @p cb is NULL.
 * @retval TETHER_ENOMEM  Out of memory.
 */
TETHER_API int tether_ref_post(tether_ref ref, tether_ref_work_cb cb, void *ud);

/**
 * @brief Asks to be told when the reference's pending bytes have fallen to
 *        the connection's `send_lwm`, after tether_ref_send() returned
 *        #TETHER_EAGAIN.
 *
 * **Thread-safe.** One-shot: @p cb runs exactly once if this returns
 * #TETHER_OK, with #TETHER_OK (send again) or #TETHER_ECLOSED (the
 * connection closed first). If the pending bytes are already low when the
 * loop reaches the request, it fires at once (on a later iteration).
 * @param[in] ref         The reference.
 * @param[in] notify_loop Where @p cb runs: NULL for the owning loop's
 *                        thread (so @p cb must be thread-safe with respect
 *                        to the caller), or the caller's own loop, which
 *                        is then held with tether_loop_ref() until the
 *                        notification is posted to it. It must not be
 *                        freed before that.
 * @param[in] cb          The notification.
 * @param[in] ud          Passed to @p cb.
 * @retval TETHER_OK      Queued.
 * @retval TETHER_ECLOSED The connection is gone or known to be closing
 *                        (as for tether_ref_send()); @p cb will not run.
 * @retval TETHER_EINVAL  @p ref was never issued, or @p cb is NULL.
 * @retval TETHER_ENOMEM  Out of memory.
 */
TETHER_API int tether_ref_on_drain(tether_ref ref, tether_loop *notify_loop, tether_ref_cb cb,
                                   void *ud);

/**
 * @brief The payload bytes accepted through @p ref and not yet handed to the
 *        connection (what #TETHER_EAGAIN is decided on).
 *
 * **Thread-safe**; a snapshot that other threads may change at once.
 * @param[in] ref The reference.
 * @return The count, or 0 if the connection is gone.
 */
TETHER_API size_t tether_ref_pending(tether_ref ref);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TETHER_REF_H */
