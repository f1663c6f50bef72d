/* Connections: framed messages over a transport.
 *
 * State machine: CONNECTING -> HANDSHAKING -> READY -> CLOSING -> LINGER ->
 * DEAD. Only this file calls the application's callbacks, and only from
 * loop dispatch (I/O events, deferred work, pre-poll flushes), never from
 * inside an API call: an API call that has something to report queues it on
 * the connection's pending node. Memory is freed only from deferred work,
 * so it is always safe to close or abort a connection inside its callbacks.
 *
 * Input: every connection reads into the loop's shared buffer and frames
 * are delivered straight from it; only the incomplete tail of a read is
 * copied into a per-connection buffer. Idle connections therefore hold no
 * input buffer at all. A large frame whose length is known gets a buffer of
 * exactly its size, and the rest of it is read directly into place.
 *
 * Output: send() appends to a chain of segments; small messages share a
 * segment, large ones are written straight from the caller's memory when
 * the queue is empty. The queue is flushed with one writev when the
 * dispatch that sent it ends (or before the loop polls, for sends made
 * outside a dispatch of this connection), so a burst of sends costs one
 * system call. */
#include "conn_int.h"
#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define LINGER_MS 2000u /* drain input after our FIN, at most this long */

/* ---- small helpers ----------------------------------------------------- */

static void conn_pending_cb(struct tether__pending *p);
static void conn_timer_cb(struct tether__tnode *n);
static void live_timer_cb(struct tether__tnode *n);
static void conn_on_io(struct tether__io *io, unsigned revents);

static void conn_vset_err(tether_conn *c, const char *fmt, va_list ap)
{
    if (c->err == NULL) {
        c->err = malloc(TETHER_ERROR_MSG_MAX);
        if (c->err == NULL) {
            return;
        }
    }
    vsnprintf(c->err, TETHER_ERROR_MSG_MAX, fmt, ap);
}

void tether__conn_set_err(tether_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vset_err(c, fmt, ap);
    va_end(ap);
}

tether_conn *tether__conn_alloc(tether_loop *loop, struct tether__conn_cfg *cfg, uint8_t state)
{
    tether_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->loop = loop;
    c->cfg = cfg;
    cfg->refs++;
    c->userdata = cfg->o.userdata;
    c->state = state;
    c->rtt_us = -1;
    if (cfg->live) {
        c->live = calloc(1, sizeof *c->live);
        if (c->live == NULL) {
            tether__conn_cfg_unref(cfg);
            free(c);
            return NULL;
        }
        tether__tnode_init(&c->live->timer, live_timer_cb);
        c->live->c = c;
    }
    tether__io_init(&c->io, -1, conn_on_io);
    tether__pending_init(&c->pend, conn_pending_cb);
    tether__flush_init(&c->flush, tether__conn_flush_cb);
    tether__tnode_init(&c->timer, conn_timer_cb);
    tether__loop_handle_add(loop, true);
    return c;
}

/* ---- closing ----------------------------------------------------------- */

static void conn_destroy_transport(tether_conn *c)
{
    if (c->tr != NULL) {
        /* destroy() closes the fd, which takes it out of the epoll set. */
        tether__io_forget(&c->io);
    } else {
        tether__io_stop(c->loop, &c->io);
    }
    if (c->tr != NULL) {
        c->tr->ops->destroy(c->tr);
        c->tr = NULL;
    }
    c->io.fd = -1;
}

/* Moves the connection to DEAD with a reason and queues the report. */
static void conn_finish(tether_conn *c, int reason)
{
    if (c->state == TETHER__CS_DEAD) {
        return;
    }
    if (c->live != NULL) {
        tether__tnode_stop(c->loop, &c->live->timer);
    }
    if (c->state == TETHER__CS_LINGER) {
        /* Already reported closed; only the fd remains. */
        c->state = TETHER__CS_DEAD;
        tether__tnode_stop(c->loop, &c->timer);
        conn_destroy_transport(c);
        tether__conn_todo(c, TETHER__CT_FREE);
        return;
    }
    if (c->state == TETHER__CS_CONNECTING) {
        tether__dial_cancel(c);
    }
    c->state = TETHER__CS_DEAD;
    c->reason = reason;
    tether__tnode_stop(c->loop, &c->timer);
    /* The socket stays open, unwatched, until the handle is freed after
     * on_close, so that tether_conn_peer() still works in on_close. */
    tether__io_stop(c->loop, &c->io);
    free(c->rpart);
    c->rpart = NULL;
    c->rlen = c->rcap = 0;
    tether__conn_todo(c, TETHER__CT_CLOSE);
}

void tether__conn_end(tether_conn *c, int reason)
{
    conn_finish(c, reason);
}

void tether__conn_fail(tether_conn *c, int reason, const char *fmt, ...)
{
    if (c->state == TETHER__CS_DEAD || c->state == TETHER__CS_LINGER) {
        conn_finish(c, reason);
        return;
    }
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        conn_vset_err(c, fmt, ap);
        va_end(ap);
    }
    conn_finish(c, reason);
}

/* Fails with the transport's own detail, prefixed with what we were doing. */
void tether__conn_fail_io(tether_conn *c, int rv, const char *what)
{
    const char *d = c->tr != NULL ? c->tr->ops->last_error(c->tr) : NULL;
    const tether_conn_opts *o = &c->cfg->o;
    if (rv == TETHER_ECONNRESET) {
        tether__conn_fail(c, rv, "connection reset by peer during %s", what);
    } else if (rv == TETHER_ETIMEDOUT) {
        /* The kernel gave up on the peer: say which of our settings made
         * it do so, if any. */
        if (o->user_timeout_ms > 0) {
            tether__conn_fail(c, rv,
                              "TCP user timeout during %s: sent data stayed unacknowledged for "
                              "%d ms (TCP_USER_TIMEOUT)",
                              what, o->user_timeout_ms);
        } else if (o->keepalive) {
            tether__conn_fail(c, rv,
                              "TCP keepalive timeout during %s: the peer stopped answering "
                              "(or TCP retransmissions gave up)",
                              what);
        } else {
            tether__conn_fail(c, rv,
                              "%s failed: connection timed out (TCP retransmissions "
                              "gave up)",
                              what);
        }
    } else {
        tether__conn_fail(c, rv, "%s failed: %s", what, d != NULL ? d : tether_strerror(rv));
    }
}

static void conn_free(tether_conn *c)
{
    if (c->live != NULL) {
        tether__tnode_stop(c->loop, &c->live->timer);
        free(c->live);
    }
    conn_destroy_transport(c);
    tether__loop_handle_remove(c->loop, true);
    tether__pending_cancel(c->loop, &c->pend);
    /* A send from outside this connection's callbacks (e.g. a broadcast
     * from another connection's on_message) queued a flush; an abort that
     * followed must not leave it pointing at freed memory. */
    tether__flush_cancel(c->loop, &c->flush);
    free(c->rpart);
    free(c->err);
    free(c->url);
    tether__conn_cfg_unref(c->cfg);
    free(c);
}

/* ---- I/O interest ---------------------------------------------------- */

void tether__conn_update_io(tether_conn *c)
{
    if (c->tr == NULL || c->state == TETHER__CS_DEAD) {
        return;
    }
    unsigned ev = 0;
    switch (c->state) {
    case TETHER__CS_HANDSHAKING:
        ev = c->tr->ops->want_events(c->tr);
        if (ev == 0) {
            ev = TETHER_EV_READ;
        }
        break;
    case TETHER__CS_READY:
        if (!(c->flags & (TETHER__CF_PAUSED | TETHER__CF_EOF))) {
            ev |= TETHER_EV_READ;
        }
        if (c->flags & TETHER__CF_WBLOCKED) {
            ev |= TETHER_EV_WRITE;
        }
        ev |= c->tr->ops->want_events(c->tr);
        break;
    case TETHER__CS_CLOSING:
        if (c->flags & TETHER__CF_WBLOCKED) {
            ev |= TETHER_EV_WRITE;
        }
        ev |= c->tr->ops->want_events(c->tr);
        break;
    case TETHER__CS_LINGER:
        ev = TETHER_EV_READ;
        break;
    default:
        break;
    }
    int rv = tether__io_set(c->loop, &c->io, ev);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "cannot watch the socket: %s", tether_strerror(rv));
    }
}

/* ---- control frames and liveness --------------------------------------- */

/* The wire format and the rules are documented in tether/conn.h, section
 * "Heartbeat wire format". Control frames are rare, so nothing here is on
 * a per-message path: the fast len32 parser only comes here for a header
 * that no data message can have. */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void live_due(tether_conn *c, uint64_t at);

/* Queues a control frame behind whatever is queued already. */
static int ctrl_queue(tether_conn *c, uint8_t type, const uint8_t *payload, size_t n)
{
    uint8_t buf[TETHER__CTRL_HDR_LEN + TETHER__CTRL_PING_MAX];
    assert(n <= TETHER__CTRL_PING_MAX);
    tether__len32_ctrl_header(buf, type, (uint16_t)n);
    if (n > 0) {
        memcpy(buf + TETHER__CTRL_HDR_LEN, payload, n);
    }
    struct iovec iov = {buf, TETHER__CTRL_HDR_LEN + n};
    return tether__wq_append_copy(c, &iov, 1, iov.iov_len);
}

static int ctrl_queue_hello(tether_conn *c)
{
    uint8_t p[TETHER__CTRL_HELLO_LEN];
    p[0] = TETHER__CTRL_HELLO_VERSION;
    p[1] = 0; /* flags: none defined */
    tether__put_be32(p + 2, (uint32_t)c->cfg->o.heartbeat_ms);
    int rv = ctrl_queue(c, TETHER__CTRL_HELLO, p, sizeof p);
    if (rv == TETHER_OK) {
        c->flags |= TETHER__CF_HELLO_SENT;
    }
    return rv;
}

static void ctrl_send_ping(tether_conn *c)
{
    uint8_t p[8];
    uint64_t t = mono_us();
    tether__put_be32(p, (uint32_t)(t >> 32));
    tether__put_be32(p + 4, (uint32_t)t);
    if (ctrl_queue(c, TETHER__CTRL_PING, p, sizeof p) != TETHER_OK) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a heartbeat");
        return;
    }
    c->pings_sent++;
    c->live->last_ping = tether__loop_time(c->loop);
    tether__conn_after_queue(c);
}

/* Handles one complete control frame. Returns false when the connection
 * failed. */
bool tether__ctrl_on_frame(tether_conn *c, const uint8_t *frame, size_t len)
{
    uint8_t type = frame[1];
    const uint8_t *p = frame + TETHER__CTRL_HDR_LEN;
    size_t n = len - TETHER__CTRL_HDR_LEN;
    c->ctrl_in++;
    switch (type) {
    case TETHER__CTRL_HELLO: {
        if (n < TETHER__CTRL_HELLO_LEN || p[0] == 0) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed HELLO control frame (%zu bytes)",
                              n);
            return false;
        }
        c->flags |= TETHER__CF_PEER_HELLO;
        uint32_t peer_ms = tether__get_be32(p + 2);
        if (!(c->flags & TETHER__CF_HELLO_SENT) && ctrl_queue_hello(c) != TETHER_OK) {
            tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a HELLO");
            return false;
        }
        int own = c->cfg->o.heartbeat_ms;
        if (own > 0 && c->live != NULL) {
            /* The slower side decides: nobody pings more often than its
             * peer asked for. */
            c->hb_ms = TETHER__MAX((uint32_t)own, peer_ms);
            c->live->unanswered = 0;
            ctrl_send_ping(c); /* a first round-trip time, right away */
            live_due(c, tether__loop_time(c->loop) + c->hb_ms);
        } else {
            tether__conn_after_queue(c);
        }
        break;
    }
    case TETHER__CTRL_PING:
        if (n == 0 || n > TETHER__CTRL_PING_MAX) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed PING control frame (%zu bytes)", n);
            return false;
        }
        /* A peer that pings without reading gets no pongs: they would only
         * pile up in our queue. */
        if (c->queued <= c->cfg->o.send_hwm) {
            if (ctrl_queue(c, TETHER__CTRL_PONG, p, n) != TETHER_OK) {
                tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a heartbeat");
                return false;
            }
            tether__conn_after_queue(c);
        }
        break;
    case TETHER__CTRL_PONG:
        if (n == 0 || n > TETHER__CTRL_PING_MAX) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed PONG control frame (%zu bytes)", n);
            return false;
        }
        c->pongs_in++;
        if (n == 8) {
            uint64_t sent = ((uint64_t)tether__get_be32(p) << 32) | tether__get_be32(p + 4);
            uint64_t now = mono_us();
            if (sent <= now) {
                c->rtt_us = (int64_t)(now - sent);
            }
        }
        break;
    default:
        break; /* ctrl_frame_len() admits no other type */
    }
    return c->state == TETHER__CS_READY;
}

/* Makes sure the liveness timer fires no later than `at` (loop ms). Cheap
 * when it already does, which is the common case on busy connections. */
static void live_due(tether_conn *c, uint64_t at)
{
    struct tether__tnode *t = &c->live->timer;
    if (tether__tnode_active(t) && t->deadline <= at) {
        return;
    }
    uint64_t now = tether__loop_time(c->loop);
    tether__tnode_start(c->loop, t, at > now ? at - now : 0);
}

void tether__live_queue_started(tether_conn *c)
{
    struct tether__live *l = c->live;
    l->wstall = tether__loop_time(c->loop);
    if (c->state == TETHER__CS_READY && c->cfg->o.write_timeout_ms > 0) {
        live_due(c, l->wstall + (uint64_t)c->cfg->o.write_timeout_ms);
    }
}

/* After a read: notice when an incomplete frame starts, for the frame
 * timeout. The frame counter tells whether rpart still holds the frame seen
 * last time or a new one. */
void tether__live_after_read(tether_conn *c)
{
    struct tether__live *l = c->live;
    int ft = c->cfg->o.frame_timeout_ms;
    if (ft <= 0 || c->state != TETHER__CS_READY) {
        return;
    }
    if (c->rlen == 0 || (c->flags & TETHER__CF_PAUSED)) {
        l->frame_mark = UINT64_MAX;
        return;
    }
    uint64_t mark = c->msgs_in + c->ctrl_in;
    if (l->frame_mark != mark) {
        l->frame_mark = mark;
        l->frame_start = tether__loop_time(c->loop);
        live_due(c, l->frame_start + (uint64_t)ft);
    }
}

/* Arms the timer for the earliest check that could fail or ping. */
static void live_arm(tether_conn *c)
{
    struct tether__live *l = c->live;
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t next = UINT64_MAX;
    if (l->age_deadline != 0) {
        next = l->age_deadline;
    }
    if (o->write_timeout_ms > 0 && c->queued > 0) {
        next = TETHER__MIN(next, l->wstall + (uint64_t)o->write_timeout_ms);
    }
    if (!(c->flags & TETHER__CF_PAUSED)) {
        if (o->idle_timeout_ms > 0) {
            next = TETHER__MIN(next, l->last_rx + (uint64_t)o->idle_timeout_ms);
        }
        if (o->frame_timeout_ms > 0 && c->rlen > 0) {
            uint64_t start =
                l->frame_mark != UINT64_MAX ? l->frame_start : tether__loop_time(c->loop);
            next = TETHER__MIN(next, start + (uint64_t)o->frame_timeout_ms);
        }
        if (c->hb_ms > 0) {
            uint64_t from = l->unanswered == 0 ? l->last_rx : l->last_ping;
            next = TETHER__MIN(next, from + c->hb_ms);
        } else if (o->heartbeat_ms > 0 && (c->flags & TETHER__CF_DIALED) &&
                   !(c->flags & TETHER__CF_PEER_HELLO)) {
            next = TETHER__MIN(next, l->last_rx + (uint64_t)o->heartbeat_ms *
                                                      (uint64_t)(o->heartbeat_misses + 1));
        }
    }
    if (next == UINT64_MAX) {
        tether__tnode_stop(c->loop, &l->timer);
        return;
    }
    uint64_t now = tether__loop_time(c->loop);
    tether__tnode_start(c->loop, &l->timer, next > now ? next - now : 1);
}

static void live_start(tether_conn *c)
{
    struct tether__live *l = c->live;
    uint64_t now = tether__loop_time(c->loop);
    l->last_rx = now;
    l->wstall = now;
    l->last_wprog = now;
    l->frame_mark = UINT64_MAX;
    int age = c->cfg->o.max_age_ms;
    if (age > 0) {
        /* ±10 %, so that connections opened together do not all expire
         * together. */
        double f = 0.9 + 0.2 * ((double)(tether__random_u64() >> 11) / 9007199254740992.0);
        l->age_deadline = now + (uint64_t)((double)age * f);
    }
    live_arm(c);
}

/* The checks themselves; the caller re-arms the timer. */
static void live_check(tether_conn *c)
{
    struct tether__live *l = c->live;
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t now = tether__loop_time(c->loop);

    if (l->age_deadline != 0 && now >= l->age_deadline) {
        tether__conn_set_err(c, "maximum connection age reached (%llu ms; max_age_ms %d)",
                             (unsigned long long)(now - c->ready_at), o->max_age_ms);
        c->flags |= TETHER__CF_CLOSE_REQ;
        c->reason = TETHER_OK;
        tether__conn_begin_close(c);
        return;
    }
    if (o->write_timeout_ms > 0 && c->queued > 0 &&
        now - l->wstall >= (uint64_t)o->write_timeout_ms) {
        /* Ask the socket once more before blaming the peer (the loop may
         * have been busy elsewhere). */
        tether__conn_flush(c);
        if (c->state != TETHER__CS_READY) {
            return;
        }
        if (c->queued > 0 && now - l->wstall >= (uint64_t)o->write_timeout_ms) {
            tether__conn_fail(c, TETHER_ETIMEDOUT,
                              "write timeout: %zu queued bytes made no progress for %llu ms "
                              "(write_timeout_ms %d); the peer stopped reading",
                              c->queued, (unsigned long long)(now - l->wstall),
                              o->write_timeout_ms);
            return;
        }
    }
    if (c->flags & TETHER__CF_PAUSED) {
        return; /* silence is expected while we do not read */
    }
    uint32_t hb = c->hb_ms;
    bool hello_wait = hb == 0 && o->heartbeat_ms > 0 && (c->flags & TETHER__CF_DIALED) &&
                      !(c->flags & TETHER__CF_PEER_HELLO);
    uint64_t hello_limit = (uint64_t)o->heartbeat_ms * (uint64_t)(o->heartbeat_misses + 1);
    bool due = (o->idle_timeout_ms > 0 && now - l->last_rx >= (uint64_t)o->idle_timeout_ms) ||
               (o->frame_timeout_ms > 0 && c->rlen > 0) || (hb > 0 && now - l->last_rx >= hb) ||
               (hello_wait && now - l->last_rx >= hello_limit);
    if (due) {
        /* Before declaring the peer silent, read what the kernel holds: the
         * loop may have been blocked (or, for the blocking API, not run at
         * all) while the peer was talking. */
        tether__conn_read(c);
        if (c->state != TETHER__CS_READY) {
            return;
        }
    }
    if (o->idle_timeout_ms > 0 && now - l->last_rx >= (uint64_t)o->idle_timeout_ms) {
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "idle timeout: nothing received for %llu ms (idle_timeout_ms %d)",
                          (unsigned long long)(now - l->last_rx), o->idle_timeout_ms);
        return;
    }
    if (o->frame_timeout_ms > 0 && c->rlen > 0) {
        if (l->frame_mark == UINT64_MAX) {
            /* A frame left incomplete across a pause: time it from now. */
            l->frame_mark = c->msgs_in + c->ctrl_in;
            l->frame_start = now;
        } else if (now - l->frame_start >= (uint64_t)o->frame_timeout_ms) {
            tether__conn_fail(c, TETHER_ETIMEDOUT,
                              "frame timeout: a frame was still incomplete after %llu ms "
                              "(%zu bytes of it received; frame_timeout_ms %d)",
                              (unsigned long long)(now - l->frame_start), c->rlen,
                              o->frame_timeout_ms);
            return;
        }
    }
    if (hb > 0) {
        if (l->last_rx >= l->last_ping) {
            l->unanswered = 0; /* anything received answers every ping before it */
        }
        if (l->unanswered > 0 && c->queued > 0 && l->last_wprog > l->last_ping) {
            /* Our own output is still draining ahead of the ping: its
             * interval counts from that progress, not from when it was
             * queued. (A dead link stops the progress soon enough.) */
            l->last_ping = l->last_wprog;
        }
        if (l->unanswered >= (uint32_t)o->heartbeat_misses && now - l->last_ping >= hb) {
            tether__conn_fail(c, TETHER_ETIMEDOUT,
                              "heartbeat timeout: %u pings unanswered, nothing received for "
                              "%llu ms (interval %u ms)",
                              l->unanswered, (unsigned long long)(now - l->last_rx), hb);
            return;
        }
        if (now - l->last_rx >= hb && (l->unanswered == 0 || now - l->last_ping >= hb)) {
            l->unanswered++;
            ctrl_send_ping(c);
        }
    } else if (hello_wait && now - l->last_rx >= hello_limit) {
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "heartbeat timeout: the peer did not answer our HELLO within %llu ms "
                          "(interval %d ms)",
                          (unsigned long long)(now - l->last_rx), o->heartbeat_ms);
    }
}

static void live_timer_cb(struct tether__tnode *n)
{
    struct tether__live *l = tether__container_of(n, struct tether__live, timer);
    tether_conn *c = l->c;
    if (c->state != TETHER__CS_READY) {
        return;
    }
    c->dispatching++;
    live_check(c);
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        tether__conn_dispatch_end(c);
    }
    if (c->state == TETHER__CS_READY) {
        live_arm(c);
    }
}

/* ---- state transitions ------------------------------------------------- */

void tether__conn_begin_shutdown(tether_conn *c)
{
    bool done = false;
    int rv = c->tr->ops->shutdown(c->tr, &done);
    if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
        /* The data went out; a failing FIN (peer already gone) does not
         * change what the application needs to know. */
        done = true;
    }
    if (!done) {
        tether__conn_update_io(c);
        return;
    }
    int reason = c->reason;
    if (reason == TETHER_EOF || (c->flags & TETHER__CF_EOF)) {
        /* Peer closed first and we have flushed our replies: nothing left
         * to wait for. */
        conn_finish(c, TETHER_EOF);
        return;
    }
    /* Report the close now and drain the peer's remaining input in the
     * background, so that closing with unread input does not turn into a
     * reset that destroys data the peer has not read yet. */
    c->reason = TETHER_OK;
    c->state = TETHER__CS_LINGER;
    free(c->rpart);
    c->rpart = NULL;
    c->rlen = c->rcap = 0;
    tether__tnode_start(c->loop, &c->timer, LINGER_MS);
    tether__conn_update_io(c);
    tether__conn_todo(c, TETHER__CT_CLOSE);
}

void tether__conn_begin_close(tether_conn *c)
{
    c->state = TETHER__CS_CLOSING;
    if (c->live != NULL) {
        /* The close timeout bounds this phase. */
        tether__tnode_stop(c->loop, &c->live->timer);
    }
    int ms = c->cfg->o.close_timeout_ms;
    if (ms >= 0) {
        tether__tnode_start(c->loop, &c->timer, (uint64_t)ms);
    }
    if (c->wq_head == NULL) {
        tether__conn_begin_shutdown(c);
    } else {
        c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
        tether__conn_flush(c);
    }
}

static void conn_became_ready(tether_conn *c)
{
    c->state = TETHER__CS_READY;
    c->ready_at = tether__loop_time(c->loop);
    tether__tnode_stop(c->loop, &c->timer);
    if (c->live != NULL) {
        live_start(c);
    }
    if (c->flags & TETHER__CF_DIALED) {
        tether__conn_todo(c, TETHER__CT_CONNECTED);
    }
    if (c->flags & TETHER__CF_ACCEPTED && !(c->flags & TETHER__CF_ACCEPT_DONE)) {
        c->flags |= TETHER__CF_ACCEPT_DONE;
        if (c->cfg->on_accept != NULL) {
            c->dispatching++;
            c->cfg->on_accept(c->cfg->listener, c, c->cfg->accept_ud);
            c->dispatching--;
        }
    }
    if (c->state != TETHER__CS_READY) {
        return;
    }
    tether__conn_update_io(c);
    if (c->wq_head != NULL) {
        tether__conn_todo(c, TETHER__CT_FLUSH);
    }
    if (c->tr->ops->has_pending(c->tr)) {
        /* TLS read data along with the end of the handshake. */
        tether__conn_todo(c, TETHER__CT_PARSE);
    }
}

static void conn_handshake_step(tether_conn *c)
{
    bool done = false;
    int rv = c->tr->ops->handshake(c->tr, &done);
    if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
        const char *d = c->tr->ops->last_error(c->tr);
        if (c->url != NULL) {
            tether__conn_fail(c, rv, "connect to %s: %s", c->url,
                              d != NULL ? d : tether_strerror(rv));
        } else {
            char peer[80];
            if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
                snprintf(peer, sizeof peer, "an unknown peer");
            }
            c->flags |= TETHER__CF_REPORT_LISTENER;
            tether__conn_fail(c, rv, "%s handshake with %s failed: %s",
                              c->cfg->tls != NULL ? "TLS" : c->tr->ops->name, peer,
                              d != NULL ? d : tether_strerror(rv));
        }
        return;
    }
    if (done) {
        conn_became_ready(c);
    } else {
        tether__conn_update_io(c);
    }
}

/* The deadline passed during the TLS handshake: for a dialled connection
 * the connect timeout, for an accepted one the TLS configuration's. */
static void conn_handshake_timeout(tether_conn *c)
{
    if (c->url != NULL) {
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "connect to %s: TLS handshake timed out (connect timeout of %d ms)",
                          c->url, c->cfg->o.connect_timeout_ms);
        return;
    }
    char peer[80];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        snprintf(peer, sizeof peer, "an unknown peer");
    }
    c->flags |= TETHER__CF_REPORT_LISTENER;
    tether__conn_fail(c, TETHER_ETIMEDOUT, "TLS handshake with %s timed out after %d ms", peer,
                      tether__tls_handshake_timeout_ms(c->cfg->tls));
}

int tether__conn_attach(tether_conn *c, int fd, bool is_unix, const char *host, bool server,
                        struct tether__io *handoff)
{
    int rv;
    if (c->cfg->tls != NULL) {
        rv = tether__tls_transport_new(&c->tr, c->cfg->tls, fd, host, server);
        if (rv == TETHER_OK && server) {
            /* Accepted connections have no connect deadline: the TLS
             * configuration bounds their handshake. */
            int ms = tether__tls_handshake_timeout_ms(c->cfg->tls);
            if (ms >= 0) {
                tether__tnode_start(c->loop, &c->timer, (uint64_t)ms);
            }
        }
    } else {
        rv = tether__tcp_transport_new(&c->tr, fd, is_unix);
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    tether__io_init(&c->io, fd, conn_on_io);
    if (handoff != NULL) {
        tether__io_take_over(&c->io, handoff);
    }
    c->state = TETHER__CS_HANDSHAKING;
    c->dispatching++;
    conn_handshake_step(c);
    c->dispatching--;
    return TETHER_OK;
}

/* ---- loop callbacks ---------------------------------------------------- */

static void conn_on_io(struct tether__io *io, unsigned revents)
{
    tether_conn *c = tether__container_of(io, tether_conn, io);
    c->dispatching++;
    switch (c->state) {
    case TETHER__CS_HANDSHAKING:
        conn_handshake_step(c);
        break;
    case TETHER__CS_READY:
    case TETHER__CS_CLOSING:
        if (revents & TETHER_EV_WRITE) {
            c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
            tether__conn_flush(c);
        }
        if (c->state == TETHER__CS_READY && c->tr != NULL &&
            ((revents & TETHER_EV_READ) || (c->tr->ops->want_events(c->tr) & TETHER_EV_WRITE))) {
            /* (TLS reading may wait for writability.) */
            tether__conn_read(c);
            /* TLS may hold decrypted records that epoll cannot see. */
            while (c->state == TETHER__CS_READY && c->tr != NULL &&
                   !(c->flags & TETHER__CF_PAUSED) && c->tr->ops->has_pending(c->tr)) {
                size_t before = c->rlen;
                tether__conn_read(c);
                if (c->rlen == before && c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
                    /* Finish from the pending queue, after other work. */
                    tether__conn_todo(c, TETHER__CT_PARSE);
                    break;
                }
            }
            if ((revents & TETHER_EV_READ) && c->state == TETHER__CS_READY && c->wq_head != NULL &&
                c->tr != NULL && (c->tr->ops->want_events(c->tr) & TETHER_EV_READ)) {
                /* TLS may need to read to finish a write. */
                c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
                tether__conn_flush(c);
            }
        } else if ((revents & TETHER_EV_READ) && c->state == TETHER__CS_CLOSING && c->tr != NULL &&
                   (c->tr->ops->want_events(c->tr) & TETHER_EV_READ)) {
            /* TLS may need to read to finish a write. */
            tether__conn_flush(c);
        }
        break;
    case TETHER__CS_LINGER:
        tether__conn_linger_read(c);
        break;
    default:
        break;
    }
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        tether__conn_dispatch_end(c);
    }
}

static void conn_timer_cb(struct tether__tnode *n)
{
    tether_conn *c = tether__container_of(n, tether_conn, timer);
    switch (c->state) {
    case TETHER__CS_CONNECTING:
    case TETHER__CS_HANDSHAKING:
        if (c->state == TETHER__CS_CONNECTING && c->dialer != NULL) {
            tether__dial_timeout(c); /* names the addresses it tried */
            break;
        }
        if (c->state == TETHER__CS_HANDSHAKING && c->cfg->tls != NULL) {
            conn_handshake_timeout(c);
            break;
        }
        tether__conn_fail(c, TETHER_ETIMEDOUT, "connect to %s timed out after %d ms",
                          c->url != NULL ? c->url : "peer", c->cfg->o.connect_timeout_ms);
        break;
    case TETHER__CS_CLOSING:
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "close timed out after %d ms with %zu bytes still queued",
                          c->cfg->o.close_timeout_ms, c->queued);
        break;
    case TETHER__CS_LINGER:
        conn_finish(c, TETHER_OK);
        break;
    default:
        break;
    }
}

static void conn_pending_cb(struct tether__pending *p)
{
    tether_conn *c = tether__container_of(p, tether_conn, pend);
    if (c->todo & TETHER__CT_CONNECTED) {
        c->todo &= (uint16_t)~TETHER__CT_CONNECTED;
        if (c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_CONNECT_DONE)) {
            c->flags |= TETHER__CF_CONNECT_DONE;
            if (c->cfg->o.on_connect != NULL) {
                c->dispatching++;
                c->cfg->o.on_connect(c, TETHER_OK, c->userdata);
                c->dispatching--;
            }
            if (c->state == TETHER__CS_READY && (c->flags & TETHER__CF_CLOSE_REQ)) {
                tether__conn_begin_close(c);
            }
        }
    }
    if (c->todo & TETHER__CT_PARSE) {
        c->todo &= (uint16_t)~TETHER__CT_PARSE;
        if (c->rlen > 0 && tether__conn_can_deliver(c)) {
            c->dispatching++;
            tether__conn_parse_rpart(c);
            c->dispatching--;
        }
        if (tether__conn_can_deliver(c) && c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
            /* Input held inside the transport (TLS) that epoll will not
             * report; more than one read's worth continues next time. */
            c->dispatching++;
            tether__conn_read(c);
            c->dispatching--;
            if (tether__conn_can_deliver(c) && c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
                tether__conn_todo(c, TETHER__CT_PARSE);
            }
        }
        if (c->state == TETHER__CS_READY) {
            tether__conn_update_io(c);
        }
    }
    /* CT_FLUSH only asks for this call: dispatch_end flushes the queue. */
    c->todo &= (uint16_t)~TETHER__CT_FLUSH;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        c->dispatching++;
        tether__conn_dispatch_end(c);
        c->dispatching--;
    }
    if (c->todo & TETHER__CT_CLOSE) {
        c->todo &= (uint16_t)~TETHER__CT_CLOSE;
        if (!(c->flags & TETHER__CF_CLOSE_DONE)) {
            c->flags |= TETHER__CF_CLOSE_DONE;
            int reason = c->state == TETHER__CS_LINGER ? TETHER_OK : c->reason;
            if (reason != TETHER_OK && reason != TETHER_ECANCELED) {
                const char *d = tether_conn_last_error(c);
                tether__log(TETHER_LOG_DEBUG, "%s connection ended (%s): %s",
                            c->url != NULL ? "dialled" : "accepted", tether_err_name(reason),
                            d[0] != '\0' ? d : tether_strerror(reason));
            }
            /* Whatever is still queued will never be sent: release zero-copy
             * buffers before telling the application the connection is gone. */
            if (c->state == TETHER__CS_DEAD) {
                tether__wq_release_all(c);
            }
            if ((c->flags & TETHER__CF_DIALED) && !(c->flags & TETHER__CF_CONNECT_DONE)) {
                c->flags |= TETHER__CF_CONNECT_DONE;
                if (c->cfg->o.on_connect != NULL) {
                    c->cfg->o.on_connect(c, reason == TETHER_OK ? TETHER_ECANCELED : reason,
                                         c->userdata);
                }
            }
            bool tell = !(c->flags & TETHER__CF_ACCEPTED) || (c->flags & TETHER__CF_ACCEPT_DONE);
            if (tell && c->cfg->o.on_close != NULL) {
                c->cfg->o.on_close(c, reason, c->userdata);
            }
            if (!tell && (c->flags & TETHER__CF_REPORT_LISTENER) && c->cfg->listener != NULL) {
                /* It failed its handshake and never reached on_accept. */
                tether__listener_report_conn(c->cfg->listener, reason, tether_conn_last_error(c));
            }
            if (c->state == TETHER__CS_DEAD) {
                c->todo |= TETHER__CT_FREE;
            }
        }
    }
    if ((c->todo & TETHER__CT_FREE) && c->state == TETHER__CS_DEAD) {
        tether__wq_release_all(c);
        conn_free(c);
    }
}

/* ---- public API -------------------------------------------------------- */

void tether_conn_close(tether_conn *c)
{
    if (c == NULL || (c->flags & TETHER__CF_CLOSE_REQ)) {
        return;
    }
    switch (c->state) {
    case TETHER__CS_CONNECTING:
    case TETHER__CS_HANDSHAKING:
        /* Keep what was sent so far: it goes out once connected, then the
         * connection closes. */
        c->flags |= TETHER__CF_CLOSE_REQ;
        break;
    case TETHER__CS_READY:
        c->flags |= TETHER__CF_CLOSE_REQ;
        c->reason = TETHER_OK;
        tether__conn_begin_close(c);
        break;
    default:
        break;
    }
}

void tether_conn_abort(tether_conn *c)
{
    if (c == NULL || c->state == TETHER__CS_DEAD || c->state == TETHER__CS_LINGER) {
        return;
    }
    tether__conn_fail(c, TETHER_ECANCELED, "connection aborted locally");
}

void tether_conn_pause(tether_conn *c)
{
    if (c == NULL || (c->flags & TETHER__CF_PAUSED)) {
        return;
    }
    c->flags |= TETHER__CF_PAUSED;
    if (c->state == TETHER__CS_READY) {
        tether__conn_update_io(c);
    }
}

void tether_conn_resume(tether_conn *c)
{
    if (c == NULL || !(c->flags & TETHER__CF_PAUSED)) {
        return;
    }
    c->flags &= (uint16_t)~TETHER__CF_PAUSED;
    if (c->state != TETHER__CS_READY) {
        return;
    }
    if (c->live != NULL) {
        /* The peer was not heard while we did not listen: start over. */
        c->live->last_rx = tether__loop_time(c->loop);
        c->live->frame_mark = UINT64_MAX;
        c->live->unanswered = 0;
        live_arm(c);
    }
    if (c->rlen > 0 || (c->tr != NULL && c->tr->ops->has_pending(c->tr))) {
        /* Frames held back while paused (here or inside TLS): deliver them
         * from the loop, not from inside this call. */
        tether__conn_todo(c, TETHER__CT_PARSE);
    } else {
        tether__conn_update_io(c);
    }
}

void *tether_conn_userdata(const tether_conn *c)
{
    return c != NULL ? c->userdata : NULL;
}

void tether_conn_set_userdata(tether_conn *c, void *ud)
{
    if (c != NULL) {
        c->userdata = ud;
    }
}

tether_loop *tether_conn_loop(const tether_conn *c)
{
    return c != NULL ? c->loop : NULL;
}

const char *tether_conn_last_error(const tether_conn *c)
{
    if (c == NULL || c->err == NULL) {
        return "";
    }
    return c->err;
}

size_t tether_conn_queued(const tether_conn *c)
{
    return c != NULL ? c->queued : 0;
}

int tether_conn_get_stats_sized(const tether_conn *c, tether_stats *st, size_t size)
{
    if (c == NULL || st == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    tether_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    s.bytes_in = c->bytes_in;
    s.bytes_out = c->bytes_out;
    s.msgs_in = c->msgs_in;
    s.msgs_out = c->msgs_out;
    s.queued_bytes = c->queued;
    s.connects = c->ready_at != 0 ? 1 : 0;
    s.heartbeat_ms = c->hb_ms;
    s.rtt_us = c->rtt_us;
    s.pings_sent = c->pings_sent;
    s.pongs_received = c->pongs_in;
    if (c->ready_at != 0 && (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING)) {
        s.uptime_ms = tether__loop_time(c->loop) - c->ready_at;
    }
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}

int tether_conn_peer(const tether_conn *c, char *buf, size_t len)
{
    if (c == NULL || buf == NULL || len == 0) {
        return TETHER_EINVAL;
    }
    if (c->tr == NULL) {
        return TETHER_ENOTCONN;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->tr->fd, (struct sockaddr *)&ss, &sl) != 0) {
        return TETHER_ENOTCONN;
    }
    char tmp[160];
    tether__addr_format((struct sockaddr *)&ss, sl, tmp, sizeof tmp);
    if (strlen(tmp) + 1 > len) {
        return TETHER_EINVAL;
    }
    memcpy(buf, tmp, strlen(tmp) + 1);
    return TETHER_OK;
}

int tether_conn_dial(tether_conn **out, tether_loop *loop, const char *url,
                     const tether_conn_opts *opts, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (loop == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "loop is NULL");
    }
    struct tether__url u;
    int rv = tether__url_parse(url, false, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    struct tether__conn_cfg *cfg;
    rv = tether__conn_cfg_new(&cfg, opts, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (u.scheme == TETHER__SCHEME_TLS) {
        rv = tether__tls_conn_cfg_setup(cfg, false, out_err);
        if (rv != TETHER_OK) {
            tether__conn_cfg_unref(cfg);
            return rv;
        }
    }
    tether_conn *c = tether__conn_alloc(loop, cfg, TETHER__CS_CONNECTING);
    tether__conn_cfg_unref(cfg);
    if (c == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    c->flags |= TETHER__CF_DIALED;
    c->url = strdup(url);
    if (c->url == NULL) {
        c->state = TETHER__CS_DEAD;
        conn_free(c);
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    if (cfg->o.heartbeat_ms > 0 && ctrl_queue_hello(c) != TETHER_OK) {
        c->state = TETHER__CS_DEAD;
        conn_free(c);
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    if (cfg->o.connect_timeout_ms >= 0) {
        tether__tnode_start(loop, &c->timer, (uint64_t)cfg->o.connect_timeout_ms);
    }
    rv = tether__dial_start(c, &u);
    if (rv != TETHER_OK && c->state != TETHER__CS_DEAD) {
        /* Found synchronously, delivered from the loop (callback contract). */
        tether__conn_fail(c, rv, "connect to %s: %s", url, tether_strerror(rv));
    }
    *out = c;
    return TETHER_OK;
}
