/* SPDX-License-Identifier: MIT */
/**
 * @file group.h
 * @brief Loop groups: N loops on N threads, and one listener spread over them.
 *
 * @defgroup group Loop groups
 * @brief Every core: one loop per thread, started and stopped by tether.
 *
 * A #tether_loop_group owns N loops (#tether_loop) and, once started, one
 * thread per loop that runs tether_loop_run() on it (the model of Netty's
 * EventLoopGroup and of one-loop-per-core servers built on libuv). Each
 * loop is an ordinary loop: everything of @ref loop and of the connection
 * API works on it, under the usual rule that a loop's objects are used only
 * on the thread that runs it. To hand work to loop i from another thread,
 * tether_loop_post() to tether_loop_group_loop(g, i).
 *
 * **One listener, many loops.** tether_group_listen() listens on one
 * address for the whole group and spreads the accepted connections over its
 * loops (#tether_group_balance): with SO_REUSEPORT each loop has its own
 * listening socket on the same address and the kernel picks the socket,
 * hence the loop, for every new connection; with an acceptor one socket on
 * loop 0 accepts and hands each socket to the loop with the fewest
 * connections. Either way a connection lives on one loop only: its TLS
 * handshake, `on_accept`, and every later callback run on that loop's
 * thread, and tether_conn_loop() says which loop that is
 * (tether_loop_group_index() turns it into an index).
 *
 * **Graceful stop.** tether_loop_group_stop() does, on each loop's thread:
 * 1. stop accepting: every listener on the loop is closed (group listeners
 *    included);
 * 2. tether_loop_close_all(): every connection is closed gracefully (what
 *    is queued is still sent, TLS sends close_notify; each is bounded by its
 *    tether_conn_opts::close_timeout_ms), accepted connections still in
 *    their handshake are dropped, reconnecting clients are closed, and
 *    timers, fd watchers, signal watchers and hooks are freed;
 * 3. once tether_loop_group_opts::stop_timeout_ms has passed, whatever
 *    connection is still open is aborted (tether_conn_abort()) and the
 *    handles created since step 2 are closed too;
 * 4. the thread returns when nothing is left on its loop: every `on_close`
 *    has run, exactly once, on that loop's thread (lingering closes add at
 *    most 2 s, see tether_conn_close()).
 *
 * **Draining stop.** tether_loop_group_shutdown() puts a drain before those
 * steps, for rolling restarts: on each loop's thread it calls
 * tether_listener_shutdown() on that loop's part of every group listener,
 * so each loop stops accepting and asks every connection it accepted to
 * drain: peers that negotiated control frames get a GOAWAY
 * (#TETHER_GOAWAY_SHUTDOWN) and finish what they sent, the others are
 * closed gracefully; drains still running at the deadline are cut short
 * (closed). Once a loop's listener connections are all gone, that loop
 * goes on with the steps above (connections that no group listener
 * accepted, dialled ones say, are closed there, and
 * tether_loop_group_opts::stop_timeout_ms then bounds the rest). The
 * callback reports when the last loop has finished draining.
 *
 * Then tether_loop_group_join() waits for the threads and
 * tether_loop_group_free() frees the loops. A typical server:
 * @code
 * tether_loop_group *g;
 * tether_loop_group_new(&g, 0, NULL, &err);         // one loop per CPU
 * tether_group_listener *gl;
 * tether_group_listen(&gl, g, "tls://0.0.0.0:7000", &lo, TETHER_BALANCE_AUTO, &err);
 * tether_loop_group_start(g);
 * ... wait for SIGTERM ...
 * tether_loop_group_stop(g);
 * tether_loop_group_join(g);
 * tether_loop_group_free(g);
 * @endcode
 * @{
 */
#ifndef TETHER_GROUP_H
#define TETHER_GROUP_H

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

/** @brief A group of loops, each run by its own thread (opaque). */
typedef struct tether_loop_group tether_loop_group;

/** @brief One listener spread over the loops of a group (opaque). */
typedef struct tether_group_listener tether_group_listener;

/** The default of tether_loop_group_opts::stop_timeout_ms: 10 seconds. */
#define TETHER_GROUP_STOP_TIMEOUT_DEFAULT 10000

/** The largest number of loops in a group. */
#define TETHER_GROUP_MAX_LOOPS 1024u

/**
 * @brief Options for tether_loop_group_new().
 *
 * Initialise with tether_loop_group_opts_init().
 */
typedef struct tether_loop_group_opts {
    size_t size;                       /**< Set by tether_loop_group_opts_init(); do not change. */
    const tether_loop_opts *loop_opts; /**< Options for every loop (copied by each
                                            tether_loop_new()); NULL for defaults. */
    int stop_timeout_ms;               /**< How long tether_loop_group_stop() lets connections close
                                            gracefully before it aborts the rest. 0 means
                                            #TETHER_GROUP_STOP_TIMEOUT_DEFAULT; negative means never
                                            abort (each connection's close_timeout_ms still bounds its
                                            close). */
} tether_loop_group_opts;

/**
 * @brief Fills @p opts with defaults; used through tether_loop_group_opts_init().
 * @param[out] opts The options.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_loop_group_opts_init_sized(tether_loop_group_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_loop_group_opts with the defaults.
 * @param opts Pointer to the options.
 */
#define tether_loop_group_opts_init(opts) tether_loop_group_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Creates a group of loops; no thread runs yet.
 *
 * Until tether_loop_group_start(), the loops belong to the calling thread
 * like any new loop: set them up (listeners, timers, dials) from here.
 * @param[out] out     Receives the group; NULL on failure.
 * @param[in]  nloops  How many loops: 1 to #TETHER_GROUP_MAX_LOOPS, or 0 for
 *                     one per CPU online (sysconf(_SC_NPROCESSORS_ONLN)).
 * @param[in]  opts    Options, or NULL for defaults. Copied.
 * @param[out] out_err Optional: on failure, the code and a message.
 * @retval TETHER_OK     Created; free with tether_loop_group_free().
 * @retval TETHER_EINVAL A NULL @p out, too many loops, or bad options.
 * @retval TETHER_ENOMEM Out of memory.
 * @retval TETHER_EMFILE No descriptors left for a loop.
 */
TETHER_API int tether_loop_group_new(tether_loop_group **out, size_t nloops,
                                     const tether_loop_group_opts *opts, tether_error *out_err);

/**
 * @brief Starts one thread per loop, each running tether_loop_run().
 *
 * The group holds a reference on every loop (tether_loop_ref()), so a
 * thread keeps running while its loop is empty, until
 * tether_loop_group_stop(). From here on, use a loop's objects only on its
 * thread. Do not call tether_loop_stop() on a group's loop: the thread
 * would just run it again.
 * @param[in]  g       The group.
 * @param[out] out_err Optional: on failure, the code and a message.
 * @retval TETHER_OK     Running.
 * @retval TETHER_EINVAL @p g is NULL.
 * @retval TETHER_EBUSY  Already started.
 * @retval TETHER_ESYS   A thread could not be created; the threads already
 *                       started are told to stop. The group cannot be
 *                       started again: call tether_loop_group_join() and
 *                       tether_loop_group_free().
 */
TETHER_API int tether_loop_group_start(tether_loop_group *g, tether_error *out_err);

/**
 * @brief The number of loops in the group.
 * @param[in] g The group.
 * @return The count, 0 for a NULL group. Any thread.
 */
TETHER_API size_t tether_loop_group_count(const tether_loop_group *g);

/**
 * @brief Loop @p i of the group.
 *
 * Any thread may ask; the loop itself is used under the threading rules of
 * @ref loop (its thread, or tether_loop_post()).
 * @param[in] g The group.
 * @param[in] i The index, 0 to tether_loop_group_count() - 1.
 * @return The loop, valid until tether_loop_group_free(); NULL if @p i is
 *         out of range or @p g is NULL.
 */
TETHER_API tether_loop *tether_loop_group_loop(const tether_loop_group *g, size_t i);

/**
 * @brief The index of a loop in the group.
 * @param[in] g    The group.
 * @param[in] loop A loop, for example tether_conn_loop() of a connection.
 * @return Its index, or -1 if it is not one of the group's loops. Any thread.
 */
TETHER_API int tether_loop_group_index(const tether_loop_group *g, const tether_loop *loop);

/**
 * @brief The index of the loop the calling thread runs.
 * @param[in] g The group.
 * @return The index, or -1 if the caller is not one of the group's threads.
 */
TETHER_API int tether_loop_group_current(const tether_loop_group *g);

/**
 * @brief Starts the graceful stop of every loop (see the group description).
 *
 * Asynchronous: it posts the stop to every loop and returns. **Thread-safe**:
 * any thread may call it, including a callback on one of the group's loops
 * (a signal watcher, say). Idempotent. A group never started has nothing to
 * stop: tether_loop_group_free() closes its loops' handles itself. During
 * a tether_loop_group_shutdown() it cuts the drains short (once).
 * @param[in] g The group; NULL is ignored.
 * @retval TETHER_OK     Stopping (or stopped, or never started).
 * @retval TETHER_ENOMEM A stop could not be posted; call again.
 */
TETHER_API int tether_loop_group_stop(tether_loop_group *g);

/**
 * @brief Reports the end of the drain of tether_loop_group_shutdown(),
 *        exactly once.
 *
 * Runs on the thread of the loop that finished draining last, when every
 * connection accepted by the group's listeners is gone (each one's
 * `on_close` has run on its own loop's thread). That loop, and loops
 * still finishing their stop, may still run `on_close` of other
 * connections afterwards. Do not call tether_loop_group_join() from here
 * (it returns #TETHER_EBUSY); tether_loop_post() to another thread, or
 * signal one, instead.
 * @param[in] g      The group.
 * @param[in] status #TETHER_OK when every drain finished before the
 *                   deadline; #TETHER_ETIMEDOUT when some connection had to
 *                   be closed at the deadline (its `on_close` says so);
 *                   #TETHER_ECANCELED when tether_loop_group_stop() cut
 *                   the drain short.
 * @param[in] ud     The user data given to tether_loop_group_shutdown().
 */
typedef void (*tether_group_shutdown_cb)(tether_loop_group *g, int status, void *ud);

/**
 * @brief Starts a draining stop: every group listener drains its
 *        connections on every loop, then the group stops.
 *
 * See "Draining stop" in the group description: each loop runs
 * tether_listener_shutdown(@p deadline_ms) on its part of every group
 * listener (stop accepting; GOAWAY to peers with control frames, a
 * graceful close for the others; at the deadline the drains still running
 * are closed, bounded by tether_conn_opts::close_timeout_ms), and then
 * the steps of tether_loop_group_stop() (whose stop_timeout_ms starts
 * only now). The threads end as after tether_loop_group_stop(): join with
 * tether_loop_group_join().
 *
 * Asynchronous and **thread-safe**: any thread may call it, including a
 * callback on one of the group's loops. Calling tether_loop_group_stop()
 * during the drain cuts it short: every loop closes what is still draining
 * at once (as at the deadline, but without waiting); @p on_done still runs.
 * @param[in] g           The group.
 * @param[in] deadline_ms How long the drains may take: 0 for
 *                        #TETHER_DRAIN_DEADLINE_DEFAULT, negative for no
 *                        deadline.
 * @param[in] on_done     Called once when every loop has finished draining
 *                        (see #tether_group_shutdown_cb); may be NULL.
 * @param[in] ud          Passed to @p on_done.
 * @retval TETHER_OK     Draining; @p on_done will run, never from inside
 *                       this call.
 * @retval TETHER_EINVAL @p g is NULL, or was never started (nothing runs to
 *                       drain: tether_loop_group_free() closes its handles).
 * @retval TETHER_EBUSY  The group is already stopping or shutting down.
 */
TETHER_API int tether_loop_group_shutdown(tether_loop_group *g, int deadline_ms,
                                          tether_group_shutdown_cb on_done, void *ud);

/**
 * @brief Waits until every thread of the group has returned.
 *
 * The threads return only after tether_loop_group_stop() (from any thread,
 * before or during this call). Idempotent.
 * @param[in] g The group.
 * @retval TETHER_OK     Every thread has returned (or none was started).
 * @retval TETHER_EINVAL @p g is NULL.
 * @retval TETHER_EBUSY  Called from one of the group's own threads.
 */
TETHER_API int tether_loop_group_join(tether_loop_group *g);

/**
 * @brief Frees the group, its loops and its group listeners.
 *
 * Call after tether_loop_group_join(), or on a group that was never
 * started: then the handles left on its loops are closed
 * (tether_loop_close_all()) and the loops run on the calling thread until
 * their close callbacks have run.
 * @param[in] g The group; NULL is accepted and ignored.
 * @retval TETHER_OK    Freed.
 * @retval TETHER_EBUSY Threads are still running (not joined), and nothing
 *                      was freed; or a loop could not be emptied (a handle
 *                      that keeps being recreated), and the loops before it
 *                      were freed: calling again goes on from that loop.
 */
TETHER_API int tether_loop_group_free(tether_loop_group *g);

/**
 * @brief How a group listener spreads connections over the loops.
 */
typedef enum tether_group_balance {
    /** SO_REUSEPORT for `tcp://` and `tls://`, the acceptor for `unix://`. */
    TETHER_BALANCE_AUTO = 0,
    /** One listening socket per loop on the same address (SO_REUSEPORT);
     *  the kernel spreads connections by a hash of their addresses, so the
     *  spread is even over many clients but not per connection, and a
     *  busy loop still gets its share. TCP and TLS only. */
    TETHER_BALANCE_REUSEPORT = 1,
    /** One listening socket on loop 0 accepts every connection and hands
     *  the socket to the loop with the fewest connections (accepted and
     *  alive, including sockets on their way), through tether_loop_post().
     *  Any scheme; the only choice for Unix sockets. */
    TETHER_BALANCE_ACCEPTOR = 2,
} tether_group_balance;

/**
 * @brief Listens on @p url for the whole group.
 *
 * Makes one #tether_listener per loop with @p opts (the same `on_accept`,
 * `userdata`, `conn_opts`, `on_error`, ...), so each loop's connections
 * share one configuration on that loop. `on_accept` runs on the thread of
 * the loop that owns the connection, with that loop's listener as its
 * first argument: tether_conn_loop() and tether_loop_group_index() tell
 * which loop it is. tether_listen_opts::max_conns applies per loop, and
 * tether_listen_opts::reuseport is ignored (@p balance decides). With port
 * 0, every loop listens on the port the kernel gave the first one.
 *
 * Call from a thread that runs none of the group's loops, before or after
 * tether_loop_group_start(); after start it waits until every loop has
 * set up its part.
 * @param[out] out     Receives the group listener, valid until
 *                     tether_loop_group_free() (closing it keeps it readable).
 * @param[in]  g       The group.
 * @param[in]  url     Where to listen, as for tether_listen().
 * @param[in]  opts    Options, or NULL for defaults.
 * @param[in]  balance How to spread connections (#tether_group_balance).
 * @param[out] out_err Optional: on failure, the code and a message.
 * @retval TETHER_OK     Listening on every loop.
 * @retval TETHER_EINVAL A NULL argument, a bad URL or option, or
 *                       #TETHER_BALANCE_REUSEPORT with a `unix://` URL.
 * @retval TETHER_EBUSY  Called from one of the group's threads.
 * @retval TETHER_ECLOSED The group is stopping or stopped.
 * @return Or any error of tether_listen(); then nothing is left listening.
 */
TETHER_API int tether_group_listen(tether_group_listener **out, tether_loop_group *g,
                                   const char *url, const tether_listen_opts *opts,
                                   tether_group_balance balance, tether_error *out_err);

/**
 * @brief Stops listening on every loop; accepted connections are not affected.
 *
 * **Thread-safe**, asynchronous (each loop closes its part on its thread)
 * and idempotent. The group listener stays readable (its statistics) until
 * tether_loop_group_free().
 * @param[in] gl The group listener; NULL is ignored.
 */
TETHER_API void tether_group_listener_close(tether_group_listener *gl);

/**
 * @brief The URL the group listens on, with the real port filled in.
 * @param[in] gl The group listener.
 * @return A string owned by @p gl, valid until tether_loop_group_free().
 */
TETHER_API const char *tether_group_listener_url(const tether_group_listener *gl);

/**
 * @brief The port of a TCP or TLS group listener (useful after port 0).
 * @param[in] gl The group listener.
 * @return The port, or 0 for a Unix socket.
 */
TETHER_API int tether_group_listener_port(const tether_group_listener *gl);

/**
 * @brief Reads a group listener's counters, summed over its loops
 *        (@p loop < 0) or of one loop (its index).
 *
 * **Thread-safe**: the counters are kept as atomics, so any thread may ask,
 * also after the listener was closed. `active` counts connections accepted
 * and alive; for the acceptor it includes sockets on their way to a loop.
 * @param[in]  gl   The group listener.
 * @param[in]  loop A loop index, or -1 for the sum over the group.
 * @param[out] st   Receives the counters.
 * @param[in]  size `sizeof *st` as the caller's header defines it.
 * @retval TETHER_OK     Filled.
 * @retval TETHER_EINVAL A NULL argument, a @p size too small or @p loop out of range.
 */
TETHER_API int tether_group_listener_get_stats_sized(const tether_group_listener *gl, int loop,
                                                     tether_listener_stats *st, size_t size);

/**
 * @brief Reads a group listener's counters (see
 *        tether_group_listener_get_stats_sized()).
 * @param gl   The group listener.
 * @param loop A loop index, or -1 for the whole group.
 * @param st   Pointer to a #tether_listener_stats.
 */
#define tether_group_listener_get_stats(gl, loop, st)                                              \
    tether_group_listener_get_stats_sized((gl), (loop), (st), sizeof(*(st)))

#ifdef __cplusplus
}
#endif

#endif /* TETHER_GROUP_H */
/** @} */
