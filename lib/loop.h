/* SPDX-License-Identifier: MIT */
/* Internal side of the event loop: I/O watchers, internal timers, deferred
 * work, the handle registry, and the per-loop state that the layers above
 * register with it. */
#ifndef TETHER_LOOP_INT_H
#define TETHER_LOOP_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <time.h>

#include "internal.h"

/* Extra readiness bits, passed only to watchers that ask for them
 * (tether__io::report_errors): the public tether_io reports them. */
#define TETHER__EV_ERROR 0x4u
#define TETHER__EV_HANGUP 0x8u

struct tether__io;
typedef void (*tether__io_cb)(struct tether__io *io, unsigned revents);

/* An fd watched by the loop. Embedded in the object that owns the fd; epoll
 * carries a pointer to it, so the owner must stay allocated until the end
 * of the current dispatch (all frees go through the pending queue). */
struct tether__io {
    int fd;
    uint8_t events; /* TETHER_EV_* currently registered with epoll */
    bool registered;
    bool report_errors; /* add TETHER__EV_ERROR/HANGUP to revents */
    tether__io_cb cb;   /* (16 bytes in all: connections embed one) */
};

/* A circular doubly-linked list with a sentinel head (libuv's QUEUE). A
 * node unlinks itself without knowing which list holds it, which lets a
 * dispatcher move a whole list aside and run it while callbacks stop,
 * free or start any member. */
struct tether__queue {
    struct tether__queue *next;
    struct tether__queue *prev;
};

static inline void tether__queue_init(struct tether__queue *q)
{
    q->next = q;
    q->prev = q;
}

static inline bool tether__queue_empty(const struct tether__queue *q)
{
    return q->next == q;
}

static inline void tether__queue_insert_tail(struct tether__queue *head, struct tether__queue *q)
{
    q->next = head;
    q->prev = head->prev;
    head->prev->next = q;
    head->prev = q;
}

static inline void tether__queue_remove(struct tether__queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    tether__queue_init(q);
}

/* Moves every node of `from` to the empty list `to`; `from` ends empty. */
static inline void tether__queue_move(struct tether__queue *from, struct tether__queue *to)
{
    if (tether__queue_empty(from)) {
        tether__queue_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    tether__queue_init(from);
}

/* The common part of every handle a user can see on a loop (timers, fd
 * watchers, signals, hooks, listeners, connections, reconnecting clients):
 * the registry tether_loop_walk() iterates and the ref/unref state that
 * decides whether an active handle keeps tether_loop_run() going. It is
 * the first member of every handle object, so the handle's address is the
 * object's (no pointer back): connections are many, and each byte of an
 * idle one counts. */
typedef void (*tether__handle_close_fn)(void *obj);
struct tether__handle {
    struct tether__queue node; /* in loop->handle_q while not closed */
    tether_loop *loop;
    uint8_t type; /* tether_handle_type; its close function: loop->handle_close[type] */
    bool active;  /* started: counts in loop->active unless unref'd */
    bool unref;   /* does not keep the loop alive */
    bool closing; /* freed or closed; no longer walked or started */
    bool hidden;  /* not shown by tether_loop_walk(): internal to another handle, or
                     already reported closed; tether_loop_close_all() still calls close */
};

/* Deferred work run by the loop outside any dispatch, in FIFO order. Embedded
 * in its owner. `next` is NULL while not queued, which prevents double
 * insertion: the last node of the list points at a sentinel instead (no
 * flag, so that the node is two pointers without padding: connections
 * embed one). */
struct tether__pending;
typedef void (*tether__pending_cb)(struct tether__pending *p);
struct tether__pending {
    struct tether__pending *next;
    tether__pending_cb cb;
};

/* An internal timer: a node of the loop's min-heap. */
struct tether__tnode;
typedef void (*tether__tnode_cb)(struct tether__tnode *n);
struct tether__tnode {
    uint64_t deadline; /* loop ms */
    uint64_t seq;      /* start order, breaks ties */
    uint32_t index;    /* position in the heap, TETHER__TNODE_IDLE when not armed */
    tether__tnode_cb cb;
};
#define TETHER__TNODE_IDLE UINT32_MAX

/* A callback posted from another thread (tether_loop_post()), queued
 * under loop->post_mu. Allocated by tether_loop_post() and freed after it
 * ran, or owned by the caller (tether__loop_post_node()). */
struct tether__post {
    struct tether__post *next;
    tether_post_cb cb;
    void *ud;
    bool caller_owned; /* embedded in the caller's object: not freed after cb */
};

/* Per-loop state of a layer above the loop (the resolver, the cache of
 * output segments, the connections' shared read buffer). The loop knows nothing of what it holds:
 * it keeps the list, lets the owner find its state again by key, and calls cleanup from
 * tether_loop_free(), newest first, while the loop's watchers, timers and
 * deferred work can still be stopped (libuv's loop watchers, NNG's
 * init.c). Embedded in the owner's state, which cleanup frees. */
struct tether__loop_ext;
typedef void (*tether__loop_ext_cb)(tether_loop *loop, struct tether__loop_ext *ext);
struct tether__loop_ext {
    struct tether__loop_ext *next;
    const void *key;             /* the owner: the address of a static object of its file */
    tether__loop_ext_cb cleanup; /* runs once, from tether_loop_free() */
};

/* Work to run just before the loop blocks in epoll_wait: connections with
 * queued output flush there, so that everything sent during one iteration
 * goes out in as few system calls as possible. */
struct tether__flush;
typedef void (*tether__flush_cb)(struct tether__flush *f);
struct tether__flush {
    struct tether__flush *next; /* NULL while not queued (as tether__pending) */
    tether__flush_cb cb;
};

struct tether_loop {
    int epfd;
    int evfd;
    struct tether__io wake_io;
    atomic_bool wake_armed; /* an eventfd write is outstanding */

    uint64_t now;
    uint64_t timer_seq;
    struct tether__tnode **heap;
    uint32_t heap_len;
    uint32_t heap_cap;
    uint64_t polls; /* epoll_waits so far: tells consecutive iterations apart */

    struct tether__pending *pend_head; /* the loop's address while empty (loop.c) */
    struct tether__pending *pend_tail; /* NULL while empty */
    struct tether__pending *pend_last; /* last item of the batch run_pending() is running */
    struct tether__flush *flush_head;  /* the loop's address while empty (loop.c) */

    pthread_mutex_t post_mu;
    struct tether__post *post_head;
    struct tether__post *post_tail;
    atomic_size_t posts_queued;

    size_t active;           /* live handles: conns, listeners, armed user timers */
    size_t handles;          /* every allocated handle, for tether_loop_free */
    atomic_size_t keepalive; /* tether_loop_ref() count, from any thread */
    bool stop;
    /* Set whenever deferred work or a flush is queued, a hook started or
     * a stop asked for; cleared only by the loop, in a pass that found
     * none of them (loop_iterate()): while it is clear, a pass that
     * dispatched I/O has only the timers and posts to look at. */
    bool attn;
    bool running;     /* inside run/run_once: guards against nesting */
    bool dispatching; /* delivering a batch of epoll events */
    bool embedded;    /* tether_loop_backend_fd() was asked for */
    uint64_t now_us;  /* the cached time in microseconds; now == now_us / 1000 */
    bool time_fresh;  /* running, and now was read after the last epoll_wait */

    struct tether__queue handle_q; /* registered handles (tether__handle) */
    /* What frees or closes a handle of each type, for
     * tether_loop_close_all(): one per type rather than a pointer in
     * every handle (tether__handle_init() records it). */
    tether__handle_close_fn handle_close[TETHER_HANDLE_CLIENT + 1];
    struct tether__queue hook_q[3]; /* started hooks per tether_hook_kind */
    uint32_t hooks;                 /* started hooks of all kinds: one test while 0 */

    /* Signals (signal.c): one signalfd per loop, created with the first
     * watcher and closed with the last. */
    int sigfd;
    struct tether__io sig_io;
    sigset_t sigmask;
    struct tether__queue sig_q; /* started tether_signal watchers */

    struct tether__loop_ext *exts; /* per-loop state of the layers above, newest first */
    /* One of them reached directly: the connections' memory budget
     * (membudget.c), once a connection was made. Here rather than a
     * pointer in every connection (issue #12), with a copy of its "over
     * the limit" flag, which every send tests, one load away as it was. */
    struct tether__mem *mem;
    bool mem_over;
    /* The cache of output segments (wq_seg.h), or NULL; the same. */
    struct tether__seg_cache *segs;
    /* The read buffer connections read into (conn_read.c), or NULL
     * before the first read; the same. */
    uint8_t *rbuf;
    /* The memory of the last dial (dial_cfg.c), or NULL; the same. */
    struct tether__dial_mem *dial_mem;

    struct epoll_event *events;
    int events_cap;

    tether_loop_opts opts;
    char *dns_servers; /* owned copy of opts.dns_servers */
};

/* Builds a loop (tether_loop_new() without the checks of the options that
 * belong to the layers above the loop, which toplevel.c makes first).
 * Returns TETHER_EINVAL for options not initialised with
 * tether_loop_opts_init(), or the error that stopped it. */
int tether__loop_new(tether_loop **out, const tether_loop_opts *opts);

/* I/O watchers. start/update sets the full interest set; 0 events keeps the
 * fd registered with no interest (cheaper than DEL/ADD for a moment): an
 * error or hang-up meanwhile is not reported until interest returns. */
static inline void tether__io_init(struct tether__io *io, int fd, tether__io_cb cb)
{
    io->fd = fd;
    io->events = 0;
    io->registered = false;
    io->report_errors = false;
    io->cb = cb;
}

int tether__io_set(tether_loop *loop, struct tether__io *io, unsigned events);
/* tether__io_set() for a watcher not registered yet (a new fd). */
int tether__io_add(tether_loop *loop, struct tether__io *io, unsigned events);
void tether__io_stop(tether_loop *loop, struct tether__io *io);

/* The fd is about to be closed: closing removes it from the epoll set, so
 * skip the EPOLL_CTL_DEL system call and only mark the watcher stopped.
 * Only for fds the library owns and never duplicates. */
static inline void tether__io_forget(struct tether__io *io)
{
    io->registered = false;
    io->events = 0;
}

/* Hands an fd's epoll registration from one watcher to another without
 * removing and re-adding it: the next tether__io_set() on `to` modifies the
 * entry to point at `to` (one system call instead of two). */
static inline void tether__io_take_over(struct tether__io *to, struct tether__io *from)
{
    if (from->registered) {
        to->registered = true;
        to->events = UINT8_MAX; /* matches no real interest set: forces the MOD */
    }
    from->registered = false;
    from->events = 0;
}

/* Internal timers. */
void tether__tnode_init(struct tether__tnode *n, tether__tnode_cb cb);
void tether__tnode_start(tether_loop *loop, struct tether__tnode *n, uint64_t timeout_ms);
void tether__tnode_stop(tether_loop *loop, struct tether__tnode *n);
static inline bool tether__tnode_active(const struct tether__tnode *n)
{
    return n->index != TETHER__TNODE_IDLE;
}

/* Deferred work. (The initialisers are inline: a connection's
 * allocation sets up three of these nodes, a call each.) */
static inline void tether__pending_init(struct tether__pending *p, tether__pending_cb cb)
{
    p->next = NULL;
    p->cb = cb;
}

void tether__pending_queue(tether_loop *loop, struct tether__pending *p);
/* Takes p off the deferred work if it is queued. (The test inline: every
 * connection's free asks, and it is rarely queued then.) */
void tether__pending_unlink(tether_loop *loop, struct tether__pending *p);
static inline void tether__pending_cancel(tether_loop *loop, struct tether__pending *p)
{
    if (p->next != NULL) {
        tether__pending_unlink(loop, p);
    }
}

/* Takes p off the deferred work if it is the only item queued and no pass
 * over the deferred work is running: O(1), and true; false otherwise,
 * leaving the list as it is. */
static inline bool tether__pending_take_sole(tether_loop *loop, struct tether__pending *p)
{
    if (loop->pend_head != p || loop->pend_tail != p || loop->pend_last != NULL) {
        return false;
    }
    loop->pend_head = p->next; /* (the end of the list) */
    loop->pend_tail = NULL;
    p->next = NULL;
    return true;
}

static inline void tether__flush_init(struct tether__flush *f, tether__flush_cb cb)
{
    f->next = NULL;
    f->cb = cb;
}

void tether__flush_queue(tether_loop *loop, struct tether__flush *f);
/* Takes f off the flush list if it is queued: the owner is being freed. */
void tether__flush_unlink(tether_loop *loop, struct tether__flush *f);
static inline void tether__flush_cancel(tether_loop *loop, struct tether__flush *f)
{
    if (f->next != NULL) {
        tether__flush_unlink(loop, f);
    }
}

/* tether_loop_post() with a node the caller owns (embedded in a longer
 * lived object): allocates nothing and cannot fail. Thread-safe. The node
 * must not be queued twice; it may be queued again once its callback has
 * started, and the loop no longer touches it once the callback started
 * (the callback may free it). It counts as a posted callback: it keeps
 * tether_loop_run() going and tether_loop_free() refuses until it ran. */
void tether__loop_post_node(tether_loop *loop, struct tether__post *p, tether_post_cb cb, void *ud);

/* Handle accounting. `active` keeps tether_loop_run() running; `handles`
 * keeps tether_loop_free() from freeing a loop that still has them.
 * tether__handle_init() adds to both; an owner that frees a handle's
 * memory takes it out of `handles` here (`active` is 0 after detach). */
static inline void tether__loop_handle_remove(tether_loop *loop, bool active)
{
    loop->handles--;
    if (active) {
        loop->active--;
    }
}

/* Registers per-loop state of a layer above (see struct tether__loop_ext):
 * it stays until tether_loop_free() calls its cleanup. */
void tether__loop_ext_add(tether_loop *loop, struct tether__loop_ext *ext);

/* The handle registry (handle.c). init registers the handle, which must
 * be the first member of obj (counted in loop->handles until the owner
 * calls tether__loop_handle_remove() or decrements it when it frees the
 * memory); start/stop mark it active, so that unless unref'd it
 * keeps tether_loop_run() going; detach stops it and takes it off the
 * registry when it is closed or freed. */
void tether__handle_ref(struct tether__handle *h);
void tether__handle_unref(struct tether__handle *h);
/* (init, start, stop and detach inline: every connection's allocation and
 * free passes here.) */
static inline void tether__handle_init(struct tether__handle *h, tether_loop *loop,
                                       tether_handle_type type, void *obj,
                                       tether__handle_close_fn close)
{
    /* The walk and close-all hand out the handle's address as the object. */
    assert((void *)h == obj);
    (void)obj;
    /* Every handle of a type has the same close function. */
    assert(loop->handle_close[type] == NULL || loop->handle_close[type] == close);
    loop->handle_close[type] = close;
    h->loop = loop;
    h->type = (uint8_t)type;
    h->active = false;
    h->unref = false;
    h->closing = false;
    h->hidden = false;
    tether__queue_insert_tail(&loop->handle_q, &h->node);
    loop->handles++;
}

static inline void tether__handle_start(struct tether__handle *h)
{
    if (h->active) {
        return;
    }
    h->active = true;
    if (!h->unref) {
        h->loop->active++;
    }
}

static inline void tether__handle_stop(struct tether__handle *h)
{
    if (!h->active) {
        return;
    }
    h->active = false;
    if (!h->unref) {
        h->loop->active--;
    }
}

static inline void tether__handle_detach(struct tether__handle *h)
{
    tether__handle_stop(h);
    h->closing = true;
    tether__queue_remove(&h->node);
}

/* Calls fn on every handle registered when it starts (hidden ones too);
 * fn may close or free any handle. */
void tether__handle_each(tether_loop *loop, void (*fn)(struct tether__handle *h, void *arg),
                         void *arg);

/* Work was queued from outside an iteration (a foreign loop's callback):
 * wake the loop so that an embedding loop polling tether_loop_backend_fd()
 * notices it. Inside an iteration the loop recomputes its timeout itself,
 * and a loop nobody embeds (no backend fd handed out) looks at its queues
 * before it blocks anyway, so neither pays for the eventfd write. */
static inline void tether__loop_touch(tether_loop *loop)
{
    if (loop->embedded && !loop->running) {
        tether_loop_wakeup(loop);
    }
}

/* Runs the started hooks of one kind (hook.c). */
void tether__hooks_run(tether_loop *loop, tether_hook_kind kind);

/* The same, inline for the common case of no hook: the loop asks three
 * times per iteration, and a call each time cost a latency round trip
 * about 50 instructions per side. */
static inline void tether__hooks_maybe_run(tether_loop *loop, tether_hook_kind kind)
{
    if (!tether__queue_empty(&loop->hook_q[kind])) {
        tether__hooks_run(loop, kind);
    }
}

/* The state registered under key, or NULL. A short list (one entry per
 * layer), and inline: the read path looks its buffer up per read. */
static inline struct tether__loop_ext *tether__loop_ext_find(const tether_loop *loop,
                                                             const void *key)
{
    struct tether__loop_ext *e = loop->exts;
    while (e != NULL && e->key != key) {
        e = e->next;
    }
    return e;
}

/* tether__loop_ext_get()'s first use: a new zeroed block of size bytes
 * whose struct tether__loop_ext sits at offset off, registered under key
 * with cleanup. NULL when out of memory. */
void *tether__loop_ext_new(tether_loop *loop, const void *key, size_t size, size_t off,
                           tether__loop_ext_cb cleanup);

/* The per-loop state of type `type` (its struct tether__loop_ext is
 * `member`) registered under key, made zeroed by tether__loop_ext_new()
 * on first use, when *fresh is set for the caller to initialise the rest.
 * NULL when out of memory. */
#define TETHER__LOOP_EXT_GET(loop, key, type, member, cleanup, fresh)                              \
    ((type *)tether__loop_ext_get((loop), (key), sizeof(type), offsetof(type, member), (cleanup),  \
                                  (fresh)))
static inline void *tether__loop_ext_get(tether_loop *loop, const void *key, size_t size,
                                         size_t off, tether__loop_ext_cb cleanup, bool *fresh)
{
    struct tether__loop_ext *e = tether__loop_ext_find(loop, key);
    *fresh = e == NULL;
    if (e != NULL) {
        return (char *)e - off;
    }
    return tether__loop_ext_new(loop, key, size, off, cleanup);
}

/* Monotonic clock in milliseconds. */
uint64_t tether__now_ms(void);

/* Reads the clock into the loop's cached time. Inside a run the reading
 * stays fresh until the loop next waits for I/O. (With a timer armed the
 * loop reads it on every wake-up: the clock is asked here directly, and
 * the divisions are of the nanoseconds, in 32 bits. now is now_us / 1000
 * exactly: now_us is whole seconds of 10^6 plus the microseconds.) */
static inline void tether__loop_update_time(tether_loop *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint32_t us = (uint32_t)ts.tv_nsec / 1000u;
    loop->now_us = (uint64_t)ts.tv_sec * 1000000u + us;
    loop->now = (uint64_t)ts.tv_sec * 1000u + us / 1000u;
    loop->time_fresh = loop->running;
}

/* The loop's time for a timestamp or deadline. Inside the loop it is the
 * time cached for this wake-up, read on first use: an iteration that
 * neither has a timer armed nor asks the time reads no clock. From outside
 * (before the loop runs, or between the blocking API's calls, when it may
 * be stale by however long the loop slept) it is read afresh and cached.
 * While a timer is armed the cached time is always fresh (the loop reads
 * the clock when it wakes, and arming a timer asks for the time), so the
 * timer code reads loop->now directly. */
static inline uint64_t tether__loop_time(tether_loop *loop)
{
    if (!loop->time_fresh) {
        tether__loop_update_time(loop);
    }
    return loop->now;
}

/* Timer heap (timer.c). */
int tether__timers_run(tether_loop *loop);

/* Milliseconds from the cached time to the nearest deadline (0 if it has
 * passed), or -1 with no timer armed: the epoll timeout. */
static inline int tether__timers_next_timeout(const tether_loop *loop)
{
    if (loop->heap_len == 0) {
        return -1;
    }
    uint64_t d = loop->heap[0]->deadline;
    if (d <= loop->now) {
        return 0;
    }
    uint64_t diff = d - loop->now;
    return diff > INT32_MAX ? INT32_MAX : (int)diff;
}

/* A timer is due at the cached time: the loop asks twice per iteration,
 * and most iterations of a busy loop have none (an empty heap, or the
 * nearest deadline still ahead), so the check is inline. */
static inline bool tether__timers_due(const tether_loop *loop)
{
    return loop->heap_len > 0 && loop->heap[0]->deadline <= loop->now;
}

#endif /* TETHER_LOOP_INT_H */
