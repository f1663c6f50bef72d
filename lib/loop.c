/* SPDX-License-Identifier: MIT */
/* The event loop: level-triggered epoll, timers, deferred work, the
 * iteration's hook points, a thread-safe (and async-signal-safe) wakeup
 * through an eventfd, and the embedding interface (backend fd and timeout).
 *
 * One iteration: update the clock, run expired timers, posted callbacks and
 * deferred work, then the idle and prepare hooks, flush connections with
 * queued output, block in epoll_wait for at most the time to the next timer
 * (not at all if work is waiting or an idle hook is started), dispatch the
 * ready fds, run the check hooks. Objects are only ever freed from deferred
 * work (or, for fd watchers, after the batch), so the pointers in one batch
 * of epoll events stay valid while it is dispatched. */
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

uint64_t tether__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* tether_loop_wakeup() runs in signal handlers: its flag must be a real
 * lock-free atomic, not one emulated with a lock. */
static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "atomic_bool must be lock-free");

/* The epoll interest for TETHER_EV_* events: a lookup, as the two bits
 * make four sets. With no interest, EPOLLET: epoll reports errors and
 * hang-ups even to an fd that asks for nothing, and level-triggered it
 * reports them on every wait: a paused connection whose peer reset it
 * would make the loop spin. Edge-triggered they come once, and are
 * dropped by the dispatch. */
static_assert(TETHER_EV_READ == 1u && TETHER_EV_WRITE == 2u, "the map's indices");
static inline uint32_t to_epoll(unsigned ev)
{
    static const uint32_t map[4] = {EPOLLET, EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT};
    return map[ev & 3u];
}

int tether__io_set(tether_loop *loop, struct tether__io *io, unsigned events)
{
    if (io->registered && io->events == events) {
        return TETHER_OK;
    }
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    int op = io->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) != 0) {
        return tether__errno_to_err(errno);
    }
    io->registered = true;
    io->events = (uint8_t)events;
    return TETHER_OK;
}

int tether__io_add(tether_loop *loop, struct tether__io *io, unsigned events)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) != 0) {
        return tether__errno_to_err(errno);
    }
    io->registered = true;
    io->events = (uint8_t)events;
    return TETHER_OK;
}

void tether__io_stop(tether_loop *loop, struct tether__io *io)
{
    if (io->registered) {
        /* The fd may already be closed by a transport that failed; then the
         * kernel dropped it from the epoll set and DEL fails harmlessly. */
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
        io->registered = false;
        io->events = 0;
    }
}

/* The end of the deferred work and flush lists: the `next` of their last
 * node, and their head while empty. The loop's own address: never a node,
 * never dereferenced as one, and at hand in a register where lists are
 * walked, so that telling it apart costs what a NULL test did. */
#define PEND_END(loop) ((struct tether__pending *)(void *)(loop))
#define FLUSH_END(loop) ((struct tether__flush *)(void *)(loop))

void tether__pending_queue(tether_loop *loop, struct tether__pending *p)
{
    if (p->next != NULL) {
        return; /* queued already */
    }
    p->next = PEND_END(loop);
    if (loop->pend_tail != NULL) {
        loop->pend_tail->next = p;
    } else {
        loop->pend_head = p;
    }
    loop->pend_tail = p;
    loop->attn = true;
    tether__loop_touch(loop);
}

void tether__pending_unlink(tether_loop *loop, struct tether__pending *p)
{
    struct tether__pending *prev = NULL;
    for (struct tether__pending *it = loop->pend_head; it != PEND_END(loop); it = it->next) {
        if (it == p) {
            if (prev != NULL) {
                prev->next = p->next;
            } else {
                loop->pend_head = p->next;
            }
            if (loop->pend_tail == p) {
                loop->pend_tail = prev;
            }
            if (loop->pend_last == p) {
                /* The end of the running batch: it now ends at the item
                 * before, or has ended if this was the first left in it. */
                loop->pend_last = prev;
            }
            break;
        }
        prev = it;
    }
    p->next = NULL;
}

void tether__flush_queue(tether_loop *loop, struct tether__flush *f)
{
    if (f->next != NULL) {
        return; /* queued already */
    }
    f->next = loop->flush_head;
    loop->flush_head = f;
    loop->attn = true;
    tether__loop_touch(loop);
}

void tether__flush_unlink(tether_loop *loop, struct tether__flush *f)
{
    /* Linear, but only ever called when a connection is freed. */
    for (struct tether__flush **pp = &loop->flush_head; *pp != FLUSH_END(loop); pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    f->next = NULL;
}

static void wake_on_readable(struct tether__io *io, unsigned revents)
{
    (void)revents;
    tether_loop *loop = tether__container_of(io, tether_loop, wake_io);
    uint64_t v;
    /* Drain first, then clear the flag. The other order loses wakeups: a
     * post landing between the clear and the drain writes the eventfd, the
     * drain swallows that write, and the flag stays set, so later posts
     * skip their write and the loop sleeps with work queued. In this order
     * a post that still sees the flag set has its node queued already, and
     * the posts run at the end of this iteration pick it up. One read takes
     * the whole counter (it is not a semaphore eventfd). */
    ssize_t n = read(loop->evfd, &v, sizeof v);
    (void)n;
    atomic_store(&loop->wake_armed, false);
}

void tether_loop_opts_init_sized(tether_loop_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_loop_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    tether__sized_fill(opts, size, &d, sizeof d);
}

int tether__loop_new(tether_loop **out, const tether_loop_opts *opts)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return TETHER_EINVAL; /* not initialised with tether_loop_opts_init() */
    }
    tether_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL) {
        return TETHER_ENOMEM;
    }
    loop->epfd = -1;
    loop->evfd = -1;
    loop->pend_head = PEND_END(loop);
    loop->flush_head = FLUSH_END(loop);
    loop->sigfd = -1;
    sigemptyset(&loop->sigmask);
    tether__queue_init(&loop->handle_q);
    tether__queue_init(&loop->sig_q);
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(loop->hook_q); i++) {
        tether__queue_init(&loop->hook_q[i]);
    }
    int rv = TETHER_OK;
    tether_loop_opts_init(&loop->opts);
    if (opts != NULL) {
        tether__opts_merge(&loop->opts, sizeof loop->opts, opts);
        loop->opts.size = sizeof loop->opts;
    }
    if (loop->opts.dns_servers != NULL) {
        loop->dns_servers = strdup(loop->opts.dns_servers);
        if (loop->dns_servers == NULL) {
            rv = TETHER_ENOMEM;
            goto fail;
        }
        loop->opts.dns_servers = loop->dns_servers;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->evfd = loop->epfd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->evfd < 0) {
        rv = tether__errno_to_err(errno);
        goto fail;
    }
    loop->events_cap = 256;
    loop->events = malloc((size_t)loop->events_cap * sizeof *loop->events);
    if (loop->events == NULL) {
        rv = TETHER_ENOMEM;
        goto fail;
    }
    tether__io_init(&loop->wake_io, loop->evfd, wake_on_readable);
    rv = tether__io_set(loop, &loop->wake_io, TETHER_EV_READ);
    if (rv != TETHER_OK) {
        goto fail;
    }
    pthread_mutex_init(&loop->post_mu, NULL);
    atomic_init(&loop->wake_armed, false);
    atomic_init(&loop->posts_queued, 0);
    atomic_init(&loop->keepalive, 0);
    tether__loop_update_time(loop);

    *out = loop;
    return TETHER_OK;

fail:
    free(loop->events);
    if (loop->evfd >= 0) {
        close(loop->evfd);
    }
    if (loop->epfd >= 0) {
        close(loop->epfd);
    }
    free(loop->dns_servers);
    free(loop);
    return rv;
}

void tether__loop_ext_add(tether_loop *loop, struct tether__loop_ext *ext)
{
    ext->next = loop->exts;
    loop->exts = ext;
}

void *tether__loop_ext_new(tether_loop *loop, const void *key, size_t size, size_t off,
                           tether__loop_ext_cb cleanup)
{
    char *p = calloc(1, size);
    if (p == NULL) {
        return NULL;
    }
    struct tether__loop_ext *e = (struct tether__loop_ext *)(void *)(p + off);
    e->key = key;
    e->cleanup = cleanup;
    tether__loop_ext_add(loop, e);
    return p;
}

int tether_loop_free(tether_loop *loop)
{
    if (loop == NULL) {
        return TETHER_OK;
    }
    if (loop->running) {
        return TETHER_EBUSY;
    }
    if (loop->handles > 0 || loop->pend_head != PEND_END(loop)) {
        return TETHER_EBUSY;
    }
    /* Posts and keep-alive references come from other threads. They change
     * the counts and wake the loop under post_mu, so once we have seen both
     * at 0 under the lock, no other thread is inside tether_loop_post() or
     * tether_loop_unref() for this loop any more (and a thread that would
     * start one now is misusing a loop it holds no reference to). A post
     * that is queued is owed its run: tether_loop_run() runs it. */
    pthread_mutex_lock(&loop->post_mu);
    bool busy = atomic_load(&loop->posts_queued) > 0 || atomic_load(&loop->keepalive) > 0;
    pthread_mutex_unlock(&loop->post_mu);
    if (busy) {
        return TETHER_EBUSY;
    }
    while (loop->exts != NULL) {
        struct tether__loop_ext *e = loop->exts;
        loop->exts = e->next;
        e->cleanup(loop, e);
    }
    tether__io_stop(loop, &loop->wake_io);
    close(loop->evfd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->post_mu);
    free(loop->heap);
    free(loop->events);
    free(loop->dns_servers);
    free(loop);
    return TETHER_OK;
}

static void run_posts(tether_loop *loop)
{
    if (atomic_load(&loop->posts_queued) == 0) {
        return;
    }
    pthread_mutex_lock(&loop->post_mu);
    struct tether__post *p = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_mu);
    /* User callbacks run without the lock held, so they may post again. */
    while (p != NULL) {
        struct tether__post *next = p->next;
        bool owned = p->caller_owned; /* p may be queued again or freed inside cb */
        atomic_fetch_sub(&loop->posts_queued, 1);
        p->cb(loop, p->ud);
        if (!owned) {
            free(p);
        }
        p = next;
    }
}

static void run_pending(tether_loop *loop)
{
    /* Only the work queued before we started: work queued by these
     * callbacks runs on the next iteration (which will not block). The
     * batch stays on the list and is taken off one item at a time, so that
     * a callback can still cancel a later item of the same batch (and free
     * its owner): tether__pending_cancel() finds it there and moves the end
     * of the batch if needed. */
    loop->pend_last = loop->pend_tail;
    while (loop->pend_last != NULL) {
        struct tether__pending *p = loop->pend_head;
        if (p == loop->pend_last) {
            loop->pend_last = NULL;
        }
        loop->pend_head = p->next;
        if (loop->pend_head == PEND_END(loop)) {
            loop->pend_tail = NULL;
        }
        p->next = NULL;
        p->cb(p);
    }
}

static void run_flushes(tether_loop *loop)
{
    while (loop->flush_head != FLUSH_END(loop)) {
        struct tether__flush *f = loop->flush_head;
        loop->flush_head = f->next;
        f->next = NULL;
        f->cb(f);
    }
}

static bool loop_alive(const tether_loop *loop)
{
    return loop->active > 0 || loop->pend_head != PEND_END(loop) ||
           atomic_load(&loop->posts_queued) > 0 || atomic_load(&loop->keepalive) > 0;
}

/* Work that must run without waiting for I/O. */
static bool loop_has_work(const tether_loop *loop)
{
    return loop->pend_head != PEND_END(loop) || loop->flush_head != FLUSH_END(loop) ||
           atomic_load(&loop->posts_queued) > 0 ||
           !tether__queue_empty(&loop->hook_q[TETHER_HOOK_IDLE]);
}

/* The deferred work an iteration runs before it polls and again after the
 * dispatch: posted callbacks, deferred work. Each is a function call only
 * when it has something to do (inline checks: a busy loop passes here
 * twice per iteration, mostly for nothing). True if any ran. */
static inline bool loop_run_posted(tether_loop *loop)
{
    bool ran = false;
    if (atomic_load_explicit(&loop->posts_queued, memory_order_relaxed) > 0) {
        run_posts(loop);
        ran = true;
    }
    if (loop->pend_head != PEND_END(loop)) {
        run_pending(loop);
        ran = true;
    }
    return ran;
}

/* The revents of one epoll event for its watcher io. Errors
 * and hang-ups are reported as readiness: the owner's read or write then
 * fails with the precise error. Out of line: most events have neither. */
__attribute__((noinline, cold)) static unsigned loop_revents_slow(const struct tether__io *io,
                                                                  uint32_t e)
{
    unsigned rev = 0;
    if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        rev |= TETHER_EV_READ;
    }
    if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        rev |= TETHER_EV_WRITE;
    }
    rev &= io->events;
    if (rev != 0 && io->report_errors) {
        rev |= (e & EPOLLERR) ? TETHER__EV_ERROR : 0u;
        rev |= (e & (EPOLLHUP | EPOLLRDHUP)) ? TETHER__EV_HANGUP : 0u;
    }
    return rev;
}

/* The common event's bits map onto TETHER_EV_* with a shift. */
static_assert(EPOLLIN == TETHER_EV_READ && (EPOLLOUT >> 1) == TETHER_EV_WRITE,
              "epoll and TETHER_EV_* bits line up");

/* The poll's timeout when nothing is waiting: the caller's (-1: none),
 * or the time to the nearest timer if that is sooner. */
static inline int loop_timeout(const tether_loop *loop, int timeout_ms)
{
    if (loop->heap_len > 0) {
        int t = tether__timers_next_timeout(loop);
        if (timeout_ms < 0 || t < timeout_ms) {
            return t;
        }
    }
    return timeout_ms;
}

/* Inline in its two callers: tether_loop_run() calls it once per
 * iteration with constant arguments, which simplify the timeout.
 * tether_loop_run()'s polls again without returning while an iteration
 * leaves nothing to do (see the end). */
static inline __attribute__((always_inline)) int loop_iterate(tether_loop *loop, int timeout_ms,
                                                              bool until_idle)
{
    /* The time is read lazily (tether__loop_time()): with no timer armed,
     * nothing here needs it, and a timer armed from here on reads it
     * then. With one armed, it is read once per wake-up: here only at the
     * start of a run or of tether_loop_run_once(); tether_loop_run()'s
     * next iterations keep the time read when the poll woke (a timer
     * armed meanwhile counts from it too), so the work of one wake-up
     * sees one time until the loop waits again, as tether_loop_now()
     * says. (A deadline that passes while the callbacks run fires at the
     * next wake-up, late by at most their time, as it would if it passed
     * during the callbacks of a batch.) */
    bool busy = false; /* something ran before the poll */
    if (loop->heap_len > 0) {
        if (!loop->time_fresh) {
            tether__loop_update_time(loop);
        }
        if (loop->heap[0]->deadline <= loop->now) {
            tether__timers_run(loop);
            busy = true;
        }
    }
    bool ran = loop_run_posted(loop);
    if (TETHER__UNLIKELY(loop->hooks != 0)) {
        tether__hooks_maybe_run(loop, TETHER_HOOK_IDLE);
        tether__hooks_maybe_run(loop, TETHER_HOOK_PREPARE);
        busy = true;
    }
    if (loop->flush_head != FLUSH_END(loop)) {
        run_flushes(loop);
        busy = true;
    }

    int timeout = timeout_ms;
    if (!until_idle || ran || busy) {
        if (loop->pend_head != PEND_END(loop) || loop->stop ||
            atomic_load(&loop->posts_queued) > 0 ||
            !tether__queue_empty(&loop->hook_q[TETHER_HOOK_IDLE]) ||
            (until_idle ? !loop_alive(loop) : ran)) {
            /* Work is waiting, or tether_loop_run() is about to return
             * because nothing is left: do not block. Nor does
             * tether_loop_run_once() after it ran deferred work (libuv's
             * rule for UV_RUN_ONCE): that work was what the caller waited
             * for (an on_connect, a posted callback), and blocking now
             * would hold its return back until some unrelated event.
             * (tether_loop_run() goes on anyway.) */
            timeout = 0;
        } else {
            timeout = loop_timeout(loop, timeout_ms);
        }
    } else {
        /* Nothing ran: the state tether_loop_run() checked (not stopped,
         * alive, nothing queued) holds. (A post from another thread
         * meanwhile wakes the poll through the eventfd.) */
        timeout = loop_timeout(loop, timeout_ms);
    }

    for (;;) {
        loop->polls++;
        int n = epoll_wait(loop->epfd, loop->events, loop->events_cap, timeout);
        if (n < 0) {
            if (errno != EINTR) {
                return tether__errno_to_err(errno);
            }
            n = 0; /* a signal: the check hooks still see the wakeup */
        }
        /* Woken: the cached time is stale. With a timer armed, read the
         * clock for the timers due after the dispatch; otherwise the first
         * reader of this wake-up does (a latency round trip saves the
         * clock read). */
        if (loop->heap_len > 0) {
            tether__loop_update_time(loop);
        } else {
            loop->time_fresh = false;
        }
        loop->dispatching = true;
        /* (Only the loop itself resizes the array, after the batch.) */
        const struct epoll_event *ev = loop->events;
        for (const struct epoll_event *end = ev + n; ev != end; ev++) {
            struct tether__io *io = ev->data.ptr;
            uint32_t e = ev->events;
            unsigned rev;
            if (TETHER__LIKELY(!(e & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)))) {
                rev = ((e & EPOLLIN) | ((e & EPOLLOUT) >> 1)) & io->events;
            } else {
                rev = loop_revents_slow(io, e);
            }
            /* Owners that stopped watching during this batch are skipped:
             * a watcher not registered has no events. */
            if (rev != 0) {
                io->cb(io, rev);
            }
        }
        loop->dispatching = false;
        if (TETHER__UNLIKELY(n == loop->events_cap) && n < 4096) {
            /* A full batch: more may have been ready. */
            struct epoll_event *bigger =
                realloc(loop->events, (size_t)loop->events_cap * 2 * sizeof *bigger);
            if (bigger != NULL) {
                loop->events = bigger;
                loop->events_cap *= 2;
            }
        }
        if (TETHER__LIKELY(!loop->attn) &&
            atomic_load_explicit(&loop->posts_queued, memory_order_relaxed) == 0 &&
            !tether__timers_due(loop)) {
            /* The dispatch queued nothing, and nothing was queued, started
             * or asked for before it (no check hook, no deferred work or
             * flush, no stop), no post came and no timer is due: what
             * follows would find nothing to do. Poll again
             * (tether_loop_run()), until the next timer. */
            if (!until_idle || loop->active == 0) {
                return 0;
            }
            timeout = loop_timeout(loop, timeout_ms);
            continue;
        }
        if (TETHER__UNLIKELY(loop->hooks != 0)) {
            tether__hooks_maybe_run(loop, TETHER_HOOK_CHECK);
        }
        /* Run the timers and work that became due during dispatch now, so
         * that run_once() with a timeout sees them before it returns. */
        bool quiet = true;
        if (tether__timers_due(loop)) {
            tether__timers_run(loop);
            quiet = false;
        }
        if (loop_run_posted(loop)) {
            quiet = false;
        }
        if (loop->flush_head != FLUSH_END(loop)) {
            run_flushes(loop);
            quiet = false;
        }
        /* tether_loop_run() after an iteration that left nothing to do,
         * with no hook started: the next iteration would find its queues
         * empty, so poll again at once, with the timeout of the timers
         * (those due now run from the top of the next iteration). */
        if (!until_idle || !quiet || loop->stop || loop->active == 0 || loop->hooks != 0) {
            return 0;
        }
        /* Nothing ran, and the deferred work and flushes were found empty:
         * the next pass may take the short way above (attn stays set
         * after a pass that ran something, until one finds nothing). */
        loop->attn = false;
        /* (With a timer armed the time is that of this wake-up, read
         * after the poll or by the arming: its timers were tested above.) */
        timeout = loop_timeout(loop, timeout_ms);
    }
}

/* A run ends: the cached time is that of the last wake-up, read now if
 * nobody asked for it since (tether_loop_now() after a run), and from here
 * on it is stale. */
static void loop_run_end(tether_loop *loop)
{
    if (!loop->time_fresh) {
        tether__loop_update_time(loop);
    }
    loop->running = false;
    loop->time_fresh = false;
}

int tether_loop_run_once(tether_loop *loop, int timeout_ms)
{
    if (loop == NULL) {
        return TETHER_EINVAL;
    }
    if (loop->running) {
        return TETHER_EBUSY;
    }
    loop->running = true;
    loop->time_fresh = false; /* the caller may have been away for long */
    int rv = loop_iterate(loop, timeout_ms, false);
    loop_run_end(loop);
    if (rv < 0) {
        return rv;
    }
    return loop_alive(loop) ? 1 : 0;
}

int tether_loop_run(tether_loop *loop)
{
    if (loop == NULL) {
        return TETHER_EINVAL;
    }
    if (loop->running) {
        return TETHER_EBUSY;
    }
    loop->running = true;
    loop->time_fresh = false;
    loop->stop = false;
    int rv = 0;
    while (!loop->stop && loop_alive(loop)) {
        rv = loop_iterate(loop, -1, true);
        if (rv < 0) {
            break;
        }
    }
    loop->stop = false;
    loop_run_end(loop);
    return rv < 0 ? rv : TETHER_OK;
}

void tether_loop_stop(tether_loop *loop)
{
    if (loop != NULL) {
        loop->stop = true;
        loop->attn = true;
    }
}

void tether_loop_wakeup(tether_loop *loop)
{
    /* Async-signal-safe: a lock-free atomic and write(2), nothing else, and
     * errno restored for the code the signal interrupted. */
    if (loop == NULL) {
        return;
    }
    if (!atomic_exchange(&loop->wake_armed, true)) {
        int saved = errno;
        uint64_t one = 1;
        ssize_t r = write(loop->evfd, &one, sizeof one);
        (void)r; /* EAGAIN means the counter is already non-zero: awake anyway */
        errno = saved;
    }
}

static void post_link(tether_loop *loop, struct tether__post *p, tether_post_cb cb, void *ud,
                      bool caller_owned)
{
    p->next = NULL;
    p->cb = cb;
    p->ud = ud;
    p->caller_owned = caller_owned;
    pthread_mutex_lock(&loop->post_mu);
    if (loop->post_tail != NULL) {
        loop->post_tail->next = p;
    } else {
        loop->post_head = p;
    }
    loop->post_tail = p;
    atomic_fetch_add(&loop->posts_queued, 1);
    /* Woken under the lock: once the loop has run this post and
     * tether_loop_free() has taken the lock, this thread no longer touches
     * the loop. */
    tether_loop_wakeup(loop);
    pthread_mutex_unlock(&loop->post_mu);
}

int tether_loop_post(tether_loop *loop, tether_post_cb cb, void *ud)
{
    if (loop == NULL || cb == NULL) {
        return TETHER_EINVAL;
    }
    struct tether__post *p = malloc(sizeof *p);
    if (p == NULL) {
        return TETHER_ENOMEM;
    }
    post_link(loop, p, cb, ud, false);
    return TETHER_OK;
}

void tether__loop_post_node(tether_loop *loop, struct tether__post *p, tether_post_cb cb, void *ud)
{
    post_link(loop, p, cb, ud, true);
}

/* Inside a run, the time of this wake-up, read on first use. (The loop
 * is the caller's, never a const object: the cache may be filled.) */
static void loop_time_fill(const tether_loop *loop)
{
    if (loop->running && !loop->time_fresh) {
        tether__loop_update_time((tether_loop *)loop);
    }
}

uint64_t tether_loop_now(const tether_loop *loop)
{
    if (loop == NULL) {
        return 0;
    }
    loop_time_fill(loop);
    return loop->now;
}

uint64_t tether_loop_now_us(const tether_loop *loop)
{
    if (loop == NULL) {
        return 0;
    }
    loop_time_fill(loop);
    return loop->now_us;
}

void tether_loop_update_time(tether_loop *loop)
{
    if (loop != NULL) {
        tether__loop_update_time(loop);
    }
}

int tether_loop_backend_fd(tether_loop *loop)
{
    if (loop == NULL) {
        return -1;
    }
    /* From now on work queued outside an iteration wakes the eventfd. */
    loop->embedded = true;
    return loop->epfd;
}

int tether_loop_backend_timeout(const tether_loop *loop)
{
    if (loop == NULL) {
        return -1;
    }
    if (loop_has_work(loop)) {
        return 0;
    }
    if (loop->heap_len == 0) {
        return -1;
    }
    /* Asked between iterations by an embedding loop, the cached time is as
     * old as the last iteration: measure from the clock instead. */
    uint64_t now = loop->running ? loop->now : tether__now_ms();
    uint64_t d = loop->heap[0]->deadline;
    if (d <= now) {
        return 0;
    }
    return d - now > INT_MAX ? INT_MAX : (int)(d - now);
}
