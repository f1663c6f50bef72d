/* SPDX-License-Identifier: MIT */
/* Public fd watchers (tether_io): the application's own descriptors on the
 * loop's level-triggered epoll set, with the events that fired (including
 * errors and hang-ups) passed to a user callback. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static_assert(TETHER_IO_READABLE == TETHER_EV_READ, "public and internal bits agree");
static_assert(TETHER_IO_WRITABLE == TETHER_EV_WRITE, "public and internal bits agree");
static_assert(TETHER_IO_ERROR == TETHER__EV_ERROR, "public and internal bits agree");
static_assert(TETHER_IO_HANGUP == TETHER__EV_HANGUP, "public and internal bits agree");

struct tether_io {
    struct tether__handle h; /* active while started */
    struct tether__io io;
    struct tether__pending free_pend;
    tether_io_cb cb;
    void *ud;
};

static void io_on_ready(struct tether__io *w, unsigned revents)
{
    tether_io *io = tether__container_of(w, tether_io, io);
    io->cb(io, revents, io->ud);
}

static void io_free_cb(struct tether__pending *p)
{
    tether_io *io = tether__container_of(p, tether_io, free_pend);
    tether__loop_handle_remove(io->h.loop, false);
    free(io);
}

static void io_close(void *obj)
{
    tether_io_free(obj);
}

int tether_io_new(tether_io **out, tether_loop *loop, int fd)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (loop == NULL || fd < 0) {
        return TETHER_EINVAL;
    }
    tether_io *io = calloc(1, sizeof *io);
    if (io == NULL) {
        return TETHER_ENOMEM;
    }
    tether__io_init(&io->io, fd, io_on_ready);
    io->io.report_errors = true;
    tether__pending_init(&io->free_pend, io_free_cb);
    tether__handle_init(&io->h, loop, TETHER_HANDLE_IO, io, io_close);
    *out = io;
    return TETHER_OK;
}

/* Registers the interest set, naming the cause of a refusal. */
static int io_apply(tether_io *io, unsigned events, tether_error *out_err)
{
    if (events == 0 || (events & ~(unsigned)(TETHER_IO_READABLE | TETHER_IO_WRITABLE)) != 0) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "tether_io events 0x%x: want TETHER_IO_READABLE and/or "
                                 "TETHER_IO_WRITABLE",
                                 events);
    }
    int fd = io->io.fd;
    if (tether__io_set(io->h.loop, &io->io, events) == TETHER_OK) {
        return TETHER_OK;
    }
    int e = errno;
    switch (e) {
    case EEXIST:
        return tether__set_error(out_err, TETHER_EBUSY,
                                 "fd %d is already watched on this loop (by another tether_io "
                                 "or by one of the loop's connections)",
                                 fd);
    case EPERM:
        return tether__set_error(out_err, TETHER_ENOTSUP,
                                 "fd %d cannot be polled (a regular file or a directory)", fd);
    case EBADF:
        return tether__set_error(out_err, TETHER_EINVAL, "fd %d is not open", fd);
    case EINVAL:
    case ELOOP:
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "fd %d cannot be watched by this loop (it is the loop's own "
                                 "epoll fd or an epoll set that watches it)",
                                 fd);
    case ENOMEM:
    case ENOSPC:
        return tether__set_error(out_err, TETHER_ENOMEM,
                                 "cannot watch fd %d: %s (see /proc/sys/fs/epoll/max_user_watches)",
                                 fd, strerror(e));
    default:
        return tether__set_error(out_err, tether__errno_to_err(e), "cannot watch fd %d: %s", fd,
                                 strerror(e));
    }
}

int tether_io_start(tether_io *io, unsigned events, tether_io_cb cb, void *ud,
                    tether_error *out_err)
{
    tether__error_clear(out_err);
    if (io == NULL || cb == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "tether_io_start: %s is NULL",
                                 io == NULL ? "the watcher" : "the callback");
    }
    if (io->h.closing) {
        return tether__set_error(out_err, TETHER_EINVAL, "tether_io_start: the watcher was freed");
    }
    int rv = io_apply(io, events, out_err);
    if (rv != TETHER_OK) {
        tether_io_stop(io);
        return rv;
    }
    io->cb = cb;
    io->ud = ud;
    tether__handle_start(&io->h);
    return TETHER_OK;
}

int tether_io_modify(tether_io *io, unsigned events, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (io == NULL || !io->h.active) {
        return tether__set_error(out_err, TETHER_EINVAL, "tether_io_modify: %s",
                                 io == NULL ? "the watcher is NULL" : "the watcher is not started");
    }
    int rv = io_apply(io, events, out_err);
    if (rv != TETHER_OK) {
        tether_io_stop(io);
    }
    return rv;
}

void tether_io_stop(tether_io *io)
{
    if (io == NULL) {
        return;
    }
    /* Unregistered, a ready event later in the current batch is skipped
     * (loop.c checks `registered`). */
    tether__io_stop(io->h.loop, &io->io);
    tether__handle_stop(&io->h);
}

void tether_io_free(tether_io *io)
{
    if (io == NULL || io->h.closing) {
        return;
    }
    tether_io_stop(io);
    tether__handle_detach(&io->h);
    if (io->h.loop->dispatching) {
        /* The current batch of epoll events may still point at us. */
        tether__pending_queue(io->h.loop, &io->free_pend);
        return;
    }
    tether__loop_handle_remove(io->h.loop, false);
    free(io);
}

unsigned tether_io_events(const tether_io *io)
{
    return io != NULL && io->io.registered ? io->io.events : 0u;
}

int tether_io_fd(const tether_io *io)
{
    return io != NULL ? io->io.fd : -1;
}

void tether_io_unref(tether_io *io)
{
    if (io != NULL) {
        tether__handle_unref(&io->h);
    }
}

void tether_io_ref(tether_io *io)
{
    if (io != NULL) {
        tether__handle_ref(&io->h);
    }
}
