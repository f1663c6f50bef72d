/* SPDX-License-Identifier: MIT */
/**
 * @file loop.h
 * @brief The event loop: an epoll reactor with timers and deferred callbacks.
 *
 * @defgroup loop Event loop
 * @brief One loop per thread; it owns sockets, timers and deferred callbacks.
 *
 * A #tether_loop waits on epoll for socket readiness, fires timers kept in a
 * min-heap on the monotonic clock (arm and cancel are O(log n)), and runs
 * deferred callbacks. Every connection, listener and timer belongs to the
 * loop it was created on, and every callback of theirs runs on the thread
 * that runs that loop.
 *
 * **Threading model.** A loop and everything on it belong to one thread: call
 * loop, timer, connection and listener functions only from the thread that
 * runs the loop (or, before it runs, the thread that created it). The only
 * functions that may be called from any thread are tether_loop_post(),
 * tether_loop_wakeup(), tether_loop_ref() and tether_loop_unref(); use
 * tether_loop_post() to hand work to a loop from another thread. Only
 * tether_loop_wakeup() may be called from a signal handler. For many
 * connections on many cores, run one loop per thread.
 *
 * **Handles.** Timers, fd watchers (#tether_io), signal watchers
 * (#tether_signal), hooks (#tether_hook), listeners, connections and
 * reconnecting clients are *handles*: objects registered on a loop until
 * freed (or closed). A handle is *active* while started (a listener from
 * creation to close, a connection or client until the library frees it).
 * tether_loop_run() keeps running while an active handle is *referenced*
 * (the default); unref it (tether_timer_unref(), tether_io_unref(),
 * tether_conn_unref(), ...) to let the loop return while it is still
 * active, as with libuv's uv_unref(). tether_loop_walk() visits every
 * registered handle, and tether_loop_close_all() frees or closes them at
 * shutdown.
 *
 * **Embedding.** Another event loop (libuv, GLib, libevent, a hand-written
 * poll loop) can drive a tether loop: watch tether_loop_backend_fd() for
 * readability, wait at most tether_loop_backend_timeout() milliseconds, and
 * call tether_loop_run_once() with a timeout of 0 whenever either fires.
 * See examples/embed_libuv.c.
 * @{
 */
#ifndef TETHER_LOOP_H
#define TETHER_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief An event loop (opaque). */
typedef struct tether_loop tether_loop;

/** @brief A one-shot or repeating timer on a loop (opaque). */
typedef struct tether_timer tether_timer;

/**
 * @brief Callback run by a timer when it expires.
 * @param[in] t  The timer. It may be restarted, stopped or freed inside.
 * @param[in] ud The user data given to tether_timer_start().
 */
typedef void (*tether_timer_cb)(tether_timer *t, void *ud);

/**
 * @brief The kinds of handle that tether_loop_walk() reports.
 *
 * The `handle` pointer given to the walk callback points to the object of
 * that type: cast it to the type named here.
 */
typedef enum tether_handle_type {
    TETHER_HANDLE_TIMER = 1,    /**< A #tether_timer; free with tether_timer_free(). */
    TETHER_HANDLE_IO = 2,       /**< A #tether_io; free with tether_io_free(). */
    TETHER_HANDLE_SIGNAL = 3,   /**< A #tether_signal; free with tether_signal_free(). */
    TETHER_HANDLE_HOOK = 4,     /**< A #tether_hook; free with tether_hook_free(). */
    TETHER_HANDLE_LISTENER = 5, /**< A #tether_listener; close with tether_listener_close(). */
    TETHER_HANDLE_CONN = 6,     /**< A #tether_conn; close with tether_conn_close(). */
    TETHER_HANDLE_CLIENT = 7    /**< A #tether_client; close with tether_client_close(). */
} tether_handle_type;

/**
 * @brief Callback of tether_loop_walk(), once per registered handle.
 * @param[in] loop   The loop being walked.
 * @param[in] type   What the handle is.
 * @param[in] handle The handle, a pointer to the object named by @p type. It
 *                   may be freed or closed inside the callback, and so may
 *                   any other handle.
 * @param[in] ud     The user data given to tether_loop_walk().
 */
typedef void (*tether_walk_cb)(tether_loop *loop, tether_handle_type type, void *handle, void *ud);

/**
 * @brief Callback posted to a loop with tether_loop_post().
 * @param[in] loop The loop running the callback.
 * @param[in] ud   The user data given to tether_loop_post().
 */
typedef void (*tether_post_cb)(tether_loop *loop, void *ud);

/**
 * @brief Options for tether_loop_new().
 *
 * Initialise with tether_loop_opts_init() before setting fields, so that a
 * program compiled against an older header keeps working with a newer
 * library (the `size` field records which fields the caller knows).
 *
 * The DNS fields configure the loop's resolver: one asynchronous c-ares
 * channel per loop, created on the first lookup of a host name (numeric
 * hosts and `localhost` never need it) and freed by tether_loop_free(). Its
 * sockets and timeouts run on the loop like everything else; a lookup never
 * blocks the loop's thread. Unless overridden here, the name servers,
 * search domains and options come from /etc/resolv.conf, and /etc/hosts is
 * consulted before DNS. See also the DNS and connecting group (@ref dns).
 */
typedef struct tether_loop_opts {
    size_t size; /**< Set by tether_loop_opts_init(); do not change. */
    /**
     * Comma-separated DNS servers ("IP" or "IP:PORT", IPv6 as "[::1]:53")
     * that replace the ones from /etc/resolv.conf for this loop; NULL for the
     * system configuration. Copied by tether_loop_new().
     */
    const char *dns_servers;
    int dns_timeout_ms; /**< DNS timeout of the first try; 0 for the default (2000 ms).
                             c-ares doubles it for each further round over the servers,
                             so with one server a lookup gives up after about
                             dns_timeout_ms * (2^dns_tries - 1): 6 s with the defaults.
                             tether_conn_opts::connect_timeout_ms still bounds every dial. */
    int dns_tries;      /**< DNS tries per server; 0 for the default (2). */
} tether_loop_opts;

/**
 * @brief Fills @p opts with defaults; used through tether_loop_opts_init().
 * @param[out] opts The options to initialise.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_loop_opts_init_sized(tether_loop_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_loop_opts with defaults.
 * @param opts Pointer to the options to initialise.
 */
#define tether_loop_opts_init(opts) tether_loop_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Creates an event loop.
 * @param[out] out  Receives the loop; set to NULL on failure.
 * @param[in]  opts Options, or NULL for defaults. Copied; need not outlive the call.
 * @retval TETHER_OK      Success; free the loop with tether_loop_free().
 * @retval TETHER_EINVAL  @p out is NULL or an option is invalid (for example a
 *                        tether_loop_opts::dns_servers entry that is not an IP
 *                        address with an optional port).
 * @retval TETHER_ENOMEM  Out of memory.
 * @retval TETHER_EMFILE  No file descriptor for epoll or eventfd.
 */
TETHER_API int tether_loop_new(tether_loop **out, const tether_loop_opts *opts);

/**
 * @brief Frees a loop that has no live handles left.
 *
 * Close every connection, client and listener and free every timer and
 * watcher first (tether_loop_close_all() does it for all of them), then run
 * the loop until their close callbacks have fired
 * (tether_loop_run() returns once nothing is active).
 *
 * A callback posted by another thread after tether_loop_run() returned
 * (or while tether_loop_ref() holds the loop) also keeps the loop from
 * being freed: it is owed exactly one run. tether_loop_free() then returns
 * #TETHER_EBUSY and changes nothing; run the loop again (tether_loop_run()
 * runs the queued callbacks and returns once nothing else is active) and
 * call tether_loop_free() again. To free a loop safely while other threads
 * may still post to it, have each of them hold a tether_loop_ref() until
 * after its last tether_loop_post() call, so that tether_loop_run() does not
 * return before they are done.
 * @param[in] loop The loop; NULL is accepted and ignored.
 * @retval TETHER_OK    The loop was freed.
 * @retval TETHER_EBUSY Called from inside the loop's own callback, or
 *                      handles, deferred work, posted callbacks or
 *                      tether_loop_ref() references remain; nothing was freed.
 */
TETHER_API int tether_loop_free(tether_loop *loop);

/**
 * @brief Runs the loop until tether_loop_stop() is called or nothing is active.
 *
 * "Active" means: an open and referenced connection, client or listener,
 * a started and referenced handle (timer, fd watcher, signal watcher,
 * hook), a pending or posted callback, or a tether_loop_ref() reference. A server that listens
 * therefore runs until stopped.
 * @param[in] loop The loop.
 * @retval TETHER_OK     Stopped, or nothing left to do.
 * @retval TETHER_EINVAL @p loop is NULL.
 * @retval TETHER_EBUSY  Called from inside a callback of the same loop.
 */
TETHER_API int tether_loop_run(tether_loop *loop);

/**
 * @brief Runs one iteration: expired timers, I/O, deferred callbacks.
 *
 * One iteration runs, in order: expired timers, posted callbacks, deferred
 * work, idle hooks, prepare hooks, the flush of queued output; then it waits
 * for I/O (never longer than the next timer, and not at all if work is
 * pending, if posted callbacks or deferred work ran in this iteration
 * before the wait, or if an idle hook is started), dispatches the ready fds (fd
 * watchers, signals, connections), runs the check hooks, and finally runs
 * the timers and work that became due meanwhile.
 *
 * An embedding loop calls this with @p timeout_ms 0 whenever
 * tether_loop_backend_fd() is readable or tether_loop_backend_timeout()
 * has passed.
 * @param[in] loop       The loop.
 * @param[in] timeout_ms The longest time to wait for I/O if nothing is ready:
 *                       0 polls without waiting, a negative value waits until
 *                       the next event or timer. The library's own timers
 *                       count: a connection's deadlines, and for 1-2 s after
 *                       TLS traffic the once-a-second sweep that releases
 *                       idle connections' OpenSSL buffers.
 * @return A positive value if handles remain active, 0 if none do, or a
 *         negative TETHER_E* code (#TETHER_EINVAL, #TETHER_EBUSY as for
 *         tether_loop_run()).
 */
TETHER_API int tether_loop_run_once(tether_loop *loop, int timeout_ms);

/**
 * @brief Makes tether_loop_run() return after the current iteration.
 *
 * Loop thread only; from another thread, post a callback that calls it.
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_stop(tether_loop *loop);

/**
 * @brief Runs @p cb on the loop's thread during a later iteration.
 *
 * **Thread-safe**: may be called from any thread, including from inside a
 * callback on the loop itself. Callbacks posted from one thread run in the
 * order they were posted. The loop wakes up if it is waiting.
 *
 * **Not async-signal-safe**: it allocates and takes a mutex, so never call
 * it from a signal handler; use tether_loop_wakeup() there, or watch the
 * signal with #tether_signal.
 *
 * The caller must know that @p loop is not being freed meanwhile: a thread
 * that posts to a loop it does not run should hold tether_loop_ref() from
 * before its first post until after its last one.
 *
 * If this returns #TETHER_OK the callback runs exactly once, never from
 * inside this call.
 * @param[in] loop The loop.
 * @param[in] cb   The callback.
 * @param[in] ud   Passed to @p cb.
 * @retval TETHER_OK     Queued.
 * @retval TETHER_EINVAL @p loop or @p cb is NULL.
 * @retval TETHER_ENOMEM Out of memory; the callback will not run.
 */
TETHER_API int tether_loop_post(tether_loop *loop, tether_post_cb cb, void *ud);

/**
 * @brief Wakes the loop if it is blocked waiting for events.
 *
 * **Thread-safe** and **async-signal-safe**: it does one atomic exchange
 * and at most one write(2) to an eventfd, takes no lock, allocates nothing
 * and leaves `errno` as it found it, so a signal handler may call it (the
 * handler must still know that @p loop outlives it). Cheap and coalescing:
 * many wakeups before the loop runs cost one iteration. A wakeup makes
 * tether_loop_backend_fd() readable and makes a blocked tether_loop_run()
 * or tether_loop_run_once() go round once; by itself it runs no callback.
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_wakeup(tether_loop *loop);

/**
 * @brief Holds the loop alive: tether_loop_run() does not return for lack
 *        of work while a reference is held.
 *
 * For loops that other threads post to: a producer thread takes a reference
 * before it starts posting and drops it with tether_loop_unref() after its
 * last post, so that the loop can neither return early nor be freed under
 * it. References are counted. tether_loop_stop() still stops the loop.
 *
 * **Thread-safe** (not async-signal-safe).
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_ref(tether_loop *loop);

/**
 * @brief Drops a reference taken with tether_loop_ref().
 *
 * **Thread-safe.** Wakes the loop, so that a tether_loop_run() with nothing
 * else left to do returns. Dropping more references than were taken is a
 * programming error and is ignored.
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_unref(tether_loop *loop);

/**
 * @brief Calls @p cb for every handle registered on the loop.
 *
 * Visits timers, fd watchers, signal watchers, hooks, listeners,
 * connections and reconnecting clients that have not been freed or closed,
 * in the order they were created. The callback may free or close the
 * visited handle or any other; a handle created during the walk is not
 * visited. A connection is visited once the application has it (from
 * tether_conn_dial() or `on_accept`) until its `on_close` has run, and a
 * client until `on_state` has reported #TETHER_CLIENT_CLOSED (the memory
 * outlives these callbacks briefly, but the application must not use it);
 * the connection of a reconnecting client is not visited: it belongs to
 * the client.
 *
 * Loop thread only.
 * @param[in] loop The loop.
 * @param[in] cb   Called once per handle.
 * @param[in] ud   Passed to @p cb.
 * @retval TETHER_OK     Every handle was visited.
 * @retval TETHER_EINVAL @p loop or @p cb is NULL.
 */
TETHER_API int tether_loop_walk(tether_loop *loop, tether_walk_cb cb, void *ud);

/**
 * @brief Frees every timer, fd watcher, signal watcher and hook and closes
 *        every listener, connection and reconnecting client still on the loop.
 *
 * Connections are closed with tether_conn_close() (gracefully: what is
 * queued is still sent), clients with tether_client_close(); accepted
 * connections still in their handshake, which the application has not
 * seen, are dropped. For shutdown: afterwards run the loop until it
 * returns (listener frees and the close callbacks of connections and
 * clients run there) and free it. The
 * application's own pointers to the freed handles become dangling. Loop
 * thread only; safe inside a callback of the loop.
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_close_all(tether_loop *loop);

/**
 * @brief The name of a handle type ("timer", "io", "signal", "hook",
 *        "listener", "conn", "client"), for logs.
 * @param[in] type The type.
 * @return A static string; "unknown" for a value that is not a type.
 */
TETHER_API const char *tether_handle_type_name(tether_handle_type type);

/**
 * @brief The loop's epoll descriptor, for embedding in another event loop.
 *
 * It is readable whenever tether_loop_run_once() has something to do:
 * an fd event, a wakeup, a posted callback, or work queued from outside an
 * iteration (a send, a close, a started hook or a timer armed from a
 * foreign loop's callback wakes the loop's eventfd, which the epoll set
 * watches). Work that becomes due with time is covered by
 * tether_loop_backend_timeout(). Watch it for readability only; never read
 * from it, write to it or close it. Valid until tether_loop_free().
 *
 * Asking for it marks the loop as embedded: from then on, work queued from
 * outside an iteration costs one eventfd write per iteration, which a loop
 * run by tether_loop_run() alone does not need. Loop thread only.
 * @param[in] loop The loop.
 * @return The descriptor, or -1 if @p loop is NULL.
 */
TETHER_API int tether_loop_backend_fd(tether_loop *loop);

/**
 * @brief How long an embedding loop may wait before it must call
 *        tether_loop_run_once() even if tether_loop_backend_fd() stays quiet.
 *
 * Call it after every tether_loop_run_once() and whenever the embedding
 * loop is about to block (a libuv prepare handle, a GSource's prepare).
 * @param[in] loop The loop.
 * @return 0 if work is waiting (deferred or posted callbacks, queued
 *         output, a started idle hook, an expired timer), otherwise the
 *         milliseconds until the next timer, or -1 if no timer is armed (and
 *         -1 for a NULL @p loop).
 */
TETHER_API int tether_loop_backend_timeout(const tether_loop *loop);

/**
 * @brief The loop's cached time in milliseconds on the monotonic clock.
 *
 * Read from the clock, while a timer is armed, when the loop wakes from
 * waiting for I/O and when tether_loop_run() or tether_loop_run_once()
 * starts (not again before the wait: a deadline that passes while the
 * callbacks run fires at the next wake-up); with none armed, on
 * the first call after a wake-up (or when a run ends) instead: at most once
 * per iteration as a rule, so it is cheap and stays the same while the
 * callbacks of one wake-up run (I/O callbacks, deferred work and hooks
 * until the loop waits again).
 * @param[in] loop The loop.
 * @return Milliseconds since an arbitrary fixed point.
 */
TETHER_API uint64_t tether_loop_now(const tether_loop *loop);

/**
 * @brief The loop's cached time in microseconds on the monotonic clock.
 *
 * The same instant as tether_loop_now() (which is this value divided by
 * 1000), at microsecond resolution: cheap, and constant during one
 * iteration's callbacks. For a fresh reading call tether_loop_update_time()
 * first.
 * @param[in] loop The loop.
 * @return Microseconds since the same fixed point as tether_loop_now(), or
 *         0 if @p loop is NULL.
 */
TETHER_API uint64_t tether_loop_now_us(const tether_loop *loop);

/**
 * @brief Reads the monotonic clock into the loop's cached time.
 *
 * For a callback that ran long and wants tether_loop_now() and
 * tether_loop_now_us() to be current. Timers started afterwards count from
 * the new time. Loop thread only.
 * @param[in] loop The loop; NULL is ignored.
 */
TETHER_API void tether_loop_update_time(tether_loop *loop);

/**
 * @brief Creates a stopped timer on a loop.
 * @param[out] out  Receives the timer.
 * @param[in]  loop The loop.
 * @retval TETHER_OK Success; free with tether_timer_free().
 * @retval TETHER_EINVAL A NULL argument.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_timer_new(tether_timer **out, tether_loop *loop);

/**
 * @brief Starts (or restarts) a timer.
 *
 * The callback runs on the loop thread @p timeout_ms after now, then every
 * @p repeat_ms if that is non-zero. Timers that expire in the same iteration
 * run in order of their deadlines, ties in the order they were started.
 * @param[in] t          The timer.
 * @param[in] timeout_ms Delay before the first run (0 runs on the next iteration).
 * @param[in] repeat_ms  Period after that, or 0 for a one-shot timer.
 * @param[in] cb         The callback.
 * @param[in] ud         Passed to @p cb.
 * @retval TETHER_OK     Started.
 * @retval TETHER_EINVAL @p t or @p cb is NULL.
 */
TETHER_API int tether_timer_start(tether_timer *t, uint64_t timeout_ms, uint64_t repeat_ms,
                                  tether_timer_cb cb, void *ud);

/**
 * @brief Stops a timer; its callback will not run until started again.
 * @param[in] t The timer; NULL is ignored.
 */
TETHER_API void tether_timer_stop(tether_timer *t);

/**
 * @brief Tells whether a timer is started and has not yet fired (or repeats).
 * @param[in] t The timer.
 * @return true if the timer is armed.
 */
TETHER_API bool tether_timer_active(const tether_timer *t);

/**
 * @brief Stops and frees a timer. Safe inside the timer's own callback.
 * @param[in] t The timer; NULL is ignored.
 */
TETHER_API void tether_timer_free(tether_timer *t);

/**
 * @brief Lets tether_loop_run() return while this timer is still armed.
 *
 * For periodic housekeeping that must not keep a program alive. Idempotent;
 * the timer still fires while the loop runs for other reasons.
 * @param[in] t The timer; NULL is ignored.
 */
TETHER_API void tether_timer_unref(tether_timer *t);

/**
 * @brief Undoes tether_timer_unref(): an armed timer keeps the loop running
 *        again (the default). Idempotent.
 * @param[in] t The timer; NULL is ignored.
 */
TETHER_API void tether_timer_ref(tether_timer *t);

/**
 * @brief Tells whether a timer keeps the loop alive when armed.
 * @param[in] t The timer.
 * @return false after tether_timer_unref() (or for NULL), true otherwise.
 */
TETHER_API bool tether_timer_has_ref(const tether_timer *t);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_LOOP_H */
/** @} */
