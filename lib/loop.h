/* Internal side of the event loop: I/O watchers, internal timers, deferred
 * work, and the per-loop state that the layers above register with it. */
#ifndef TETHER_LOOP_INT_H
#define TETHER_LOOP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>

#include "internal.h"

struct tether__io;
typedef void (*tether__io_cb)(struct tether__io *io, unsigned revents);

/* An fd watched by the loop. Embedded in the object that owns the fd; epoll
 * carries a pointer to it, so the owner must stay allocated until the end
 * of the current dispatch (all frees go through the pending queue). */
struct tether__io {
    int fd;
    unsigned events; /* TETHER_EV_* currently registered with epoll */
    bool registered;
    tether__io_cb cb;
};

/* Deferred work run by the loop outside any dispatch, in FIFO order. Embedded
 * in its owner; `queued` prevents double insertion. */
struct tether__pending;
typedef void (*tether__pending_cb)(struct tether__pending *p);
struct tether__pending {
    struct tether__pending *next;
    tether__pending_cb cb;
    bool queued;
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

struct tether__post; /* a callback posted from another thread */

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
    struct tether__flush *next;
    tether__flush_cb cb;
    bool queued;
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

    struct tether__pending *pend_head;
    struct tether__pending *pend_tail;
    struct tether__pending *pend_last; /* last item of the batch run_pending() is running */
    struct tether__flush *flush_head;

    pthread_mutex_t post_mu;
    struct tether__post *post_head;
    struct tether__post *post_tail;
    atomic_size_t posts_queued;

    size_t active;  /* live handles: conns, listeners, armed user timers */
    size_t handles; /* every allocated handle, for tether_loop_free */
    bool stop;
    bool running; /* inside run/run_once: guards against nesting */

    struct tether__loop_ext *exts; /* per-loop state of the layers above, newest first */

    struct epoll_event *events;
    int events_cap;

    tether_loop_opts opts;
    char *dns_servers; /* owned copy of opts.dns_servers */
};

/* Builds a loop (tether_loop_new() without the checks of the options that
 * belong to the layers above the loop, which loop_new.c makes first).
 * Returns TETHER_EINVAL for options not initialised with
 * tether_loop_opts_init(), or the error that stopped it. */
int tether__loop_new(tether_loop **out, const tether_loop_opts *opts);

/* I/O watchers. start/update sets the full interest set; 0 events keeps the
 * fd registered with no interest (cheaper than DEL/ADD for a moment): an
 * error or hang-up meanwhile is not reported until interest returns. */
void tether__io_init(struct tether__io *io, int fd, tether__io_cb cb);
int tether__io_set(tether_loop *loop, struct tether__io *io, unsigned events);
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
        to->events = ~0u; /* matches no real interest set: forces the MOD */
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

/* Deferred work. */
void tether__pending_init(struct tether__pending *p, tether__pending_cb cb);
void tether__pending_queue(tether_loop *loop, struct tether__pending *p);
void tether__pending_cancel(tether_loop *loop, struct tether__pending *p);

void tether__flush_init(struct tether__flush *f, tether__flush_cb cb);
void tether__flush_queue(tether_loop *loop, struct tether__flush *f);
/* Takes f off the flush list if it is queued: the owner is being freed. */
void tether__flush_cancel(tether_loop *loop, struct tether__flush *f);

/* Handle accounting. `active` keeps tether_loop_run() running; `handles`
 * keeps tether_loop_free() from freeing a loop that still has them. */
static inline void tether__loop_handle_add(tether_loop *loop, bool active)
{
    loop->handles++;
    if (active) {
        loop->active++;
    }
}
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

/* Monotonic clock in milliseconds. */
uint64_t tether__now_ms(void);

/* The loop's time for a timestamp or deadline. Inside the loop it is the
 * time cached for this iteration; from outside (before the loop runs, or
 * between the blocking API's calls, when it may be stale by however long
 * the loop slept) it is read afresh and cached. */
static inline uint64_t tether__loop_time(tether_loop *loop)
{
    if (!loop->running) {
        loop->now = tether__now_ms();
    }
    return loop->now;
}

/* Timer heap (timer.c). */
int tether__timers_run(tether_loop *loop);
int tether__timers_next_timeout(const tether_loop *loop);

#endif /* TETHER_LOOP_INT_H */
