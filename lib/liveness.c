/* Liveness of a connection: the control frames (HELLO, PING, PONG) that
 * negotiate heartbeats and measure the round-trip time, and the checks
 * that end a connection whose peer went silent or stopped reading (idle,
 * frame, write and heartbeat timeouts) or that reached its maximum age.
 *
 * The hot paths only store timestamps in struct tether__live; one coarse
 * timer per connection compares them with the limits. Connections without
 * a liveness option have no struct tether__live at all. */
#include "conn_core.h"
#include "random.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int tether__ctrl_queue_hello(tether_conn *c)
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
    c->live->last_ping = tether__loop_time(c->h.loop);
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
        if (!(c->flags & TETHER__CF_HELLO_SENT) && tether__ctrl_queue_hello(c) != TETHER_OK) {
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
            live_due(c, tether__loop_time(c->h.loop) + c->hb_ms);
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
    uint64_t now = tether__loop_time(c->h.loop);
    tether__tnode_start(c->h.loop, t, at > now ? at - now : 0);
}

void tether__live_queue_started(tether_conn *c)
{
    struct tether__live *l = c->live;
    l->wstall = tether__loop_time(c->h.loop);
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
        l->frame_start = tether__loop_time(c->h.loop);
        live_due(c, l->frame_start + (uint64_t)ft);
    }
}

/* Arms the timer for the earliest check that could fail or ping. */
void tether__live_arm(tether_conn *c)
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
                l->frame_mark != UINT64_MAX ? l->frame_start : tether__loop_time(c->h.loop);
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
        tether__tnode_stop(c->h.loop, &l->timer);
        return;
    }
    uint64_t now = tether__loop_time(c->h.loop);
    tether__tnode_start(c->h.loop, &l->timer, next > now ? next - now : 1);
}

void tether__live_start(tether_conn *c)
{
    struct tether__live *l = c->live;
    uint64_t now = tether__loop_time(c->h.loop);
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
    tether__live_arm(c);
}

/* The checks themselves; the caller re-arms the timer. */
static void live_check(tether_conn *c)
{
    struct tether__live *l = c->live;
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t now = tether__loop_time(c->h.loop);

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
        tether__live_arm(c);
    }
}

int tether__live_new(tether_conn *c)
{
    c->live = calloc(1, sizeof *c->live);
    if (c->live == NULL) {
        return TETHER_ENOMEM;
    }
    tether__tnode_init(&c->live->timer, live_timer_cb);
    c->live->c = c;
    return TETHER_OK;
}
