/* SPDX-License-Identifier: MIT */
/* Signal watchers (tether_signal): POSIX signals read from one signalfd per
 * loop and delivered as ordinary loop callbacks, plus the process-wide
 * record of which loop watches which signal. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

struct tether_signal {
    struct tether__handle h;   /* active while started */
    struct tether__queue node; /* in loop->sig_q while started */
    int signum;                /* 0 while stopped */
    tether_signal_cb cb;
    void *ud;
};

/* A signal reaches one signalfd of the process, so one loop at a time
 * owns it; `users` counts that loop's started watchers of it. */
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static tether_loop *sig_owner[_NSIG];
static unsigned sig_users[_NSIG];

static void sig_dispatch(tether_loop *loop, int signum)
{
    /* As in hook.c: run the watchers started before this point, each free
     * to stop or free itself or any other inside its callback. */
    struct tether__queue todo;
    tether__queue_move(&loop->sig_q, &todo);
    while (!tether__queue_empty(&todo)) {
        struct tether__queue *q = todo.next;
        tether__queue_remove(q);
        tether__queue_insert_tail(&loop->sig_q, q);
        tether_signal *s = tether__container_of(q, tether_signal, node);
        if (s->signum == signum) {
            s->cb(s, signum, s->ud);
        }
    }
}

static void sig_on_readable(struct tether__io *io, unsigned revents)
{
    (void)revents;
    tether_loop *loop = tether__container_of(io, tether_loop, sig_io);
    /* A callback may stop the last watcher, which closes the signalfd:
     * check it before every read. Bounded, so that a signal storm cannot
     * hold the loop here forever; the rest is read next iteration. */
    for (int round = 0; round < 64 && loop->sigfd >= 0; round++) {
        struct signalfd_siginfo si;
        ssize_t n = read(loop->sigfd, &si, sizeof si);
        if (n != (ssize_t)sizeof si) {
            break; /* EAGAIN: drained */
        }
        sig_dispatch(loop, (int)si.ssi_signo);
    }
}

/* Points the loop's signalfd at loop->sigmask: created with the first
 * signal, updated in place, closed with the last. */
static int sig_update_fd(tether_loop *loop)
{
    if (sigisemptyset(&loop->sigmask)) {
        if (loop->sigfd >= 0) {
            tether__io_stop(loop, &loop->sig_io);
            close(loop->sigfd);
            loop->sigfd = -1;
        }
        return 0;
    }
    int fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    if (loop->sigfd < 0) {
        tether__io_init(&loop->sig_io, fd, sig_on_readable);
        if (tether__io_set(loop, &loop->sig_io, TETHER_EV_READ) != TETHER_OK) {
            int e = errno;
            close(fd);
            return e;
        }
        loop->sigfd = fd;
    }
    return 0;
}

static bool sig_watchable(int signum)
{
    if (signum <= 0 || signum >= _NSIG || signum == SIGKILL || signum == SIGSTOP ||
        signum == SIGSEGV || signum == SIGBUS || signum == SIGFPE || signum == SIGILL) {
        return false;
    }
    /* glibc keeps a few real-time signals for itself and refuses them. */
    sigset_t set;
    sigemptyset(&set);
    return sigaddset(&set, signum) == 0;
}

static void sig_close(void *obj)
{
    tether_signal_free(obj);
}

int tether_signal_new(tether_signal **out, tether_loop *loop)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (loop == NULL) {
        return TETHER_EINVAL;
    }
    tether_signal *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return TETHER_ENOMEM;
    }
    tether__queue_init(&s->node);
    tether__handle_init(&s->h, loop, TETHER_HANDLE_SIGNAL, s, sig_close);
    *out = s;
    return TETHER_OK;
}

int tether_signal_start(tether_signal *s, int signum, tether_signal_cb cb, void *ud,
                        tether_error *out_err)
{
    tether__error_clear(out_err);
    if (s == NULL || cb == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "tether_signal_start: %s is NULL",
                                 s == NULL ? "the watcher" : "the callback");
    }
    if (s->h.closing) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "tether_signal_start: the watcher was freed");
    }
    if (!sig_watchable(signum)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "signal %d cannot be watched (not a signal, SIGKILL, SIGSTOP, "
                                 "a fault signal or one reserved by the C library)",
                                 signum);
    }
    tether_signal_stop(s);
    tether_loop *loop = s->h.loop;

    pthread_mutex_lock(&sig_mu);
    bool taken = sig_owner[signum] != NULL && sig_owner[signum] != loop;
    if (!taken) {
        sig_owner[signum] = loop;
        sig_users[signum]++;
    }
    pthread_mutex_unlock(&sig_mu);
    if (taken) {
        return tether__set_error(out_err, TETHER_EBUSY,
                                 "signal %d (%s) is already watched by another loop; a signal "
                                 "reaches one loop only",
                                 signum, strsignal(signum));
    }

    /* Blocked here (the loop's thread) before the signalfd exists, so that
     * an arrival from now on waits for the loop instead of running its
     * default action. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signum);
    pthread_sigmask(SIG_BLOCK, &one, NULL);

    bool added = !sigismember(&loop->sigmask, signum);
    if (added) {
        sigaddset(&loop->sigmask, signum);
        int e = sig_update_fd(loop);
        if (e != 0) {
            sigdelset(&loop->sigmask, signum);
            sig_update_fd(loop);
            pthread_mutex_lock(&sig_mu);
            if (--sig_users[signum] == 0) {
                sig_owner[signum] = NULL;
            }
            pthread_mutex_unlock(&sig_mu);
            return tether__set_error(out_err, tether__errno_to_err(e),
                                     "cannot watch signal %d: signalfd: %s", signum, strerror(e));
        }
    }
    s->signum = signum;
    s->cb = cb;
    s->ud = ud;
    tether__queue_insert_tail(&loop->sig_q, &s->node);
    tether__handle_start(&s->h);
    return TETHER_OK;
}

void tether_signal_stop(tether_signal *s)
{
    if (s == NULL || s->signum == 0) {
        return;
    }
    tether_loop *loop = s->h.loop;
    int signum = s->signum;
    s->signum = 0;
    tether__queue_remove(&s->node);
    tether__handle_stop(&s->h);
    pthread_mutex_lock(&sig_mu);
    bool last = --sig_users[signum] == 0;
    if (last) {
        sig_owner[signum] = NULL;
    }
    pthread_mutex_unlock(&sig_mu);
    if (last) {
        /* Stays blocked in the thread (see tether_signal_start()). */
        sigdelset(&loop->sigmask, signum);
        sig_update_fd(loop);
    }
}

void tether_signal_free(tether_signal *s)
{
    if (s == NULL || s->h.closing) {
        return;
    }
    tether_signal_stop(s);
    tether__handle_detach(&s->h);
    /* The signalfd belongs to the loop, not to the watcher, and
     * sig_dispatch() does not touch a watcher after its callback: nothing
     * else points here. */
    tether__loop_handle_remove(s->h.loop, false);
    free(s);
}

int tether_signal_signum(const tether_signal *s)
{
    return s != NULL ? s->signum : 0;
}

void tether_signal_unref(tether_signal *s)
{
    if (s != NULL) {
        tether__handle_unref(&s->h);
    }
}

void tether_signal_ref(tether_signal *s)
{
    if (s != NULL) {
        tether__handle_ref(&s->h);
    }
}
