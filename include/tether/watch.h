/* SPDX-License-Identifier: MIT */
/**
 * @file watch.h
 * @brief Watchers on a loop: your own fds, signals, and per-iteration hooks.
 *
 * @defgroup watch Watchers: fds, signals, hooks
 * @brief Put the application's own file descriptors and signals on a loop,
 *        and run code before the loop blocks and after it wakes.
 *
 * The three kinds follow one model, the same as #tether_timer's (and
 * libuv's handles): `tether_X_new()` creates a stopped watcher registered on
 * a loop, `tether_X_start()` starts (or changes) it, `tether_X_stop()` stops
 * it, and `tether_X_free()` stops and frees it. Freeing or stopping is safe
 * anywhere on the loop's thread, including inside the watcher's own
 * callback and inside any other callback of the same iteration. A started
 * watcher keeps tether_loop_run() going unless `tether_X_unref()` was
 * called. All functions are for the loop's thread only (see the @ref loop
 * threading model); callbacks run on that thread, never from inside the
 * call that started the watcher.
 * @{
 */
#ifndef TETHER_WATCH_H
#define TETHER_WATCH_H

#include <stdbool.h>

#include <tether/error.h>
#include <tether/export.h>
#include <tether/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- fd watchers -------------------------------------------------------- */

/** @brief Watches an fd that the application owns for readiness (opaque). */
typedef struct tether_io tether_io;

/** @brief Events of a #tether_io: the interest set and what fired. */
typedef enum tether_io_event {
    TETHER_IO_READABLE = 0x1, /**< Data (or EOF, or a pending connection) can be read. */
    TETHER_IO_WRITABLE = 0x2, /**< Data can be written without blocking. */
    TETHER_IO_ERROR = 0x4,    /**< Reported only: an error is pending on the fd
                                   (for a socket, read it with SO_ERROR). */
    TETHER_IO_HANGUP = 0x8    /**< Reported only: the other end is gone (EPOLLHUP: every
                                   writer of a pipe closed, a socket shut down in both
                                   directions); reading returns EOF or an error. */
} tether_io_event;

/**
 * @brief Callback of a #tether_io.
 *
 * Level-triggered: it runs on every iteration in which the fd is ready for
 * an event in the interest set, until the application reads, writes or
 * stops watching; it need not drain the fd. An error or hang-up is always
 * reported, together with #TETHER_IO_READABLE and/or #TETHER_IO_WRITABLE
 * (whichever is in the interest set), so that the read or write the
 * application then makes returns the precise error.
 * @param[in] io     The watcher. It may be stopped, restarted with other
 *                   events, or freed inside.
 * @param[in] events The events that fired: a subset of the interest set,
 *                   plus #TETHER_IO_ERROR and #TETHER_IO_HANGUP.
 * @param[in] ud     The user data given to tether_io_start().
 */
typedef void (*tether_io_cb)(tether_io *io, unsigned events, void *ud);

/**
 * @brief Creates a stopped watcher for @p fd on a loop.
 *
 * The fd stays the application's: tether never reads, writes or closes it.
 * It should be non-blocking, since the callback is level-triggered and a
 * blocking read of a spuriously ready fd would stall the loop. Stop or
 * free the watcher *before* closing the fd (epoll forgets an fd only when
 * every duplicate of it is closed, and a reused fd number would be a
 * different file).
 *
 * One fd can have one watcher per loop, as with epoll itself: starting a
 * second watcher for the same fd on the same loop (or watching an fd the
 * loop already uses for a connection) fails with #TETHER_EBUSY. To watch
 * for reading and writing, start one watcher with both events. Watchers on
 * different loops may share an fd (each is then told about readiness).
 * @param[out] out  Receives the watcher; set to NULL on failure.
 * @param[in]  loop The loop.
 * @param[in]  fd   The descriptor (any pollable kind: socket, pipe, eventfd,
 *                  signalfd, inotify, timerfd, a tty, ...).
 * @retval TETHER_OK     Success; free with tether_io_free().
 * @retval TETHER_EINVAL @p out or @p loop is NULL, or @p fd is negative.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_io_new(tether_io **out, tether_loop *loop, int fd);

/**
 * @brief Starts watching, or changes the events and callback of a started
 *        watcher.
 *
 * The callback runs on a later iteration once the fd is ready.
 * @param[in]  io      The watcher.
 * @param[in]  events  #TETHER_IO_READABLE, #TETHER_IO_WRITABLE or both.
 * @param[in]  cb      The callback.
 * @param[in]  ud      Passed to @p cb.
 * @param[out] out_err Optional; receives the code and a message naming the
 *                     cause on failure.
 * @retval TETHER_OK      Watching.
 * @retval TETHER_EINVAL  @p io or @p cb is NULL, @p events is empty or has
 *                        other bits, the watcher was freed, or the fd is not
 *                        open.
 * @retval TETHER_EBUSY   The fd already has a watcher on this loop (another
 *                        #tether_io, or the loop's own use of it).
 * @retval TETHER_ENOTSUP The fd cannot be polled (a regular file or a
 *                        directory).
 * @retval TETHER_ENOMEM  The kernel is out of memory (or the epoll watch
 *                        limit is reached).
 * On failure the watcher is left stopped.
 */
TETHER_API int tether_io_start(tether_io *io, unsigned events, tether_io_cb cb, void *ud,
                               tether_error *out_err);

/**
 * @brief Changes the events of a started watcher, keeping its callback.
 * @param[in]  io      The watcher.
 * @param[in]  events  #TETHER_IO_READABLE, #TETHER_IO_WRITABLE or both.
 * @param[out] out_err Optional; receives the code and message on failure.
 * @retval TETHER_OK     Changed.
 * @retval TETHER_EINVAL @p io is NULL or not started, or @p events is invalid.
 * Other codes as for tether_io_start().
 */
TETHER_API int tether_io_modify(tether_io *io, unsigned events, tether_error *out_err);

/**
 * @brief Stops watching; the callback does not run again until restarted.
 *
 * Also stops a callback that was about to run in the current iteration.
 * @param[in] io The watcher; NULL is ignored.
 */
TETHER_API void tether_io_stop(tether_io *io);

/**
 * @brief Stops and frees a watcher. Safe inside any callback of the loop,
 *        including the watcher's own. The fd is not closed.
 * @param[in] io The watcher; NULL is ignored.
 */
TETHER_API void tether_io_free(tether_io *io);

/**
 * @brief The events a watcher is started for.
 * @param[in] io The watcher.
 * @return The interest set, or 0 if stopped (or NULL).
 */
TETHER_API unsigned tether_io_events(const tether_io *io);

/**
 * @brief The watched fd.
 * @param[in] io The watcher.
 * @return The fd given to tether_io_new(), or -1 for NULL.
 */
TETHER_API int tether_io_fd(const tether_io *io);

/** @brief Lets tether_loop_run() return while the watcher is started. @param[in] io The watcher;
 * NULL is ignored. */
TETHER_API void tether_io_unref(tether_io *io);

/** @brief Undoes tether_io_unref() (the default). @param[in] io The watcher; NULL is ignored. */
TETHER_API void tether_io_ref(tether_io *io);

/* ---- signals ------------------------------------------------------------ */

/** @brief Delivers a POSIX signal as a loop callback (opaque). */
typedef struct tether_signal tether_signal;

/**
 * @brief Callback of a #tether_signal, on the loop's thread (not in a
 *        signal handler: any tether call is allowed).
 * @param[in] sig    The watcher; it may be stopped or freed inside.
 * @param[in] signum The signal that arrived.
 * @param[in] ud     The user data given to tether_signal_start().
 */
typedef void (*tether_signal_cb)(tether_signal *sig, int signum, void *ud);

/**
 * @brief Creates a stopped signal watcher on a loop.
 * @param[out] out  Receives the watcher; set to NULL on failure.
 * @param[in]  loop The loop.
 * @retval TETHER_OK     Success; free with tether_signal_free().
 * @retval TETHER_EINVAL A NULL argument.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_signal_new(tether_signal **out, tether_loop *loop);

/**
 * @brief Starts delivering @p signum (SIGINT, SIGTERM, SIGHUP, SIGCHLD,
 *        SIGUSR1, ...) to the callback.
 *
 * The loop reads signals from a signalfd(2). **Mask handling**: a signalfd
 * only sees a signal that is blocked, and a process-directed signal
 * (kill(2), a terminal's Ctrl-C) goes to any one thread that does *not*
 * block it, where its default action (often: terminate) would run instead.
 * So:
 * - tether_signal_start() blocks @p signum in the **calling thread** (with
 *   pthread_sigmask()), which must be the loop's thread;
 * - every **other** thread of the process must block it too. Threads inherit
 *   the mask of the thread that creates them, so the simple rule is: create
 *   the loop's watchers (or block the signals yourself) *before* creating
 *   any other thread, including threads that libraries start;
 * - tether_signal_stop() and tether_signal_free() leave the signal blocked
 *   (unblocking could deliver a pending signal with its default action);
 *   unblock it yourself if needed;
 * - child processes inherit the blocked mask across fork(2) and execve(2):
 *   unblock the signals in the child before exec.
 *
 * Standard signals do not queue: several arrivals of one signal before the
 * loop reads it run the callback once (for SIGCHLD, reap with waitpid()
 * and WNOHANG in a loop). Several watchers of one loop may watch the same
 * signal; each callback runs for every arrival. SIGKILL and SIGSTOP cannot
 * be watched, and neither can signals that report faults of the thread
 * itself (SIGSEGV, SIGBUS, SIGFPE, SIGILL).
 *
 * **One loop per signal.** A signal is delivered once per process, and a
 * signalfd that reads it consumes it: two loops watching one signal would
 * each see an arbitrary share of the arrivals. So a signal can be watched
 * by one loop at a time, and starting a watcher for it on another loop fails
 * with #TETHER_EBUSY until every watcher of the first loop for that signal is
 * stopped. Fan out to other loops with tether_loop_post() from the callback.
 * @param[in]  sig     The watcher. If started, it is first stopped.
 * @param[in]  signum  The signal number.
 * @param[in]  cb      The callback.
 * @param[in]  ud      Passed to @p cb.
 * @param[out] out_err Optional; receives the code and a message on failure.
 * @retval TETHER_OK     Started; the signal is blocked in the calling thread.
 * @retval TETHER_EINVAL @p sig or @p cb is NULL, the watcher was freed, or
 *                       @p signum cannot be watched.
 * @retval TETHER_EBUSY  Another loop watches @p signum.
 * @retval TETHER_EMFILE No descriptor for the signalfd.
 */
TETHER_API int tether_signal_start(tether_signal *sig, int signum, tether_signal_cb cb, void *ud,
                                   tether_error *out_err);

/**
 * @brief Stops a signal watcher (the signal stays blocked, see
 *        tether_signal_start()).
 * @param[in] sig The watcher; NULL is ignored.
 */
TETHER_API void tether_signal_stop(tether_signal *sig);

/**
 * @brief Stops and frees a signal watcher. Safe inside any callback of the
 *        loop, including its own.
 * @param[in] sig The watcher; NULL is ignored.
 */
TETHER_API void tether_signal_free(tether_signal *sig);

/**
 * @brief The signal a watcher is started for.
 * @param[in] sig The watcher.
 * @return The signal number, or 0 if stopped (or NULL).
 */
TETHER_API int tether_signal_signum(const tether_signal *sig);

/** @brief Lets tether_loop_run() return while the watcher is started. @param[in] sig The watcher;
 * NULL is ignored. */
TETHER_API void tether_signal_unref(tether_signal *sig);

/** @brief Undoes tether_signal_unref() (the default). @param[in] sig The watcher; NULL is ignored.
 */
TETHER_API void tether_signal_ref(tether_signal *sig);

/* ---- hooks -------------------------------------------------------------- */

/** @brief A callback run once per loop iteration at a fixed point (opaque). */
typedef struct tether_hook tether_hook;

/** @brief When in an iteration a #tether_hook runs (see tether_loop_run_once()). */
typedef enum tether_hook_kind {
    /** Every iteration, before the prepare hooks; while one is started the
     *  loop does not block (it polls for I/O without waiting). For work done
     *  in small steps while nothing else happens; mind that a started idle
     *  hook makes the loop spin. */
    TETHER_HOOK_IDLE = 0,
    /** Right before the loop blocks waiting for I/O, after timers, posted and
     *  deferred callbacks: for per-iteration batching (flush what the
     *  iteration accumulated). Queued output is flushed after the prepare
     *  hooks, so what they send leaves in the same iteration. */
    TETHER_HOOK_PREPARE = 1,
    /** Right after the loop wakes and has dispatched the ready fds (fd
     *  watchers, signals, connections), before the timers that became due. */
    TETHER_HOOK_CHECK = 2
} tether_hook_kind;

/**
 * @brief Callback of a #tether_hook.
 * @param[in] h  The hook; it may be stopped or freed inside.
 * @param[in] ud The user data given to tether_hook_start().
 */
typedef void (*tether_hook_cb)(tether_hook *h, void *ud);

/**
 * @brief Creates a stopped hook of one kind on a loop.
 * @param[out] out  Receives the hook; set to NULL on failure.
 * @param[in]  loop The loop.
 * @param[in]  kind #TETHER_HOOK_IDLE, #TETHER_HOOK_PREPARE or #TETHER_HOOK_CHECK.
 * @retval TETHER_OK     Success; free with tether_hook_free().
 * @retval TETHER_EINVAL A NULL argument or an unknown @p kind.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_hook_new(tether_hook **out, tether_loop *loop, tether_hook_kind kind);

/**
 * @brief Starts a hook (or changes the callback of a started one).
 *
 * The callback runs once per iteration, starting with the next time the
 * loop reaches the hook's point. Hooks of one kind run in the order they
 * were started; a hook started by a hook of the same kind first runs in
 * the next iteration.
 * @param[in] h  The hook.
 * @param[in] cb The callback.
 * @param[in] ud Passed to @p cb.
 * @retval TETHER_OK     Started.
 * @retval TETHER_EINVAL @p h or @p cb is NULL, or the hook was freed.
 */
TETHER_API int tether_hook_start(tether_hook *h, tether_hook_cb cb, void *ud);

/**
 * @brief Stops a hook.
 * @param[in] h The hook; NULL is ignored.
 */
TETHER_API void tether_hook_stop(tether_hook *h);

/**
 * @brief Stops and frees a hook. Safe inside any callback of the loop.
 * @param[in] h The hook; NULL is ignored.
 */
TETHER_API void tether_hook_free(tether_hook *h);

/**
 * @brief The kind a hook was created with.
 * @param[in] h The hook (not NULL).
 * @return Its kind.
 */
TETHER_API tether_hook_kind tether_hook_get_kind(const tether_hook *h);

/** @brief Lets tether_loop_run() return while the hook is started. @param[in] h The hook; NULL is
 * ignored. */
TETHER_API void tether_hook_unref(tether_hook *h);

/** @brief Undoes tether_hook_unref() (the default). @param[in] h The hook; NULL is ignored. */
TETHER_API void tether_hook_ref(tether_hook *h);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_WATCH_H */
/** @} */
