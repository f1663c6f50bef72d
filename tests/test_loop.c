/* SPDX-License-Identifier: MIT */
/* Event loop and timers: ordering, cancellation, repeat, posts from other
 * threads, run-once semantics and handle accounting. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "loop.h"

static int order[64];
static int norder;

static void record_cb(tether_timer *t, void *ud)
{
    (void)t;
    ck_assert_int_lt(norder, (int)(sizeof order / sizeof order[0]));
    order[norder++] = (int)(intptr_t)ud;
}

static tether_timer *ordered[5];

/* Arms the five timers from inside a callback, where the loop's cached time
 * is one "now" for all of them. Armed from outside the loop, each start
 * reads the clock again, and a thread preempted between two starts would
 * move the later deadlines. */
static void arm_ordered_cb(tether_timer *t, void *ud)
{
    (void)ud;
    static const int delays[5] = {40, 10, 30, 10, 0};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(
            tether_timer_start(ordered[i], (uint64_t)delays[i], 0, record_cb, (void *)(intptr_t)i),
            TETHER_OK);
    }
    tether_timer_free(t);
}

START_TEST(timers_fire_in_deadline_order)
{
    tether_timer **t = ordered;
    norder = 0;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(tether_timer_new(&t[i], th_loop), TETHER_OK);
    }
    tether_timer *arm;
    ck_assert_int_eq(tether_timer_new(&arm, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(arm, 0, 0, arm_ordered_cb, NULL), TETHER_OK);
    /* The loop runs until the last one-shot timer has fired. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(norder, 5);
    /* Equal deadlines keep their start order (1 before 3). */
    const int want[5] = {4, 1, 3, 2, 0};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(order[i], want[i]);
    }
    for (int i = 0; i < 5; i++) {
        ck_assert(!tether_timer_active(t[i]));
        tether_timer_free(t[i]);
    }
}
END_TEST

START_TEST(timer_stop_prevents_callback)
{
    tether_timer *a;
    tether_timer *b;
    norder = 0;
    ck_assert_int_eq(tether_timer_new(&a, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&b, th_loop), TETHER_OK);
    tether_timer_start(a, 5, 0, record_cb, (void *)1);
    tether_timer_start(b, 20, 0, record_cb, (void *)2);
    ck_assert(tether_timer_active(a));
    tether_timer_stop(a);
    ck_assert(!tether_timer_active(a));
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(norder, 1);
    ck_assert_int_eq(order[0], 2);
    tether_timer_free(a);
    tether_timer_free(b);
}
END_TEST

static int repeats;

static void repeat_cb(tether_timer *t, void *ud)
{
    (void)ud;
    if (++repeats == 3) {
        tether_timer_free(t); /* freeing from its own callback is allowed */
    }
}

START_TEST(timer_repeats_and_frees_itself)
{
    tether_timer *t;
    repeats = 0;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 1, 2, repeat_cb, NULL);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(repeats, 3);
}
END_TEST

enum {
    HEAP_N = 500
};
static int heap_fired[HEAP_N];

static void heap_cb(tether_timer *t, void *ud)
{
    (void)t;
    heap_fired[(intptr_t)ud]++;
}

/* Many timers armed and cancelled in a scrambled order: the heap must keep
 * its order through arbitrary removals. */
START_TEST(timer_heap_survives_random_cancels)
{
    enum {
        N = HEAP_N
    };
    tether_timer *t[N];
    static bool cancelled[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(tether_timer_new(&t[i], th_loop), TETHER_OK);
        /* Not record_cb: on a loaded machine one iteration can run far more
         * than the 64 callbacks order[] holds. */
        tether_timer_start(t[i], (uint64_t)(rand() % 30), 0, heap_cb, (void *)(intptr_t)i);
        cancelled[i] = false;
        heap_fired[i] = 0;
    }
    int kept = N;
    for (int i = 0; i < N; i++) {
        int k = rand() % N;
        if (!cancelled[k]) {
            cancelled[k] = true;
            tether_timer_stop(t[k]);
            kept--;
        }
    }
    uint64_t deadline = th_now_ms() + 10000;
    while (th_now_ms() < deadline) {
        int active = 0;
        for (int i = 0; i < N; i++) {
            active += tether_timer_active(t[i]);
        }
        if (active == 0) {
            break;
        }
        ck_assert_int_ge(tether_loop_run_once(th_loop, 10), 0);
    }
    /* Every kept timer fired exactly once, and no cancelled one did. */
    int fired = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(heap_fired[i] == (cancelled[i] ? 0 : 1), "timer %d (%s) fired %d times", i,
                      cancelled[i] ? "cancelled" : "kept", heap_fired[i]);
        fired += heap_fired[i];
    }
    ck_assert_int_eq(fired, kept);
    for (int i = 0; i < N; i++) {
        tether_timer_free(t[i]);
    }
}
END_TEST

struct post_state {
    int count;
    pthread_t thread;
    tether_loop *loop;
};

static void post_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    ((struct post_state *)ud)->count++;
}

static void *poster(void *arg)
{
    struct post_state *ps = arg;
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(tether_loop_post(ps->loop, post_cb, ps), TETHER_OK);
    }
    return NULL;
}

static bool posts_done(void *arg)
{
    return ((struct post_state *)arg)->count == 4000;
}

START_TEST(post_from_other_threads)
{
    struct post_state ps = {.count = 0, .loop = th_loop};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pthread_create(&th[i], NULL, poster, &ps), 0);
    }
    /* The loop is blocked in epoll with nothing else to do: only the
     * eventfd wakeup can get the posts run. */
    ck_assert(th_run_until_pred(posts_done, &ps, 10000));
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    th_run_idle(1000);
    ck_assert_int_eq(ps.count, 4000);
}
END_TEST

static void *late_poster(void *arg)
{
    struct post_state *ps = arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    tether_loop_post(ps->loop, post_cb, ps);
    return NULL;
}

START_TEST(wakeup_interrupts_blocking_wait)
{
    struct post_state ps = {.count = 0, .loop = th_loop};
    pthread_t th;
    /* A timer far in the future keeps the loop alive and blocking. */
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 60000, 0, record_cb, NULL);
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(pthread_create(&th, NULL, late_poster, &ps), 0);
    while (ps.count == 0 && th_now_ms() - t0 < 10000) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, -1), 0);
    }
    pthread_join(th, NULL);
    ck_assert_int_eq(ps.count, 1);
    /* Woken by the post, not by the 60 s timer. */
    ck_assert_uint_lt(th_now_ms() - t0, 10000);
    tether_timer_free(t);
}
END_TEST

/* Each post waits until the previous one ran, so the loop goes back to
 * sleep between posts: the pattern that loses a wakeup if the eventfd is
 * drained after the "armed" flag is cleared. PINGS round trips, or as many
 * as fit in PING_MS (at least PINGS_MIN) on a machine so busy that each
 * round trip waits for a CPU. */
enum {
    PINGS = 50000,
    PINGS_MIN = 2000,
    PING_MS = 3000
};
static atomic_long pings_ran;
static atomic_long pings_posted;

static void ping_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    (void)ud;
    atomic_fetch_add(&pings_ran, 1);
}

static void ping_stop_cb(tether_loop *loop, void *ud)
{
    (void)ud;
    tether_loop_stop(loop);
}

static void *pinger(void *arg)
{
    tether_loop *loop = arg;
    uint64_t start = th_now_ms();
    void *rv = NULL;
    long i;
    for (i = 0; i < PINGS; i++) {
        if (i >= PINGS_MIN && th_now_ms() - start > PING_MS) {
            break;
        }
        ck_assert_int_eq(tether_loop_post(loop, ping_cb, NULL), TETHER_OK);
        uint64_t t0 = th_now_ms();
        while (atomic_load(&pings_ran) <= i) {
            if (th_now_ms() - t0 > 5000) {
                rv = (void *)1; /* lost: the loop slept with a post queued */
                i++;
                goto out;
            }
            sched_yield();
        }
    }
out:
    atomic_store(&pings_posted, i);
    ck_assert_int_eq(tether_loop_post(loop, ping_stop_cb, NULL), TETHER_OK);
    return rv;
}

static void give_up_cb(tether_timer *t, void *ud)
{
    (void)t;
    (void)ud;
    tether_loop_stop(th_loop);
}

START_TEST(post_wakeups_are_never_lost)
{
    atomic_store(&pings_ran, 0);
    atomic_store(&pings_posted, 0);
    tether_timer *guard;
    ck_assert_int_eq(tether_timer_new(&guard, th_loop), TETHER_OK);
    /* Only wakes a loop that lost a wakeup, so the test ends either way. */
    tether_timer_start(guard, 20000, 0, give_up_cb, NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, pinger, th_loop), 0);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    void *lost = NULL;
    pthread_join(th, &lost);
    ck_assert_msg(lost == NULL, "a post waited 5 s: the loop slept with it queued (%ld ran)",
                  atomic_load(&pings_ran));
    ck_assert_int_ge(atomic_load(&pings_posted), PINGS_MIN);
    ck_assert_int_eq(atomic_load(&pings_ran), atomic_load(&pings_posted));
    tether_timer_free(guard);
}
END_TEST

/* Deferred work cancelled by an earlier callback of the same batch: the
 * owner may free it right after (the DNS layer frees a request whose answer
 * is queued), so it must neither run nor be touched again, and the rest of
 * the batch still runs. */
static struct tether__pending pend_a;
static struct tether__pending pend_b;
static struct tether__pending pend_c;
static int pend_ran[3];
static int pend_requeues;

static void pend_a_cb(struct tether__pending *p)
{
    pend_ran[0]++;
    if (pend_ran[0] == 1) {
        struct tether__pending *victim = pend_requeues > 0 ? &pend_c : &pend_b;
        tether__pending_cancel(th_loop, victim);
        /* Poison it, as a free would, for whoever still holds it. */
        victim->next = (struct tether__pending *)(uintptr_t)1;
        victim->cb = NULL;
    }
    if (pend_ran[0] < pend_requeues) {
        tether__pending_queue(th_loop, p);
    }
}

static void pend_b_cb(struct tether__pending *p)
{
    (void)p;
    pend_ran[1]++;
}

static void pend_c_cb(struct tether__pending *p)
{
    (void)p;
    pend_ran[2]++;
}

START_TEST(pending_cancelled_by_its_own_batch)
{
    /* The middle of a batch. */
    memset(pend_ran, 0, sizeof pend_ran);
    pend_requeues = 0;
    tether__pending_init(&pend_a, pend_a_cb);
    tether__pending_init(&pend_b, pend_b_cb);
    tether__pending_init(&pend_c, pend_c_cb);
    tether__pending_queue(th_loop, &pend_a);
    tether__pending_queue(th_loop, &pend_b);
    tether__pending_queue(th_loop, &pend_c);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(pend_ran[0], 1);
    ck_assert_int_eq(pend_ran[1], 0);
    ck_assert_int_eq(pend_ran[2], 1);

    /* The end of a batch, by a callback that queues itself again: the
     * batch ends there, and what it queued waits for the next pass (one
     * iteration runs the pending queue twice, before and after polling). */
    memset(pend_ran, 0, sizeof pend_ran);
    pend_requeues = 100;
    tether__pending_init(&pend_a, pend_a_cb);
    tether__pending_init(&pend_c, pend_c_cb);
    tether__pending_queue(th_loop, &pend_a);
    tether__pending_queue(th_loop, &pend_c);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_le(pend_ran[0], 2);
    ck_assert_int_eq(pend_ran[2], 0);
    ck_assert(th_run_idle(5000));
    ck_assert_int_eq(pend_ran[0], 100);
    ck_assert_int_eq(pend_ran[2], 0);
}
END_TEST

static void stop_cb(tether_timer *t, void *ud)
{
    (void)ud;
    tether_loop_stop(th_loop);
    tether_timer_stop(t);
}

START_TEST(stop_ends_run)
{
    tether_timer *keep;
    tether_timer *stopper;
    ck_assert_int_eq(tether_timer_new(&keep, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&stopper, th_loop), TETHER_OK);
    tether_timer_start(keep, 60000, 0, record_cb, NULL);
    tether_timer_start(stopper, 5, 0, stop_cb, NULL);
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_uint_lt(th_now_ms() - t0, 10000);
    ck_assert(tether_timer_active(keep));
    /* A live timer handle makes free refuse. */
    ck_assert_int_eq(tether_loop_free(th_loop), TETHER_EBUSY);
    tether_timer_free(keep);
    tether_timer_free(stopper);
}
END_TEST

/* Work that an I/O callback queues, arms, starts or asks for, with no
 * timer armed before and no other I/O to come, runs: a deferred item, a
 * flush, a timer, a check hook, a stop, a post. (After a dispatch the
 * loop skips its queues while nothing was queued since it last found them
 * empty: each of these must tell it, but for the timers and posts, which
 * it always looks at.) A guard thread rescues a loop that would wait
 * forever, which fails the case rather than hang it. */
enum {
    QW_PENDING,
    QW_FLUSH,
    QW_TIMER,
    QW_HOOK,
    QW_STOP,
    QW_POST,
    QW_N
};

static struct {
    int what;
    int fds[2];
    tether_timer *timer;
    tether_hook *hook;
    struct tether__pending pend;
    struct tether__flush flush;
    atomic_bool done;
    atomic_bool rescued;
    bool ran;
    int calls;
} QW;

static void qw_stop(void)
{
    QW.ran = true;
    tether_loop_stop(th_loop);
}

static void qw_pending_cb(struct tether__pending *p)
{
    (void)p;
    qw_stop();
}

static void qw_flush_cb(struct tether__flush *f)
{
    (void)f;
    qw_stop();
}

static void qw_timer_cb(tether_timer *t, void *ud)
{
    (void)t;
    (void)ud;
    qw_stop();
}

static void qw_hook_cb(tether_hook *h, void *ud)
{
    (void)ud;
    tether_hook_stop(h);
    qw_stop();
}

static void qw_post_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    (void)ud;
    qw_stop();
}

static void qw_io_cb(tether_io *io, unsigned events, void *ud)
{
    (void)events;
    (void)ud;
    char b;
    ck_assert_int_eq(read(QW.fds[0], &b, 1), 1);
    if (++QW.calls == 1) {
        /* Once more: by then the loop has been through an iteration that
         * queued nothing. */
        ck_assert_int_eq(write(QW.fds[1], "y", 1), 1);
        return;
    }
    tether_io_stop(io); /* nothing more will come */
    switch (QW.what) {
    case QW_PENDING:
        tether__pending_queue(th_loop, &QW.pend);
        break;
    case QW_FLUSH:
        tether__flush_queue(th_loop, &QW.flush);
        break;
    case QW_TIMER:
        ck_assert_int_eq(tether_timer_start(QW.timer, 0, 0, qw_timer_cb, NULL), TETHER_OK);
        break;
    case QW_HOOK:
        ck_assert_int_eq(tether_hook_start(QW.hook, qw_hook_cb, NULL), TETHER_OK);
        break;
    case QW_STOP:
        qw_stop();
        break;
    case QW_POST:
        ck_assert_int_eq(tether_loop_post(th_loop, qw_post_cb, NULL), TETHER_OK);
        break;
    }
}

static void qw_rescue_cb(tether_loop *loop, void *ud)
{
    (void)ud;
    atomic_store(&QW.rescued, true);
    tether_loop_stop(loop);
}

static void *qw_guard(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000 && !atomic_load(&QW.done); i++) {
        usleep(10 * 1000);
    }
    if (!atomic_load(&QW.done)) {
        tether_loop_post(th_loop, qw_rescue_cb, NULL);
    }
    return NULL;
}

START_TEST(io_callback_work_runs_without_more_io)
{
    for (int what = 0; what < QW_N; what++) {
        memset(&QW, 0, sizeof QW);
        QW.what = what;
        tether__pending_init(&QW.pend, qw_pending_cb);
        tether__flush_init(&QW.flush, qw_flush_cb);
        ck_assert_int_eq(tether_timer_new(&QW.timer, th_loop), TETHER_OK);
        ck_assert_int_eq(tether_hook_new(&QW.hook, th_loop, TETHER_HOOK_CHECK), TETHER_OK);
        ck_assert_int_eq(pipe(QW.fds), 0);
        tether_io *io;
        ck_assert_int_eq(tether_io_new(&io, th_loop, QW.fds[0]), TETHER_OK);
        ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, qw_io_cb, NULL, NULL), TETHER_OK);
        /* A second watcher, never ready, keeps the loop alive once the
         * first has stopped: only the queued work can end the run. */
        tether_io *keep;
        ck_assert_int_eq(tether_io_new(&keep, th_loop, QW.fds[1]), TETHER_OK);
        ck_assert_int_eq(tether_io_start(keep, TETHER_IO_READABLE, qw_io_cb, NULL, NULL),
                         TETHER_OK);
        ck_assert_int_eq(write(QW.fds[1], "x", 1), 1);
        pthread_t guard;
        ck_assert_int_eq(pthread_create(&guard, NULL, qw_guard, NULL), 0);
        ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
        atomic_store(&QW.done, true);
        pthread_join(guard, NULL);
        ck_assert_msg(!atomic_load(&QW.rescued), "case %d: the loop waited with work queued", what);
        ck_assert_msg(QW.ran, "case %d: the work did not run", what);
        tether_io_free(io);
        tether_io_free(keep);
        tether_timer_free(QW.timer);
        tether_hook_free(QW.hook);
        ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK); /* frees them */
        close(QW.fds[0]);
        close(QW.fds[1]);
    }
}
END_TEST

START_TEST(run_once_nowait_and_nested_run)
{
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0); /* nothing active */
    ck_assert_int_eq(tether_loop_run_once(NULL, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_run(NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_post(NULL, post_cb, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_post(th_loop, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_new(NULL, NULL), TETHER_EINVAL);
    tether_timer *t = NULL;
    ck_assert_int_eq(tether_timer_new(&t, NULL), TETHER_EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(tether_timer_start(NULL, 1, 0, record_cb, NULL), TETHER_EINVAL);
    tether_timer_free(NULL);
    tether_timer_stop(NULL);
    ck_assert_int_eq(tether_loop_free(NULL), TETHER_OK);
}
END_TEST

/* run_once() that ran deferred work returns instead of going on to wait
 * (libuv's rule for UV_RUN_ONCE): here nothing else would ever wake the
 * loop (a post would, through the eventfd; deferred work does not).
 * alarm() is the hang guard. */
static int once_ran;

static void once_pending_cb(struct tether__pending *p)
{
    (void)p;
    once_ran++;
}

START_TEST(run_once_returns_after_deferred_work)
{
    struct tether__pending p;
    once_ran = 0;
    tether__pending_init(&p, once_pending_cb);
    tether__pending_queue(th_loop, &p);
    alarm(20);
    ck_assert_int_ge(tether_loop_run_once(th_loop, -1), 0);
    alarm(0);
    ck_assert_int_eq(once_ran, 1);
}
END_TEST

static int nested_rv;

static void nested_cb(tether_timer *t, void *ud)
{
    (void)ud;
    nested_rv = tether_loop_run(th_loop);
    tether_timer_free(t);
}

START_TEST(nested_run_is_refused)
{
    tether_timer *t;
    nested_rv = 0;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 0, 0, nested_cb, NULL);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(nested_rv, TETHER_EBUSY);
}
END_TEST

START_TEST(now_is_monotonic)
{
    uint64_t a = tether_loop_now(th_loop);
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    tether_timer_start(t, 20, 0, record_cb, NULL);
    norder = 0;
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_uint_ge(tether_loop_now(th_loop), a + 20);
    tether_timer_free(t);
}
END_TEST

/* ---- keep-alive and freeing a loop that others post to ------------------ */

struct producer {
    tether_loop *loop;
    atomic_int ran;
    int posts;
    bool hold_ref;
};

static void producer_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct producer *p = ud;
    atomic_fetch_add(&p->ran, 1);
}

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < p->posts; i++) {
        /* Gaps in which the loop has nothing to do at all. */
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        ck_assert_int_eq(tether_loop_post(p->loop, producer_cb, p), TETHER_OK);
    }
    if (p->hold_ref) {
        tether_loop_unref(p->loop);
    }
    return NULL;
}

START_TEST(loop_ref_keeps_run_alive_for_posts)
{
    struct producer p = {.loop = th_loop, .posts = 5, .hold_ref = true};
    atomic_init(&p.ran, 0);
    /* Taken before the thread starts, so run cannot return before it. */
    tether_loop_ref(th_loop);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, producer_main, &p), 0);
    /* Nothing but the reference keeps this run going. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(atomic_load(&p.ran), 5);
    pthread_join(th, NULL);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
    /* An unbalanced unref is ignored rather than wrapping the count. */
    tether_loop_unref(th_loop);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
}
END_TEST

START_TEST(free_after_a_late_post_can_be_completed)
{
    tether_loop *loop;
    ck_assert_int_eq(tether_loop_new(&loop, NULL), TETHER_OK);
    /* run returns at once: nothing is active. */
    ck_assert_int_eq(tether_loop_run(loop), TETHER_OK);
    /* Another thread posts after that. */
    struct producer p = {.loop = loop, .posts = 1};
    atomic_init(&p.ran, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, producer_main, &p), 0);
    pthread_join(th, NULL);
    /* The post is owed its run, so the loop cannot be freed yet ... */
    ck_assert_int_eq(tether_loop_free(loop), TETHER_EBUSY);
    ck_assert_int_eq(tether_loop_backend_timeout(loop), 0);
    /* ... and running it again is what to do about it. */
    ck_assert_int_eq(tether_loop_run(loop), TETHER_OK);
    ck_assert_int_eq(atomic_load(&p.ran), 1);
    ck_assert_int_eq(tether_loop_free(loop), TETHER_OK);

    /* A held reference also keeps it from being freed. */
    ck_assert_int_eq(tether_loop_new(&loop, NULL), TETHER_OK);
    tether_loop_ref(loop);
    ck_assert_int_eq(tether_loop_free(loop), TETHER_EBUSY);
    ck_assert_int_eq(tether_loop_run_once(loop, 0), 1);
    tether_loop_unref(loop);
    ck_assert_int_eq(tether_loop_free(loop), TETHER_OK);
}
END_TEST

/* Many producers post and drop their references while the loop thread
 * runs and frees the loop as soon as run returns: under ASan, a poster
 * that still touched the loop after its last post would be caught. */
static void *racing_producer(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < p->posts; i++) {
        ck_assert_int_eq(tether_loop_post(p->loop, producer_cb, p), TETHER_OK);
    }
    tether_loop_unref(p->loop);
    return NULL;
}

START_TEST(free_races_no_poster)
{
    for (int round = 0; round < 50; round++) {
        tether_loop *loop;
        ck_assert_int_eq(tether_loop_new(&loop, NULL), TETHER_OK);
        struct producer p[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
            p[i] = (struct producer){.loop = loop, .posts = 20};
            atomic_init(&p[i].ran, 0);
            tether_loop_ref(loop);
            ck_assert_int_eq(pthread_create(&th[i], NULL, racing_producer, &p[i]), 0);
        }
        ck_assert_int_eq(tether_loop_run(loop), TETHER_OK);
        ck_assert_int_eq(tether_loop_free(loop), TETHER_OK);
        for (int i = 0; i < 3; i++) {
            pthread_join(th[i], NULL);
            ck_assert_int_eq(atomic_load(&p[i].ran), 20);
        }
    }
}
END_TEST

/* ---- clocks ---------------------------------------------------------------- */

START_TEST(now_us_matches_now)
{
    tether_loop_update_time(th_loop);
    uint64_t us = tether_loop_now_us(th_loop);
    ck_assert_uint_eq(tether_loop_now(th_loop), us / 1000);
    struct timespec ts = {0, 3 * 1000 * 1000};
    nanosleep(&ts, NULL);
    /* Cached: unchanged until the loop (or update_time) reads the clock. */
    ck_assert_uint_eq(tether_loop_now_us(th_loop), us);
    tether_loop_update_time(th_loop);
    ck_assert_uint_ge(tether_loop_now_us(th_loop), us + 3000);
    ck_assert_uint_eq(tether_loop_now(th_loop), tether_loop_now_us(th_loop) / 1000);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_uint_eq(tether_loop_now(th_loop), tether_loop_now_us(th_loop) / 1000);
    ck_assert_uint_eq(tether_loop_now_us(NULL), 0);
}
END_TEST

/* ---- async-signal-safe wakeup ------------------------------------------- */

static tether_loop *sig_wake_loop;
static volatile sig_atomic_t sig_wake_errno_kept;
static volatile sig_atomic_t sig_wake_handled;

static void wake_handler(int signum)
{
    (void)signum;
    int saved = errno; /* a handler must not spoil errno (ThreadSanitizer checks) */
    errno = ERANGE;
    tether_loop_wakeup(sig_wake_loop);
    sig_wake_errno_kept = errno == ERANGE;
    sig_wake_handled = 1;
    errno = saved;
}

/* The handler runs in this thread, which leaves SIGALRM unblocked while
 * the loop's thread blocks it: the loop's epoll_wait is not interrupted by
 * the signal, only woken by the handler's wakeup. */
static void *signal_target(void *arg)
{
    (void)arg;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    while (!sig_wake_handled) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

START_TEST(wakeup_from_a_signal_handler)
{
    sig_wake_loop = th_loop;
    sig_wake_handled = 0;
    sig_wake_errno_kept = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = wake_handler;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &alrm, NULL), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, signal_target, NULL), 0);
    /* A hang guard only: the loop has nothing to do for 20 s. */
    tether_timer *guard;
    ck_assert_int_eq(tether_timer_new(&guard, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(guard, 20000, 0, record_cb, NULL), TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    norder = 0;
    ck_assert_int_eq(pthread_kill(th, SIGALRM), 0);
    /* Blocks until woken: by the handler's wakeup, or by the guard. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, -1), 0);
    pthread_join(th, NULL);
    ck_assert(sig_wake_handled);
    ck_assert_int_eq(norder, 0); /* not the guard timer */
    ck_assert(sig_wake_errno_kept);
    tether_timer_free(guard);
}
END_TEST

/* ---- embedding: backend fd and timeout ------------------------------------ */

static bool backend_readable(void)
{
    struct pollfd pfd = {.fd = tether_loop_backend_fd(th_loop), .events = POLLIN};
    int n = poll(&pfd, 1, 0);
    ck_assert_int_ge(n, 0);
    return n == 1 && (pfd.revents & POLLIN);
}

static int backend_posts;

static void backend_post_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    (void)ud;
    backend_posts++;
}

static void backend_hook_cb(tether_hook *h, void *ud)
{
    (*(int *)ud)++;
    tether_hook_stop(h);
}

static void backend_io_cb(tether_io *io, unsigned events, void *ud)
{
    (void)events;
    char c;
    ck_assert_int_eq(read(tether_io_fd(io), &c, 1), 1);
    (*(int *)ud)++;
}

START_TEST(backend_fd_and_timeout_contract)
{
    ck_assert_int_eq(tether_loop_backend_fd(NULL), -1);
    ck_assert_int_eq(tether_loop_backend_timeout(NULL), -1);
    ck_assert_int_ge(tether_loop_backend_fd(th_loop), 0);
    /* Idle loop: nothing to do, no deadline. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert(!backend_readable());
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), -1);

    /* A timer: the timeout counts down to it; the fd stays quiet. */
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t, 60000, 0, record_cb, NULL), TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    int to = tether_loop_backend_timeout(th_loop);
    ck_assert_int_gt(to, 0);
    ck_assert_int_le(to, 60000);
    ck_assert(!backend_readable());
    /* A nearer timer armed from outside an iteration (a foreign loop's
     * callback) makes the fd readable, so the new deadline is noticed. */
    tether_timer *t2;
    ck_assert_int_eq(tether_timer_new(&t2, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t2, 30000, 0, record_cb, NULL), TETHER_OK);
    ck_assert(backend_readable());
    ck_assert_int_le(tether_loop_backend_timeout(th_loop), 30000);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert(!backend_readable());
    tether_timer_free(t2);
    tether_timer_free(t);

    /* A post: readable, and no waiting. */
    backend_posts = 0;
    ck_assert_int_eq(tether_loop_post(th_loop, backend_post_cb, NULL), TETHER_OK);
    ck_assert(backend_readable());
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), 0);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(backend_posts, 1);
    ck_assert(!backend_readable());
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), -1);

    /* A plain wakeup. */
    tether_loop_wakeup(th_loop);
    ck_assert(backend_readable());
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert(!backend_readable());

    /* Deferred work queued outside an iteration (here a listener close,
     * which frees the listener from the pending queue). */
    tether_listener *l = th_listen_tcp(NULL);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert(!backend_readable());
    tether_listener_close(l);
    ck_assert(backend_readable());
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), 0);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
    ck_assert(!backend_readable());

    /* A hook started from outside, and a started idle hook. */
    int hook_runs = 0;
    tether_hook *h;
    ck_assert_int_eq(tether_hook_new(&h, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(h, backend_hook_cb, &hook_runs), TETHER_OK);
    ck_assert(backend_readable());
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(hook_runs, 1);
    tether_hook_free(h);
    ck_assert_int_eq(tether_hook_new(&h, th_loop, TETHER_HOOK_IDLE), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(h, backend_hook_cb, &hook_runs), TETHER_OK);
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), 0);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(hook_runs, 2);
    ck_assert_int_eq(tether_loop_backend_timeout(th_loop), -1);
    tether_hook_free(h);

    /* An fd event. */
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    int io_runs = 0;
    tether_io *io;
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, backend_io_cb, &io_runs, NULL),
                     TETHER_OK);
    ck_assert(!backend_readable());
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert(backend_readable());
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(io_runs, 1);
    ck_assert(!backend_readable());
    tether_io_free(io);
    close(p[0]);
    close(p[1]);
}
END_TEST

static Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, timers_fire_in_deadline_order);
    tcase_add_test(tc, timer_stop_prevents_callback);
    tcase_add_test(tc, timer_repeats_and_frees_itself);
    tcase_add_test(tc, timer_heap_survives_random_cancels);
    tcase_add_test(tc, post_from_other_threads);
    tcase_add_test(tc, wakeup_interrupts_blocking_wait);
    tcase_add_test(tc, post_wakeups_are_never_lost);
    tcase_add_test(tc, pending_cancelled_by_its_own_batch);
    tcase_add_test(tc, stop_ends_run);
    tcase_add_test(tc, io_callback_work_runs_without_more_io);
    tcase_add_test(tc, run_once_nowait_and_nested_run);
    tcase_add_test(tc, run_once_returns_after_deferred_work);
    tcase_add_test(tc, nested_run_is_refused);
    tcase_add_test(tc, now_is_monotonic);
    tcase_add_test(tc, loop_ref_keeps_run_alive_for_posts);
    tcase_add_test(tc, free_after_a_late_post_can_be_completed);
    tcase_add_test(tc, free_races_no_poster);
    tcase_add_test(tc, now_us_matches_now);
    tcase_add_test(tc, wakeup_from_a_signal_handler);
    tcase_add_test(tc, backend_fd_and_timeout_contract);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(loop_suite());
}
