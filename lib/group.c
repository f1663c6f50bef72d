/* SPDX-License-Identifier: MIT */
/* Loop groups: N loops on N threads that the library starts, stops
 * gracefully and joins, and group listeners that spread accepted
 * connections over those loops (one SO_REUSEPORT socket per loop, or one
 * acceptor handing sockets to the least-loaded loop).
 *
 * Locking: g->mu guards only the group's state and is never held while
 * waiting for a loop or running user code. Work for a loop always runs on
 * its thread (tether_loop_post()); a caller that needs the result waits on
 * a condition variable of its own. A post is only made while the state,
 * read under g->mu, says RUNNING: tether_loop_group_stop() changes the
 * state under the same lock before it posts the stop, so such a post runs
 * before the stop, on a thread that is still running. Counters that other
 * threads read are relaxed atomics (struct tether__lstats).
 *
 * Layering: above connections and listeners (it spreads them), so unlike
 * the loop*.c files it may include conn.h. */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/group.h>

enum group_state {
    GROUP_NEW,
    GROUP_RUNNING,
    GROUP_STOPPING
};

struct group_loop {
    tether_loop_group *g;
    size_t index;
    tether_loop *loop;
    pthread_t thread;
    bool thread_started;
    bool joined;
    bool stopping;                  /* loop thread only: the stop has run */
    struct tether__tnode deadline;  /* the end of the graceful part of the stop */
    struct tether__post drain_post; /* tether_loop_group_shutdown(): never fails to post */
    int drains_left;                /* loop thread only: listener shutdowns still running */
};

/* One loop's part of a group listener. Each on cache lines of its own:
 * its counters change with every connection of its loop, and must not
 * bounce a line between the loops' cores. */
#define GL_ALIGN 64
struct gl_member {
    _Alignas(GL_ALIGN) tether_group_listener *gl;
    size_t index;
    tether_listener *l; /* on the loop's thread only; NULL once closed */
    struct tether__lstats st;
};

struct tether_group_listener {
    tether_group_listener *next; /* in the group's list */
    tether_loop_group *g;
    tether_group_balance mode;
    size_t rr; /* acceptor: where the next tie-break starts (loop 0 only) */
    atomic_bool closing;
    int port;
    char url[TETHER__HOST_MAX + 128];
    size_t n;
    struct gl_member m[];
};

struct tether_loop_group {
    pthread_mutex_t mu;
    enum group_state state; /* under mu */
    int stop_timeout_ms;
    tether_group_listener *listeners; /* under mu; freed with the group */
    /* tether_loop_group_shutdown(): set under mu before the drains are
     * posted, then read-only (status and loops_draining are atomics). */
    bool draining;
    bool drain_stop_posted; /* under mu: tether_loop_group_stop() cut the drains short */
    int drain_deadline_ms;
    tether_group_shutdown_cb on_drained;
    void *drained_ud;
    atomic_size_t loops_draining;
    atomic_int drain_status;
    size_t n;
    struct group_loop loops[];
};

/* The loop the current thread runs for some group, if any. */
static _Thread_local struct group_loop *tl_current;

void tether_loop_group_opts_init_sized(tether_loop_group_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_loop_group_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    tether__sized_fill(opts, size, &d, sizeof d);
}

static void group_deadline_cb(struct tether__tnode *n);

static void group_free_loops(tether_loop_group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        tether_loop_free(g->loops[i].loop);
    }
}

int tether_loop_group_new(tether_loop_group **out, size_t nloops,
                          const tether_loop_group_opts *opts, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "options not initialised with tether_loop_group_opts_init()");
    }
    tether_loop_group_opts o;
    tether_loop_group_opts_init(&o);
    if (opts != NULL) {
        tether__opts_merge(&o, sizeof o, opts);
    }
    if (nloops == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nloops = cpus > 0 ? (size_t)cpus : 1;
        nloops = TETHER__MIN(nloops, (size_t)TETHER_GROUP_MAX_LOOPS);
    }
    if (nloops > TETHER_GROUP_MAX_LOOPS) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "a loop group has at most %u loops, not %zu",
                                 TETHER_GROUP_MAX_LOOPS, nloops);
    }
    tether_loop_group *g = calloc(1, sizeof *g + nloops * sizeof g->loops[0]);
    if (g == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    g->n = nloops;
    g->stop_timeout_ms =
        o.stop_timeout_ms == 0 ? TETHER_GROUP_STOP_TIMEOUT_DEFAULT : o.stop_timeout_ms;
    for (size_t i = 0; i < nloops; i++) {
        struct group_loop *gp = &g->loops[i];
        gp->g = g;
        gp->index = i;
        int rv = tether_loop_new(&gp->loop, o.loop_opts);
        if (rv != TETHER_OK) {
            group_free_loops(g);
            free(g);
            return tether__set_error(out_err, rv, "loop %zu of %zu: %s", i, nloops,
                                     tether_strerror(rv));
        }
        tether__tnode_init(&gp->deadline, group_deadline_cb);
    }
    atomic_init(&g->loops_draining, 0);
    atomic_init(&g->drain_status, TETHER_OK);
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return TETHER_OK;
}

static void *group_thread(void *arg)
{
    struct group_loop *gp = arg;
    tl_current = gp;
    for (;;) {
        int rv = tether_loop_run(gp->loop);
        if (rv < 0) {
            tether__log(TETHER_LOG_ERROR, "loop %zu of a group: %s; its thread ends", gp->index,
                        tether_strerror(rv));
            break;
        }
        /* tether_loop_run() also returns after a tether_loop_stop(): only
         * a stopped group's loop with nothing left ends the thread. */
        if (gp->stopping && tether_loop_run_once(gp->loop, 0) == 0) {
            break;
        }
    }
    tether__tnode_stop(gp->loop, &gp->deadline);
    tl_current = NULL;
    return NULL;
}

/* Runs on the loop's thread. */
static void group_stop_cb(tether_loop *loop, void *ud)
{
    struct group_loop *gp = ud;
    if (gp->stopping) {
        return;
    }
    gp->stopping = true;
    /* Listeners close first within this call (close_all closes every
     * handle at once), so nothing new is accepted while connections close. */
    tether_loop_close_all(loop);
    if (gp->g->stop_timeout_ms > 0) {
        tether__tnode_start(loop, &gp->deadline, (uint64_t)gp->g->stop_timeout_ms);
    }
    tether_loop_unref(loop); /* the group's reference from start */
}

static void abort_walk_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    (void)ud;
    if (type == TETHER_HANDLE_CONN) {
        tether_conn_abort(handle);
    }
}

static void group_deadline_cb(struct tether__tnode *n)
{
    struct group_loop *gp = tether__container_of(n, struct group_loop, deadline);
    tether__log(TETHER_LOG_INFO, "loop %zu of a group: stop timeout (%d ms); aborting what is left",
                gp->index, gp->g->stop_timeout_ms);
    /* Handles made since the stop (by close callbacks, say) are closed
     * too, and connections still closing gracefully end now. */
    tether_loop_close_all(gp->loop);
    tether_loop_walk(gp->loop, abort_walk_cb, NULL);
}

static int post_stops(tether_loop_group *g)
{
    int rv = TETHER_OK;
    for (size_t i = 0; i < g->n; i++) {
        struct group_loop *gp = &g->loops[i];
        if (gp->thread_started) {
            int r = tether_loop_post(gp->loop, group_stop_cb, gp);
            rv = r != TETHER_OK ? r : rv;
        }
    }
    return rv;
}

int tether_loop_group_start(tether_loop_group *g, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (g == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "group is NULL");
    }
    pthread_mutex_lock(&g->mu);
    if (g->state != GROUP_NEW) {
        pthread_mutex_unlock(&g->mu);
        return tether__set_error(out_err, TETHER_EBUSY, "the loop group was already started");
    }
    int rv = TETHER_OK;
    for (size_t i = 0; i < g->n; i++) {
        struct group_loop *gp = &g->loops[i];
        tether_loop_ref(gp->loop);
        int e = pthread_create(&gp->thread, NULL, group_thread, gp);
        if (e != 0) {
            tether_loop_unref(gp->loop);
            rv = tether__set_error(out_err, TETHER_ESYS, "starting the thread of loop %zu: %s", i,
                                   strerror(e));
            break;
        }
        gp->thread_started = true;
    }
    if (rv != TETHER_OK) {
        g->state = GROUP_STOPPING;
        post_stops(g);
    } else {
        g->state = GROUP_RUNNING;
    }
    pthread_mutex_unlock(&g->mu);
    return rv;
}

size_t tether_loop_group_count(const tether_loop_group *g)
{
    return g != NULL ? g->n : 0;
}

tether_loop *tether_loop_group_loop(const tether_loop_group *g, size_t i)
{
    return g != NULL && i < g->n ? g->loops[i].loop : NULL;
}

int tether_loop_group_index(const tether_loop_group *g, const tether_loop *loop)
{
    if (g == NULL || loop == NULL) {
        return -1;
    }
    for (size_t i = 0; i < g->n; i++) {
        if (g->loops[i].loop == loop) {
            return (int)i;
        }
    }
    return -1;
}

int tether_loop_group_current(const tether_loop_group *g)
{
    struct group_loop *gp = tl_current;
    return g != NULL && gp != NULL && gp->g == g ? (int)gp->index : -1;
}

int tether_loop_group_stop(tether_loop_group *g)
{
    if (g == NULL) {
        return TETHER_OK;
    }
    int rv = TETHER_OK;
    pthread_mutex_lock(&g->mu);
    if (g->state == GROUP_RUNNING) {
        g->state = GROUP_STOPPING;
        rv = post_stops(g);
        if (rv != TETHER_OK) {
            g->state = GROUP_RUNNING; /* a loop did not get it: let the caller retry */
        }
    } else if (g->state == GROUP_STOPPING && g->draining && !g->drain_stop_posted) {
        /* During a shutdown: close now what is still draining (the stop
         * is idempotent per loop, so a loop done draining ignores it). */
        rv = post_stops(g);
        g->drain_stop_posted = rv == TETHER_OK;
        if (g->drain_stop_posted && atomic_load(&g->loops_draining) > 0) {
            atomic_store(&g->drain_status, TETHER_ECANCELED);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rv;
}

/* ---- tether_loop_group_shutdown(): drain, then stop ------------------- */

/* On the loop's thread: one more of its listener shutdowns has ended (or,
 * once, the walk that started them). The last one ends the loop's drain:
 * the last loop to get there reports, then this loop stops as by
 * tether_loop_group_stop(). */
static void group_drain_step(struct group_loop *gp)
{
    if (--gp->drains_left > 0) {
        return;
    }
    tether_loop_group *g = gp->g;
    if (atomic_fetch_sub(&g->loops_draining, 1) == 1 && g->on_drained != NULL) {
        g->on_drained(g, atomic_load(&g->drain_status), g->drained_ud);
    }
    group_stop_cb(gp->loop, gp);
}

static void group_listener_drained(tether_loop *loop, int status, void *ud)
{
    (void)loop;
    struct group_loop *gp = ud;
    if (status != TETHER_OK) {
        atomic_store(&gp->g->drain_status, status);
    }
    group_drain_step(gp);
}

/* On the loop's thread: tether_listener_shutdown() on this loop's part of
 * every group listener. */
static void group_drain_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct group_loop *gp = ud;
    tether_loop_group *g = gp->g;
    gp->drains_left = 1; /* this walk, so no shutdown ends the drain early */
    pthread_mutex_lock(&g->mu);
    for (tether_group_listener *gl = g->listeners; gl != NULL; gl = gl->next) {
        tether_listener *l = gl->m[gp->index].l;
        if (l == NULL) {
            continue;
        }
        /* Its done callback is deferred to a later iteration: not run
         * under g->mu. */
        int rv = tether_listener_shutdown(l, g->drain_deadline_ms, group_listener_drained, gp);
        if (rv == TETHER_OK) {
            gp->drains_left++;
        } else {
            tether__log(TETHER_LOG_WARN, "%s: loop %zu cannot drain (%s); closing instead", gl->url,
                        gp->index, tether_strerror(rv));
            tether_listener_close(l);
        }
    }
    pthread_mutex_unlock(&g->mu);
    group_drain_step(gp);
}

int tether_loop_group_shutdown(tether_loop_group *g, int deadline_ms,
                               tether_group_shutdown_cb on_done, void *ud)
{
    if (g == NULL) {
        return TETHER_EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int rv = TETHER_OK;
    if (g->state == GROUP_NEW) {
        rv = TETHER_EINVAL; /* nothing runs: tether_loop_group_free() closes */
    } else if (g->state != GROUP_RUNNING) {
        rv = TETHER_EBUSY;
    } else {
        g->state = GROUP_STOPPING;
        g->draining = true;
        g->drain_deadline_ms = deadline_ms;
        g->on_drained = on_done;
        g->drained_ud = ud;
        atomic_store(&g->drain_status, TETHER_OK);
        atomic_store(&g->loops_draining, g->n);
        /* Embedded nodes: posting cannot fail, so every loop drains. */
        for (size_t i = 0; i < g->n; i++) {
            struct group_loop *gp = &g->loops[i];
            tether__loop_post_node(gp->loop, &gp->drain_post, group_drain_cb, gp);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rv;
}

int tether_loop_group_join(tether_loop_group *g)
{
    if (g == NULL) {
        return TETHER_EINVAL;
    }
    if (tether_loop_group_current(g) >= 0) {
        return TETHER_EBUSY;
    }
    for (size_t i = 0; i < g->n; i++) {
        struct group_loop *gp = &g->loops[i];
        if (gp->thread_started && !gp->joined) {
            pthread_join(gp->thread, NULL);
            gp->joined = true;
        }
    }
    return TETHER_OK;
}

int tether_loop_group_free(tether_loop_group *g)
{
    if (g == NULL) {
        return TETHER_OK;
    }
    for (size_t i = 0; i < g->n; i++) {
        if (g->loops[i].thread_started && !g->loops[i].joined) {
            return TETHER_EBUSY;
        }
    }
    /* The loops now belong to this thread. One never run still has what
     * was set up on it; one that ran may have callbacks posted to it after
     * its thread ended (an acceptor's hand-off): run them, bounded. */
    for (size_t i = 0; i < g->n; i++) {
        struct group_loop *gp = &g->loops[i];
        for (int tries = 0; gp->loop != NULL && tries < 100; tries++) {
            if (tether_loop_free(gp->loop) == TETHER_OK) {
                gp->loop = NULL;
                break;
            }
            tether_loop_close_all(gp->loop);
            tether_loop_run(gp->loop);
        }
        if (gp->loop != NULL) {
            return TETHER_EBUSY;
        }
    }
    while (g->listeners != NULL) {
        tether_group_listener *gl = g->listeners;
        g->listeners = gl->next;
        free(gl);
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
    return TETHER_OK;
}

/* ---- running something on a loop and waiting for it ----------------- */

struct group_call {
    void (*fn)(void *arg);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

static void group_call_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct group_call *c = ud;
    c->fn(c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Runs fn(arg) on loop i's thread and waits for it; before start, here. */
static int group_call(tether_loop_group *g, size_t i, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&g->mu);
    if (g->state == GROUP_NEW) {
        pthread_mutex_unlock(&g->mu);
        fn(arg);
        return TETHER_OK;
    }
    if (g->state != GROUP_RUNNING) {
        pthread_mutex_unlock(&g->mu);
        return TETHER_ECLOSED;
    }
    struct group_call c = {.fn = fn, .arg = arg};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    int rv = tether_loop_post(g->loops[i].loop, group_call_cb, &c);
    pthread_mutex_unlock(&g->mu);
    if (rv == TETHER_OK) {
        pthread_mutex_lock(&c.mu);
        while (!c.done) {
            pthread_cond_wait(&c.cv, &c.mu);
        }
        pthread_mutex_unlock(&c.mu);
    }
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    return rv;
}

/* ---- group listeners ------------------------------------------------- */

struct adopt {
    struct gl_member *m;
    int fd;
    union tether__peer_addr pa;
};

static void member_closed(void *ud)
{
    struct gl_member *m = ud;
    m->l = NULL;
}

/* On the target loop's thread. */
static void adopt_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct adopt *a = ud;
    struct gl_member *m = a->m;
    if (m->l != NULL) {
        tether__listener_adopt(m->l, a->fd, &a->pa, true);
    } else {
        /* That loop stopped listening meanwhile. */
        close(a->fd);
        atomic_fetch_sub_explicit(&m->st.active, 1, memory_order_relaxed);
    }
    free(a);
}

/* The acceptor (on loop 0's thread): the loop with the fewest live
 * connections gets the socket; ties go round robin. */
static void gl_handoff(void *ud, int fd, const union tether__peer_addr *pa)
{
    struct gl_member *self = ud;
    tether_group_listener *gl = self->gl;
    size_t start = gl->rr++ % gl->n;
    size_t best = start;
    size_t least = atomic_load_explicit(&gl->m[start].st.active, memory_order_relaxed);
    for (size_t k = 1; k < gl->n; k++) {
        size_t j = (start + k) % gl->n;
        size_t a = atomic_load_explicit(&gl->m[j].st.active, memory_order_relaxed);
        if (a < least) {
            least = a;
            best = j;
        }
    }
    struct gl_member *m = &gl->m[best];
    atomic_fetch_add_explicit(&m->st.active, 1, memory_order_relaxed);
    if (m == self) {
        tether__listener_adopt(self->l, fd, pa, true);
        return;
    }
    struct adopt *a = malloc(sizeof *a);
    int rv = TETHER_ENOMEM;
    if (a != NULL) {
        a->m = m;
        a->fd = fd;
        a->pa = *pa;
        rv = tether_loop_post(gl->g->loops[best].loop, adopt_cb, a);
    }
    if (rv != TETHER_OK) {
        free(a);
        close(fd);
        atomic_fetch_sub_explicit(&m->st.active, 1, memory_order_relaxed);
        tether__log(TETHER_LOG_WARN, "%s: cannot hand a connection to loop %zu: %s; closed it",
                    gl->url, best, tether_strerror(rv));
    }
}

struct listen_call {
    tether_group_listener *gl;
    size_t i;
    const char *url;
    const tether_listen_opts *opts;
    int rv;
    tether_error err;
};

/* On loop i's thread (or before start): makes that loop's part. */
static void listen_here(void *arg)
{
    struct listen_call *lc = arg;
    tether_group_listener *gl = lc->gl;
    struct group_loop *gp = &gl->g->loops[lc->i];
    struct gl_member *m = &gl->m[lc->i];
    if (gp->stopping) {
        lc->rv = tether__set_error(&lc->err, TETHER_ECLOSED, "the loop group is stopping");
        return;
    }
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    if (lc->opts != NULL) {
        tether__opts_merge(&lo, sizeof lo, lc->opts);
        lo.size = sizeof lo;
    }
    lo.reuseport = gl->mode == TETHER_BALANCE_REUSEPORT;
    bool acceptor = gl->mode == TETHER_BALANCE_ACCEPTOR;
    tether_listener *l = NULL;
    if (acceptor && lc->i > 0) {
        lc->rv = tether__listen_sockless(&l, gp->loop, lc->url, &lo, &lc->err);
    } else {
        lc->rv = tether_listen(&l, gp->loop, lc->url, &lo, &lc->err);
    }
    if (lc->rv != TETHER_OK) {
        return;
    }
    tether__listener_set_group(l, &m->st, acceptor && lc->i == 0 ? gl_handoff : NULL, m,
                               member_closed);
    m->l = l;
    if (lc->i == 0) {
        snprintf(gl->url, sizeof gl->url, "%s", tether_listener_url(l));
        gl->port = tether_listener_port(l);
    }
}

static void close_here(void *arg)
{
    struct gl_member *m = arg;
    if (m->l != NULL) {
        tether_listener_close(m->l);
    }
}

static void close_post_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    close_here(ud);
}

static void gl_close_members(tether_group_listener *gl)
{
    for (size_t i = 0; i < gl->n; i++) {
        tether_loop_group *g = gl->g;
        pthread_mutex_lock(&g->mu);
        enum group_state st = g->state;
        int rv = TETHER_OK;
        if (st == GROUP_RUNNING) {
            /* Asynchronous: the loop closes its part when it gets to it. */
            rv = tether_loop_post(g->loops[i].loop, close_post_cb, &gl->m[i]);
        }
        pthread_mutex_unlock(&g->mu);
        if (st == GROUP_NEW) {
            close_here(&gl->m[i]);
        } else if (rv != TETHER_OK) {
            tether__log(TETHER_LOG_WARN, "%s: cannot close the listener of loop %zu: %s", gl->url,
                        i, tether_strerror(rv));
        }
    }
}

int tether_group_listen(tether_group_listener **out, tether_loop_group *g, const char *url,
                        const tether_listen_opts *opts, tether_group_balance balance,
                        tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (g == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "group is NULL");
    }
    if (tether_loop_group_current(g) >= 0) {
        return tether__set_error(out_err, TETHER_EBUSY,
                                 "tether_group_listen() called from a thread of the group "
                                 "(it waits for every loop); call it from another thread");
    }
    if (balance != TETHER_BALANCE_AUTO && balance != TETHER_BALANCE_REUSEPORT &&
        balance != TETHER_BALANCE_ACCEPTOR) {
        return tether__set_error(out_err, TETHER_EINVAL, "unknown balance mode %d", (int)balance);
    }
    struct tether__url u;
    int rv = tether__url_parse(url, true, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    bool is_unix = u.scheme == TETHER__SCHEME_UNIX;
    if (balance == TETHER_BALANCE_AUTO) {
        balance = is_unix ? TETHER_BALANCE_ACCEPTOR : TETHER_BALANCE_REUSEPORT;
    } else if (balance == TETHER_BALANCE_REUSEPORT && is_unix) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "listen on %s: SO_REUSEPORT does not balance Unix sockets; use "
                                 "TETHER_BALANCE_ACCEPTOR (or AUTO)",
                                 url);
    }
    size_t bytes = sizeof(tether_group_listener) + g->n * sizeof(struct gl_member);
    bytes = (bytes + GL_ALIGN - 1) / GL_ALIGN * GL_ALIGN; /* as aligned_alloc() wants */
    tether_group_listener *gl = aligned_alloc(GL_ALIGN, bytes);
    if (gl == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    memset(gl, 0, bytes);
    gl->g = g;
    gl->mode = balance;
    gl->n = g->n;
    atomic_init(&gl->closing, false);
    for (size_t i = 0; i < g->n; i++) {
        gl->m[i].gl = gl;
        gl->m[i].index = i;
        atomic_init(&gl->m[i].st.accepted, 0);
        atomic_init(&gl->m[i].st.rejected, 0);
        atomic_init(&gl->m[i].st.active, 0);
    }
    /* Kept until the group is freed, even on failure: posts to the loops
     * may still point into it. */
    pthread_mutex_lock(&g->mu);
    gl->next = g->listeners;
    g->listeners = gl;
    pthread_mutex_unlock(&g->mu);

    for (size_t i = 0; i < g->n; i++) {
        /* Port 0: the others listen on the port the first one got. */
        struct listen_call lc = {.gl = gl, .i = i, .url = i == 0 ? url : gl->url, .opts = opts};
        rv = group_call(g, i, listen_here, &lc);
        if (rv == TETHER_OK) {
            rv = lc.rv;
        } else {
            tether__set_error(&lc.err, rv, "listen on %s: the loop group is stopping", url);
        }
        if (rv != TETHER_OK) {
            if (g->n > 1) {
                tether__set_error(out_err, rv, "loop %zu: %s", i, lc.err.message);
            } else if (out_err != NULL) {
                *out_err = lc.err;
            }
            tether_group_listener_close(gl);
            return rv;
        }
    }
    *out = gl;
    return TETHER_OK;
}

void tether_group_listener_close(tether_group_listener *gl)
{
    if (gl == NULL || atomic_exchange(&gl->closing, true)) {
        return;
    }
    gl_close_members(gl);
}

const char *tether_group_listener_url(const tether_group_listener *gl)
{
    return gl != NULL ? gl->url : "";
}

int tether_group_listener_port(const tether_group_listener *gl)
{
    return gl != NULL ? gl->port : 0;
}

int tether_group_listener_get_stats_sized(const tether_group_listener *gl, int loop,
                                          tether_listener_stats *st, size_t size)
{
    if (gl == NULL || st == NULL || size < sizeof(size_t) || loop < -1 ||
        (loop >= 0 && (size_t)loop >= gl->n)) {
        return TETHER_EINVAL;
    }
    tether_listener_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    size_t from = loop < 0 ? 0 : (size_t)loop;
    size_t to = loop < 0 ? gl->n : (size_t)loop + 1;
    for (size_t i = from; i < to; i++) {
        const struct tether__lstats *m = &gl->m[i].st;
        s.accepted += atomic_load_explicit(&m->accepted, memory_order_relaxed);
        s.rejected += atomic_load_explicit(&m->rejected, memory_order_relaxed);
        s.active += atomic_load_explicit(&m->active, memory_order_relaxed);
    }
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}
