/* SPDX-License-Identifier: MIT */
/* Watchers on a loop (lib/io.c, lib/signal.c, lib/hook.c) and the handle
 * registry (lib/handle.c): fd watches on pipes and socketpairs, signals,
 * hook ordering, ref/unref and walk/close-all, connections and
 * reconnecting clients as handles. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

static void nonblock_pipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

/* ---- fd watchers -------------------------------------------------------- */

struct io_rec {
    int calls;
    unsigned last;
    unsigned all;
    bool drain;       /* read what is there */
    bool stop_self;   /* stop inside the callback */
    tether_io *other; /* freed inside the callback */
};

static void io_rec_cb(tether_io *io, unsigned events, void *ud)
{
    struct io_rec *r = ud;
    r->calls++;
    r->last = events;
    r->all |= events;
    if (r->drain && (events & TETHER_IO_READABLE)) {
        char buf[64];
        while (read(tether_io_fd(io), buf, sizeof buf) > 0) {
        }
    }
    if (r->stop_self) {
        tether_io_stop(io);
    }
    if (r->other != NULL) {
        tether_io_free(r->other);
        r->other = NULL;
        tether_io_free(io);
    }
}

START_TEST(io_pipe_is_level_triggered)
{
    int p[2];
    nonblock_pipe(p);
    tether_io *io;
    struct io_rec r = {0};
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, io_rec_cb, &r, NULL), TETHER_OK);
    ck_assert_uint_eq(tether_io_events(io), TETHER_IO_READABLE);
    /* Nothing to read: no callback. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.last, TETHER_IO_READABLE);
    /* Not read: reported again on the next iteration. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 2);
    /* Drained: quiet. */
    r.drain = true;
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 3);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(r.calls, 3);
    /* The writer closes: readable with a hang-up. */
    close(p[1]);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 4);
    ck_assert_uint_eq(r.last, TETHER_IO_READABLE | TETHER_IO_HANGUP);
    tether_io_free(io);
    close(p[0]);
}
END_TEST

START_TEST(io_socketpair_modify_and_hangup)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    tether_io *io;
    struct io_rec r = {0};
    ck_assert_int_eq(tether_io_new(&io, th_loop, sv[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_WRITABLE, io_rec_cb, &r, NULL), TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.last, TETHER_IO_WRITABLE);
    /* Switch to reading, keeping the callback. */
    ck_assert_int_eq(tether_io_modify(io, TETHER_IO_READABLE, NULL), TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(write(sv[1], "hello", 5), 5);
    r.drain = true;
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_uint_eq(r.last, TETHER_IO_READABLE);
    /* Both directions at once. */
    ck_assert_int_eq(tether_io_modify(io, TETHER_IO_READABLE | TETHER_IO_WRITABLE, NULL),
                     TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert_uint_eq(r.last, TETHER_IO_WRITABLE);
    /* The peer goes away: a hang-up with readability (EOF to read). */
    ck_assert_int_eq(tether_io_modify(io, TETHER_IO_READABLE, NULL), TETHER_OK);
    close(sv[1]);
    r.drain = false;
    ck_assert_int_ge(tether_loop_run_once(th_loop, 5000), 0);
    ck_assert(r.last & TETHER_IO_READABLE);
    ck_assert(r.last & TETHER_IO_HANGUP);
    /* Stopped: nothing more, although the fd stays readable. */
    int before = r.calls;
    tether_io_stop(io);
    ck_assert_uint_eq(tether_io_events(io), 0);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(r.calls, before);
    ck_assert_int_eq(tether_io_modify(io, TETHER_IO_READABLE, NULL), TETHER_EINVAL);
    tether_io_free(io);
    close(sv[0]);
}
END_TEST

START_TEST(io_stop_and_free_inside_callbacks)
{
    /* Two watchers ready in the same epoll batch; whichever runs first
     * frees the other and itself, so exactly one callback runs, and the
     * freed watcher's event later in the batch must not be delivered. */
    int a[2], b[2], c[2];
    nonblock_pipe(a);
    nonblock_pipe(b);
    nonblock_pipe(c);
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    ck_assert_int_eq(write(c[1], "x", 1), 1);
    tether_io *ia, *ib, *ic;
    struct io_rec ra = {0}, rb = {0}, rc = {.stop_self = true};
    ck_assert_int_eq(tether_io_new(&ia, th_loop, a[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_new(&ib, th_loop, b[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_new(&ic, th_loop, c[0]), TETHER_OK);
    ra.other = ib;
    rb.other = ia;
    ck_assert_int_eq(tether_io_start(ia, TETHER_IO_READABLE, io_rec_cb, &ra, NULL), TETHER_OK);
    ck_assert_int_eq(tether_io_start(ib, TETHER_IO_READABLE, io_rec_cb, &rb, NULL), TETHER_OK);
    ck_assert_int_eq(tether_io_start(ic, TETHER_IO_READABLE, io_rec_cb, &rc, NULL), TETHER_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 1000), 0);
    }
    ck_assert_int_eq(ra.calls + rb.calls, 1);
    /* Stopped itself on its first callback though still readable. */
    ck_assert_int_eq(rc.calls, 1);
    ck_assert_uint_eq(tether_io_events(ic), 0);
    tether_io_free(ic);
    int fds[] = {a[0], a[1], b[0], b[1], c[0], c[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        close(fds[i]);
    }
}
END_TEST

START_TEST(io_bad_input_is_refused)
{
    int p[2];
    nonblock_pipe(p);
    tether_io *io, *io2;
    struct io_rec r = {0};
    tether_error err;
    ck_assert_int_eq(tether_io_new(&io, th_loop, -1), TETHER_EINVAL);
    ck_assert_ptr_null(io);
    ck_assert_int_eq(tether_io_new(&io, NULL, p[0]), TETHER_EINVAL);
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_new(&io2, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, 0, io_rec_cb, &r, &err), TETHER_EINVAL);
    ck_assert_int_eq(err.code, TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "events"));
    ck_assert_int_eq(tether_io_start(io, 0x10 | TETHER_IO_READABLE, io_rec_cb, &r, NULL),
                     TETHER_EINVAL);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, NULL, &r, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, io_rec_cb, &r, &err), TETHER_OK);
    /* A second watcher for the same fd on the same loop. */
    ck_assert_int_eq(tether_io_start(io2, TETHER_IO_WRITABLE, io_rec_cb, &r, &err), TETHER_EBUSY);
    ck_assert_int_eq(err.code, TETHER_EBUSY);
    ck_assert_ptr_nonnull(strstr(err.message, "already watched"));
    ck_assert_uint_eq(tether_io_events(io2), 0);
    tether_io_free(io2);
    /* A regular file cannot be polled. */
    char path[] = "/tmp/tether_watch_XXXXXX";
    int f = mkstemp(path);
    ck_assert_int_ge(f, 0);
    unlink(path);
    ck_assert_int_eq(tether_io_new(&io2, th_loop, f), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io2, TETHER_IO_READABLE, io_rec_cb, &r, &err), TETHER_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(err.message, "regular file"));
    tether_io_free(io2);
    close(f);
    /* A closed fd. */
    int dead = dup(p[1]);
    close(dead);
    ck_assert_int_eq(tether_io_new(&io2, th_loop, dead), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io2, TETHER_IO_READABLE, io_rec_cb, &r, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "not open"));
    tether_io_free(io2);
    /* Another loop may watch the same fd. */
    tether_loop *other;
    ck_assert_int_eq(tether_loop_new(&other, NULL), TETHER_OK);
    ck_assert_int_eq(tether_io_new(&io2, other, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io2, TETHER_IO_READABLE, io_rec_cb, &r, &err), TETHER_OK);
    tether_io_free(io2);
    ck_assert_int_eq(tether_loop_free(other), TETHER_OK);
    tether_io_free(io);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- signals ------------------------------------------------------------ */

struct sig_rec {
    int calls;
    int signum;
    bool free_self;
};

static void sig_rec_cb(tether_signal *s, int signum, void *ud)
{
    struct sig_rec *r = ud;
    r->calls++;
    r->signum = signum;
    if (r->free_self) {
        tether_signal_free(s);
    }
}

static bool sig_pred(void *arg)
{
    struct sig_rec *r = arg;
    return r->calls > 0;
}

START_TEST(signal_usr1_is_delivered)
{
    tether_signal *s1, *s2;
    struct sig_rec r1 = {0}, r2 = {.free_self = true};
    tether_error err;
    ck_assert_int_eq(tether_signal_new(&s1, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_signal_new(&s2, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s1, SIGUSR1, sig_rec_cb, &r1, &err), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s2, SIGUSR1, sig_rec_cb, &r2, &err), TETHER_OK);
    ck_assert_int_eq(tether_signal_signum(s1), SIGUSR1);
    /* Blocked by start: raising it does not kill the test. */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    ck_assert(sigismember(&cur, SIGUSR1));
    ck_assert_int_eq(raise(SIGUSR1), 0);
    ck_assert(th_run_until_pred(sig_pred, &r1, 10000));
    ck_assert_int_eq(r1.signum, SIGUSR1);
    /* Both watchers of the loop saw it; the second freed itself. */
    ck_assert_int_eq(r2.calls, 1);
    ck_assert_int_eq(r2.signum, SIGUSR1);
    /* A process-directed one, too. */
    r1.calls = 0;
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    ck_assert(th_run_until_pred(sig_pred, &r1, 10000));
    ck_assert_int_eq(r2.calls, 1);
    tether_signal_free(s1);
}
END_TEST

START_TEST(signal_one_loop_per_signal)
{
    tether_signal *s1, *s2;
    struct sig_rec r1 = {0}, r2 = {0};
    tether_error err;
    tether_loop *other;
    ck_assert_int_eq(tether_loop_new(&other, NULL), TETHER_OK);
    ck_assert_int_eq(tether_signal_new(&s1, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_signal_new(&s2, other), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s1, SIGUSR2, sig_rec_cb, &r1, &err), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s2, SIGUSR2, sig_rec_cb, &r2, &err), TETHER_EBUSY);
    ck_assert_ptr_nonnull(strstr(err.message, "another loop"));
    ck_assert_int_eq(tether_signal_signum(s2), 0);
    /* Other signals are free. */
    ck_assert_int_eq(tether_signal_start(s2, SIGHUP, sig_rec_cb, &r2, &err), TETHER_OK);
    /* Once the first loop lets go, the other may take it. */
    tether_signal_stop(s1);
    ck_assert_int_eq(tether_signal_start(s2, SIGUSR2, sig_rec_cb, &r2, &err), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s1, SIGUSR2, sig_rec_cb, &r1, &err), TETHER_EBUSY);
    /* Bad signals. */
    ck_assert_int_eq(tether_signal_start(s1, SIGKILL, sig_rec_cb, &r1, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "cannot be watched"));
    ck_assert_int_eq(tether_signal_start(s1, 0, sig_rec_cb, &r1, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_signal_start(s1, 100000, sig_rec_cb, &r1, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_signal_start(s1, SIGSEGV, sig_rec_cb, &r1, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_signal_start(s1, SIGTERM, NULL, &r1, &err), TETHER_EINVAL);
    /* The other loop gets SIGUSR2 now. */
    ck_assert_int_eq(raise(SIGUSR2), 0);
    for (int i = 0; i < 200 && r2.calls == 0; i++) {
        ck_assert_int_ge(tether_loop_run_once(other, 50), 0);
    }
    ck_assert_int_eq(r2.calls, 1);
    ck_assert_int_eq(r2.signum, SIGUSR2);
    ck_assert_int_eq(r1.calls, 0);
    tether_signal_free(s2);
    tether_signal_free(s1);
    ck_assert_int_eq(tether_loop_free(other), TETHER_OK);
}
END_TEST

/* ---- hooks -------------------------------------------------------------- */

static char trace[64];
static size_t ntrace;

static void trace_add(char c)
{
    if (ntrace + 1 < sizeof trace) {
        trace[ntrace++] = c;
        trace[ntrace] = '\0';
    }
}

static void hook_trace_cb(tether_hook *h, void *ud)
{
    (void)h;
    trace_add((char)(intptr_t)ud);
}

static void hook_trace_stop_cb(tether_hook *h, void *ud)
{
    trace_add((char)(intptr_t)ud);
    tether_hook_stop(h);
}

static void timer_trace_cb(tether_timer *t, void *ud)
{
    (void)ud;
    trace_add('T');
    tether_timer_free(t);
}

static void io_trace_cb(tether_io *io, unsigned events, void *ud)
{
    (void)events;
    (void)ud;
    char c;
    ck_assert_int_eq(read(tether_io_fd(io), &c, 1), 1);
    trace_add('I');
}

START_TEST(hooks_run_in_order)
{
    ntrace = 0;
    trace[0] = '\0';
    int p[2];
    nonblock_pipe(p);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    tether_io *io;
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, io_trace_cb, NULL, NULL), TETHER_OK);
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t, 0, 0, timer_trace_cb, NULL), TETHER_OK);
    tether_hook *check, *prep, *idle, *prep2;
    ck_assert_int_eq(tether_hook_new(&check, th_loop, TETHER_HOOK_CHECK), TETHER_OK);
    ck_assert_int_eq(tether_hook_new(&prep, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    ck_assert_int_eq(tether_hook_new(&prep2, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    tether_hook *bad;
    ck_assert_int_eq(tether_hook_new(&bad, th_loop, (tether_hook_kind)7), TETHER_EINVAL);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(tether_hook_new(&idle, th_loop, TETHER_HOOK_IDLE), TETHER_OK);
    ck_assert_int_eq(tether_hook_get_kind(prep), TETHER_HOOK_PREPARE);
    /* Started in an order unlike the run order. */
    ck_assert_int_eq(tether_hook_start(check, hook_trace_cb, (void *)(intptr_t)'C'), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(prep, hook_trace_cb, (void *)(intptr_t)'P'), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(prep2, hook_trace_stop_cb, (void *)(intptr_t)'Q'),
                     TETHER_OK);
    ck_assert_int_eq(tether_hook_start(idle, hook_trace_stop_cb, (void *)(intptr_t)'D'), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(idle, NULL, NULL), TETHER_EINVAL);
    /* An idle hook is started: even a blocking call must not wait. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, -1), 0);
    ck_assert_str_eq(trace, "TDPQIC");
    /* The next iteration: the stopped hooks (idle, prepare Q) are gone. */
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_str_eq(trace, "TDPQICPC");
    tether_hook_free(idle);
    tether_hook_free(prep2);
    tether_hook_free(prep);
    tether_hook_free(check);
    tether_io_free(io);
    close(p[0]);
    close(p[1]);
}
END_TEST

static void hook_free_other_cb(tether_hook *h, void *ud)
{
    trace_add('F');
    tether_hook_free(ud);
    tether_hook_free(h);
}

START_TEST(hook_frees_itself_and_the_next)
{
    ntrace = 0;
    trace[0] = '\0';
    tether_hook *a, *b;
    ck_assert_int_eq(tether_hook_new(&a, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    ck_assert_int_eq(tether_hook_new(&b, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(a, hook_free_other_cb, b), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(b, hook_trace_cb, (void *)(intptr_t)'B'), TETHER_OK);
    ck_assert_int_ge(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_str_eq(trace, "F");
    /* Both gone: the loop has nothing left. */
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
}
END_TEST

/* ---- ref/unref ------------------------------------------------------------ */

static void count_timer_cb(tether_timer *t, void *ud)
{
    (void)t;
    (*(int *)ud)++;
}

START_TEST(unref_decides_when_run_returns)
{
    int fired_short = 0, fired_long = 0;
    tether_timer *shorter, *longer;
    ck_assert_int_eq(tether_timer_new(&shorter, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&longer, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(longer, 30000, 0, count_timer_cb, &fired_long), TETHER_OK);
    tether_timer_unref(longer);
    ck_assert(!tether_timer_has_ref(longer));
    /* A started fd watcher, signal watcher, hook and listener, all unref'd. */
    int p[2];
    nonblock_pipe(p);
    tether_io *io;
    struct io_rec r = {0};
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, io_rec_cb, &r, NULL), TETHER_OK);
    tether_io_unref(io);
    tether_signal *s;
    struct sig_rec sr = {0};
    ck_assert_int_eq(tether_signal_new(&s, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s, SIGHUP, sig_rec_cb, &sr, NULL), TETHER_OK);
    tether_signal_unref(s);
    tether_hook *h;
    ck_assert_int_eq(tether_hook_new(&h, th_loop, TETHER_HOOK_CHECK), TETHER_OK);
    ck_assert_int_eq(tether_hook_start(h, hook_trace_cb, (void *)(intptr_t)'c'), TETHER_OK);
    tether_hook_unref(h);
    tether_listener *l = th_listen_tcp(NULL);
    tether_listener_unref(l);
    /* Unref twice is the same as once. */
    tether_listener_unref(l);
    tether_io_unref(io);

    /* Only the referenced short timer keeps the loop running. */
    ck_assert_int_eq(tether_timer_start(shorter, 10, 0, count_timer_cb, &fired_short), TETHER_OK);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(fired_short, 1);
    ck_assert_int_eq(fired_long, 0);
    ck_assert(tether_timer_active(longer));
    /* Nothing referenced: run returns at once. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);

    /* ref makes the watcher keep the loop again: it runs until its
     * callback stops it. */
    r.stop_self = true;
    tether_io_ref(io);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(r.calls, 1);

    /* A referenced timer restarted short brings back a one-shot run. */
    tether_timer_ref(longer);
    ck_assert(tether_timer_has_ref(longer));
    ck_assert_int_eq(tether_timer_start(longer, 5, 0, count_timer_cb, &fired_long), TETHER_OK);
    tether_listener_ref(l);
    tether_listener_unref(l);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(fired_long, 1);

    tether_listener_close(l);
    tether_hook_free(h);
    tether_signal_free(s);
    tether_io_free(io);
    tether_timer_free(shorter);
    tether_timer_free(longer);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- walk / close all ----------------------------------------------------- */

struct walk_count {
    int n[8];
    int total;
};

static void walk_count_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    ck_assert_ptr_nonnull(handle);
    struct walk_count *w = ud;
    ck_assert_int_ge((int)type, 1);
    ck_assert_int_lt((int)type, 8);
    w->n[type]++;
    w->total++;
}

/* Frees every handle it is shown, and frees the next timer ahead of time. */
static tether_timer *walk_victim;

static void walk_free_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    (void)ud;
    if (type == TETHER_HANDLE_TIMER && walk_victim != NULL && handle != walk_victim) {
        tether_timer_free(walk_victim);
        walk_victim = NULL;
    }
    if (type == TETHER_HANDLE_TIMER) {
        tether_timer_free(handle);
    }
}

START_TEST(walk_and_close_all)
{
    tether_timer *t1, *t2, *t3;
    ck_assert_int_eq(tether_timer_new(&t1, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&t2, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&t3, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t1, 60000, 0, count_timer_cb, NULL), TETHER_OK);
    int p[2];
    nonblock_pipe(p);
    tether_io *io;
    ck_assert_int_eq(tether_io_new(&io, th_loop, p[0]), TETHER_OK);
    ck_assert_int_eq(tether_io_start(io, TETHER_IO_READABLE, io_rec_cb, NULL, NULL), TETHER_OK);
    tether_signal *s;
    ck_assert_int_eq(tether_signal_new(&s, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_signal_start(s, SIGTERM, sig_rec_cb, NULL, NULL), TETHER_OK);
    tether_hook *h;
    ck_assert_int_eq(tether_hook_new(&h, th_loop, TETHER_HOOK_PREPARE), TETHER_OK);
    tether_listener *l = th_listen_tcp(NULL);
    (void)l;

    struct walk_count w = {0};
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 7);
    ck_assert_int_eq(w.n[TETHER_HANDLE_TIMER], 3);
    ck_assert_int_eq(w.n[TETHER_HANDLE_IO], 1);
    ck_assert_int_eq(w.n[TETHER_HANDLE_SIGNAL], 1);
    ck_assert_int_eq(w.n[TETHER_HANDLE_HOOK], 1);
    ck_assert_int_eq(w.n[TETHER_HANDLE_LISTENER], 1);
    ck_assert_int_eq(tether_loop_walk(th_loop, NULL, NULL), TETHER_EINVAL);
    ck_assert_str_eq(tether_handle_type_name(TETHER_HANDLE_SIGNAL), "signal");
    ck_assert_str_eq(tether_handle_type_name((tether_handle_type)99), "unknown");

    /* A walk callback that frees a handle not yet visited. */
    walk_victim = t3;
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_free_cb, NULL), TETHER_OK);
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 4);
    ck_assert_int_eq(w.n[TETHER_HANDLE_TIMER], 0);

    tether_loop_close_all(th_loop);
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 0);
    /* The listener is freed by the loop; then nothing is left. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- connections and reconnecting clients as handles ------------------- */

struct net_rec {
    tether_conn *accepted[4];
    int n_accepted;
    int connects;      /* on_connect with TETHER_OK, dialled connection */
    int conn_closes;   /* on_close of the dialled connection */
    int server_closes; /* on_close of accepted connections */
    int client_connected;
    int client_closed;       /* CLOSED reports of the client */
    bool listed_after_close; /* a walk inside on_close still showed that connection */
};

struct find_rec {
    const void *target;
    bool found;
    int n[8];
};

static void walk_find_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    struct find_rec *f = ud;
    ck_assert_int_ge((int)type, 1);
    ck_assert_int_lt((int)type, 8);
    f->n[type]++;
    if (handle == f->target) {
        f->found = true;
    }
}

static bool walk_shows(const void *target)
{
    struct find_rec f = {.target = target};
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_find_cb, &f), TETHER_OK);
    return f.found;
}

static void net_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct net_rec *r = ud;
    ck_assert_int_lt(r->n_accepted, 4);
    r->accepted[r->n_accepted++] = c;
    tether_conn_set_userdata(c, r);
}

static void net_on_server_close(tether_conn *c, int reason, void *ud)
{
    (void)reason;
    struct net_rec *r = ud;
    r->server_closes++;
    if (walk_shows(c)) {
        r->listed_after_close = true;
    }
}

static void net_on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    if (status == TETHER_OK) {
        ((struct net_rec *)ud)->connects++;
    }
}

static void net_on_close(tether_conn *c, int reason, void *ud)
{
    (void)reason;
    struct net_rec *r = ud;
    r->conn_closes++;
    if (walk_shows(c)) {
        r->listed_after_close = true;
    }
}

static void net_on_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    struct net_rec *r = ud;
    if (ev->state == TETHER_CLIENT_CONNECTED) {
        r->client_connected++;
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        r->client_closed++;
        if (walk_shows(cl)) {
            r->listed_after_close = true;
        }
    }
}

static bool net_all_up(void *arg)
{
    struct net_rec *r = arg;
    return r->connects == 1 && r->client_connected == 1 && r->n_accepted == 2;
}

/* A listener, a dialled connection and a reconnecting client to it, all
 * established: two accepted connections on the server side. */
static void net_setup(struct net_rec *r, tether_listener **out_l, tether_conn **out_c,
                      tether_client **out_cl)
{
    tether_conn_opts sco;
    tether_conn_opts_init(&sco);
    sco.on_close = net_on_server_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = net_on_accept;
    lo.userdata = r;
    lo.conn_opts = &sco;
    tether_listener *l = th_listen_tcp(&lo);

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_connect = net_on_connect;
    co.on_close = net_on_close;
    co.userdata = r;
    tether_error err;
    tether_conn *c;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, &err), TETHER_OK);

    tether_client_opts clo;
    tether_client_opts_init(&clo);
    clo.on_state = net_on_state;
    clo.userdata = r;
    tether_client *cl;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, th_url_of(l), &clo, &err), TETHER_OK);
    *out_l = l;
    *out_c = c;
    *out_cl = cl;
}

START_TEST(conn_and_client_unref)
{
    struct net_rec r = {0};
    tether_listener *l;
    tether_conn *c;
    tether_client *cl;
    net_setup(&r, &l, &c, &cl);
    /* Unref'd before its first connection is dialled: the connection it
     * dials follows it. */
    tether_client_unref(cl);
    tether_listener_unref(l);
    /* run_once with 0 reports whether anything still keeps the loop. */
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    ck_assert(th_run_until_pred(net_all_up, &r, 10000));

    /* The dialled and the accepted connections still count. */
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    tether_conn_unref(c);
    tether_conn_unref(c); /* idempotent */
    tether_conn_unref(r.accepted[0]);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    tether_conn_unref(r.accepted[1]);
    /* Nothing referenced is left: run returns although all are open. */
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(r.conn_closes + r.server_closes + r.client_closed, 0);
    ck_assert_int_eq(tether_loop_free(th_loop), TETHER_EBUSY); /* still open */

    /* ref brings each back. */
    tether_client_ref(cl);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    tether_client_unref(cl);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
    tether_conn_ref(c);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    tether_conn_unref(c);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);
    tether_conn_ref(NULL);
    tether_conn_unref(NULL);
    tether_client_ref(NULL);
    tether_client_unref(NULL);

    /* Referenced again, then closed: run returns once all are freed. */
    tether_conn_ref(c);
    tether_conn_ref(r.accepted[0]);
    tether_conn_ref(r.accepted[1]);
    tether_client_ref(cl);
    tether_listener_ref(l);
    tether_conn_close(c);
    tether_client_close(cl);
    tether_listener_close(l);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(r.conn_closes, 1);
    ck_assert_int_eq(r.server_closes, 2);
    ck_assert_int_eq(r.client_closed, 1);
}
END_TEST

START_TEST(walk_and_close_all_conns_and_clients)
{
    struct net_rec r = {0};
    tether_listener *l;
    tether_conn *c;
    tether_client *cl;
    net_setup(&r, &l, &c, &cl);
    ck_assert(th_run_until_pred(net_all_up, &r, 10000));

    struct find_rec f = {.target = tether_client_conn(cl)};
    ck_assert_ptr_nonnull(f.target);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_find_cb, &f), TETHER_OK);
    ck_assert_int_eq(f.n[TETHER_HANDLE_LISTENER], 1);
    ck_assert_int_eq(f.n[TETHER_HANDLE_CONN], 3); /* dialled + two accepted */
    ck_assert_int_eq(f.n[TETHER_HANDLE_CLIENT], 1);
    ck_assert(!f.found); /* the client's own connection belongs to the client */
    ck_assert(walk_shows(c));
    ck_assert(walk_shows(cl));
    ck_assert(walk_shows(r.accepted[0]));
    ck_assert(walk_shows(r.accepted[1]));
    ck_assert_str_eq(tether_handle_type_name(TETHER_HANDLE_CONN), "conn");
    ck_assert_str_eq(tether_handle_type_name(TETHER_HANDLE_CLIENT), "client");

    /* Twice: closing is idempotent, each close callback runs once. */
    tether_loop_close_all(th_loop);
    tether_loop_close_all(th_loop);
    ck_assert_int_eq(r.conn_closes + r.server_closes + r.client_closed, 0); /* from the loop */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(r.conn_closes, 1);
    ck_assert_int_eq(r.server_closes, 2);
    ck_assert_int_eq(r.client_closed, 1);
    ck_assert(!r.listed_after_close);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_find_cb, &f), TETHER_OK);
    ck_assert_int_eq(f.n[TETHER_HANDLE_CONN] + f.n[TETHER_HANDLE_CLIENT], 0);
}
END_TEST

static Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, io_pipe_is_level_triggered);
    tcase_add_test(tc, io_socketpair_modify_and_hangup);
    tcase_add_test(tc, io_stop_and_free_inside_callbacks);
    tcase_add_test(tc, io_bad_input_is_refused);
    tcase_add_test(tc, signal_usr1_is_delivered);
    tcase_add_test(tc, signal_one_loop_per_signal);
    tcase_add_test(tc, hooks_run_in_order);
    tcase_add_test(tc, hook_frees_itself_and_the_next);
    tcase_add_test(tc, unref_decides_when_run_returns);
    tcase_add_test(tc, walk_and_close_all);
    tcase_add_test(tc, conn_and_client_unref);
    tcase_add_test(tc, walk_and_close_all_conns_and_clients);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(watch_suite());
}
