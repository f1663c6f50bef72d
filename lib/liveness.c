/* SPDX-License-Identifier: MIT */
/* Liveness of a connection: heartbeats (negotiated by HELLO; PING and
 * PONG measure the round-trip time; the frames themselves are ctrl.c's)
 * and the checks that end a connection whose peer
 * went silent, is too slow or stopped reading (idle, frame and write
 * timeouts with their minimum rates, heartbeats) or that reached its
 * maximum age. Those closes are clean: GOAWAY where both sides speak
 * control frames, then the transport's shutdown (TLS close_notify).
 *
 * The hot paths only store timestamps in struct tether__live; one coarse
 * timer per connection compares them with the limits. Connections without
 * a liveness option have no struct tether__live at all. */
#include "ack.h"
#include "conn_core.h"
#include "delivery.h"
#include "random.h"
#include "ws.h"

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_acked (glibc's lacks it) */
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* How long queued output waits before the write check takes its first
 * measurement of what the peer has received (at most; a quarter of
 * write_timeout_ms when that is shorter). Connections whose queue drains
 * sooner never pay for the measurement. */
#define WRITE_SAMPLE_DELAY_MS 1000u

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline void live_due(tether_conn *c, uint64_t at);

uint32_t tether__hb_negotiate(const tether_conn_opts *o, uint32_t peer_ms)
{
    /* The slower side decides, so nobody pings more often than its peer
     * asked for; but a peer cannot switch our detection off: its value
     * counts up to twice our own interval (and TETHER__HB_PEER_MAX_MS),
     * and never beyond half our idle timeout (which conn_opts.c keeps at
     * twice our own interval or more), so that our pings keep a quiet peer
     * from being idled out. live_hb_deadline() keeps the detection time
     * our own. */
    uint32_t own = (uint32_t)o->heartbeat_ms;
    uint64_t cap = TETHER__MIN(2u * (uint64_t)own, (uint64_t)TETHER__HB_PEER_MAX_MS);
    uint32_t hb = (uint32_t)TETHER__MAX((uint64_t)own, TETHER__MIN((uint64_t)peer_ms, cap));
    if (o->idle_timeout_ms > 0) {
        hb = TETHER__MIN(hb, (uint32_t)o->idle_timeout_ms / 2);
    }
    return TETHER__MAX(hb, own);
}

/* When the peer stretched the interval beyond ours, silence for this long
 * still closes: our own detection time, (misses + 1) x heartbeat_ms, as
 * long as it leaves a live peer one interval plus ours to answer a ping.
 * 0 when the interval is our own (the miss count decides). */
static uint64_t live_hb_deadline(const tether_conn *c)
{
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t own = (uint64_t)o->heartbeat_ms;
    if (tether__conn_hb_ms(c) <= own) {
        return 0;
    }
    return TETHER__MAX(own * (uint64_t)(o->heartbeat_misses + 1),
                       (uint64_t)tether__conn_hb_ms(c) + own);
}

static void ctrl_send_ping(tether_conn *c)
{
    uint8_t p[8];
    uint64_t t = mono_us();
    tether__put_be32(p, (uint32_t)(t >> 32));
    tether__put_be32(p + 4, (uint32_t)t);
    if (tether__ctrl_queue(c, TETHER__CTRL_PING, p, sizeof p) != TETHER_OK) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a heartbeat");
        return;
    }
    c->ex->live->pings_sent++;
    c->ex->live->last_ping = tether__loop_time(c->h.loop);
    tether__conn_after_queue(c);
}

void tether__live_on_hello(tether_conn *c, uint32_t peer_ms)
{
    if (c->cfg->o.heartbeat_ms > 0 && (c->hooks & TETHER__CH_LIVE)) {
        c->ex->live->hb_ms = tether__hb_negotiate(&c->cfg->o, peer_ms);
        c->ex->live->unanswered = 0;
        ctrl_send_ping(c); /* a first round-trip time, right away */
        live_due(c, tether__loop_time(c->h.loop) + c->ex->live->hb_ms);
    } else {
        tether__conn_after_queue(c);
    }
}

void tether__live_on_pong(tether_conn *c, const uint8_t *p, size_t n)
{
    if (c->cfg->o.heartbeat_ms <= 0) {
        return; /* no ping of ours: counts nothing (and the live state may be lazy) */
    }
    c->ex->live->pongs_in++;
    if (n == 8) {
        uint64_t sent = ((uint64_t)tether__get_be32(p) << 32) | tether__get_be32(p + 4);
        uint64_t now = mono_us();
        if (sent <= now) {
            c->ex->live->rtt_us = (int64_t)(now - sent);
        }
    }
}

/* Ends the connection cleanly for a liveness reason: GOAWAY (when both
 * sides speak control frames) with the code and the peer's text, then the
 * usual close (flush, TLS close_notify, FIN), bounded by close_timeout_ms.
 * on_close keeps `reason` and the local detail, even when the close
 * timeout cuts the attempt short (a peer that stopped reading takes
 * neither the GOAWAY nor the close_notify). */
__attribute__((format(printf, 5, 6))) static void
live_close(tether_conn *c, int reason, uint16_t code, const char *peer_text, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char detail[TETHER_ERROR_MSG_MAX];
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    tether__conn_set_err(c, "%s", detail);
    if (tether__ctrl_negotiated(c)) {
        /* Flags 0: closing now. Out of memory only loses the reason, not
         * the clean close. */
        (void)tether__ctrl_queue_goaway(c, 0, code, peer_text);
    }
    if (tether__conn_ws(c) != NULL) {
        tether__ws_close_reason(c, code, peer_text); /* its close frame's code */
    }
    c->flags |= TETHER__CF_CLOSE_REQ | TETHER__CF_KEEP_REASON;
    c->reason = reason;
    tether__conn_begin_close(c);
    int wt = c->cfg->o.write_timeout_ms;
    if (code == TETHER__GOAWAY_WRITE && c->state == TETHER__CS_CLOSING &&
        (c->cfg->o.close_timeout_ms < 0 || wt < c->cfg->o.close_timeout_ms)) {
        /* The peer has just shown it reads nothing for a whole window: a
         * longer wait for it to take the close only holds its memory. */
        if (!tether__conn_timer_start(c, (uint64_t)wt)) {
            tether__conn_fail_const(c, TETHER_ENOMEM, "out of memory for the close deadline");
        }
    }
}

/* Makes sure the liveness timer fires no later than `at` (loop ms). Cheap
 * when it already does, which is the common case on busy connections. */
__attribute__((noinline)) static void live_due_arm(tether_conn *c, uint64_t at)
{
    uint64_t now = tether__loop_time(c->h.loop);
    tether__tnode_start(c->h.loop, &c->ex->live->timer, at > now ? at - now : 0);
}

static inline void live_due(tether_conn *c, uint64_t at)
{
    const struct tether__tnode *t = &c->ex->live->timer;
    if (TETHER__LIKELY(tether__tnode_active(t) && t->deadline <= at)) {
        return; /* once per message on a busy connection: inline */
    }
    live_due_arm(c, at);
}

static uint64_t write_sample_delay(const tether_conn_opts *o)
{
    return TETHER__MIN((uint64_t)WRITE_SAMPLE_DELAY_MS, (uint64_t)o->write_timeout_ms / 4 + 1);
}

/* How many bytes the peer has received: on TCP the bytes it acknowledged
 * (TCP_INFO), which a kernel send buffer still growing by autotuning
 * cannot fake; elsewhere what we handed to the socket. Monotonic per
 * connection. One system call: only the write check uses it. */
static uint64_t live_delivered(const tether_conn *c)
{
    if (c->tr != NULL && c->tr->fd >= 0) {
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(c->tr->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
            len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked) {
            return ti.tcpi_bytes_acked;
        }
    }
    return c->bytes_out;
}

/* c->ex->live, allocated now when the configuration is lazy and it is not
 * there yet (the queue started, or a frame is incomplete). NULL, with the
 * connection failed, when out of memory: a timeout the application asked
 * for is never skipped silently. */
static void live_queue_mark(tether_conn *c, struct tether__live *l);

static struct tether__live *live_get(tether_conn *c)
{
    if (TETHER__LIKELY(c->hooks & TETHER__CH_LIVE)) {
        return c->ex->live;
    }
    if (tether__live_new(c) != TETHER_OK) {
        tether__conn_fail_const(c, TETHER_ENOMEM, "out of memory for the liveness state");
        return NULL;
    }
    struct tether__live *l = c->ex->live;
    l->frame_mark = UINT64_MAX;
    if (c->flags & TETHER__CF_QSTART_DUE) {
        /* (A frame started before the flush: the queue counts too.) */
        c->flags &= (uint16_t)~TETHER__CF_QSTART_DUE;
        if (c->wq_head != NULL) {
            live_queue_mark(c, l);
        }
    }
    return l;
}

void tether__live_queue_started(tether_conn *c)
{
    struct tether__live *l = live_get(c);
    if (l != NULL) {
        live_queue_mark(c, l);
    }
}

void tether__live_qstart_due(tether_conn *c)
{
    c->flags &= (uint16_t)~TETHER__CF_QSTART_DUE;
    if (c->wq_head != NULL) {
        tether__live_queue_started(c);
    }
}

static void live_queue_mark(tether_conn *c, struct tether__live *l)
{
    l->wstall = tether__loop_time(c->h.loop);
    l->wwin_start = l->wstall;
    l->wbase_at = 0;
    if (c->state == TETHER__CS_READY && c->cfg->o.write_timeout_ms > 0) {
        live_due(c, l->wstall + write_sample_delay(&c->cfg->o));
    }
}

/* After a read: notice when an incomplete frame starts, for the frame
 * timeout. The frame counter tells whether rpart still holds the frame seen
 * last time or a new one. */
void tether__live_after_read(tether_conn *c)
{
    struct tether__live *l = tether__conn_live(c);
    int ft = c->cfg->o.frame_timeout_ms;
    if (ft <= 0 || c->state != TETHER__CS_READY) {
        return;
    }
    if (tether__conn_rlen(c) == 0 || (c->flags & TETHER__CF_PAUSED)) {
        if (l != NULL && l->frame_mark != UINT64_MAX) {
            l->frame_mark = UINT64_MAX;
            if (c->cfg->live_lazy && c->queued == 0) {
                tether__live_arm(c); /* the frame is in: frees what watched it */
            }
        }
        return;
    }
    l = live_get(c);
    if (l == NULL) {
        return;
    }
    uint64_t mark = c->msgs_in + c->ctrl_in;
    if (l->frame_mark != mark) {
        l->frame_mark = mark;
        l->frame_start = tether__loop_time(c->h.loop);
        l->frame_bytes = c->bytes_in - tether__conn_rlen(c); /* the frame's first byte */
        live_due(c, l->frame_start + (uint64_t)ft);
    }
}

/* Arms the timer for the earliest check that could fail or ping. */
void tether__live_arm(tether_conn *c)
{
    struct tether__live *l = tether__conn_live(c);
    const tether_conn_opts *o = &c->cfg->o;
    if (l == NULL) {
        return; /* lazy, and nothing pending (see live_get) */
    }
    uint64_t next = UINT64_MAX;
    if (l->age_deadline != 0) {
        next = l->age_deadline;
    }
    if (o->write_timeout_ms > 0 && c->queued > 0) {
        uint64_t wt = (uint64_t)o->write_timeout_ms;
        next = TETHER__MIN(next, l->wstall + wt);
        next = TETHER__MIN(next, l->wbase_at == 0 ? l->wwin_start + write_sample_delay(o)
                                                  : l->wbase_at + wt);
    }
    if (!(c->flags & TETHER__CF_PAUSED)) {
        if (o->idle_timeout_ms > 0) {
            next = TETHER__MIN(next, l->last_rx + (uint64_t)o->idle_timeout_ms);
        }
        if (o->frame_timeout_ms > 0 && tether__conn_rlen(c) > 0) {
            uint64_t start =
                l->frame_mark != UINT64_MAX ? l->frame_start : tether__loop_time(c->h.loop);
            if (o->frame_min_rate > 0 && l->frame_mark != UINT64_MAX) {
                start = TETHER__MIN(start, l->last_rx); /* nothing for a whole window */
            }
            next = TETHER__MIN(next, start + (uint64_t)o->frame_timeout_ms);
        }
        if (l->hb_ms > 0) {
            uint64_t from = l->unanswered == 0 ? l->last_rx : l->last_ping;
            next = TETHER__MIN(next, from + l->hb_ms);
            uint64_t dl = live_hb_deadline(c);
            if (dl > 0) {
                next = TETHER__MIN(next, l->last_rx + dl);
            }
        } else if (o->heartbeat_ms > 0 && (c->flags & TETHER__CF_DIALED) &&
                   !(c->flags & TETHER__CF_PEER_HELLO)) {
            next = TETHER__MIN(next, l->last_rx + (uint64_t)o->heartbeat_ms *
                                                      (uint64_t)(o->heartbeat_misses + 1));
        }
    }
    if (next == UINT64_MAX) {
        tether__tnode_stop(c->h.loop, &l->timer);
        if (c->cfg->live_lazy) {
            /* Nothing to watch: an idle connection keeps no state and no
             * timer, and no cold block for it. (Holders of l re-read
             * tether__conn_live() after anything that may call the
             * application.) */
            free(l);
            c->ex->live = NULL;
            c->hooks &= (uint8_t)~TETHER__CH_LIVE;
            tether__conn_extra_trim(c);
        }
        return;
    }
    uint64_t now = tether__loop_time(c->h.loop);
    tether__tnode_start(c->h.loop, &l->timer, next > now ? next - now : 1);
}

void tether__live_start(tether_conn *c)
{
    struct tether__live *l = tether__conn_live(c);
    uint64_t now = tether__loop_time(c->h.loop);
    l->last_rx = now;
    l->wstall = now;
    l->last_wprog = now;
    l->wwin_start = now;
    l->wbase_at = 0;
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

/* The write check. Queued output must keep reaching the peer: no write
 * progress at all for write_timeout_ms closes the connection, and so does
 * a window of write_timeout_ms in which the peer received less than
 * write_min_rate bytes/s (nothing at all when the rate is 0), measured
 * from what it acknowledged: a kernel send buffer that autotuning keeps
 * growing accepts writes for minutes from a peer that reads nothing. The
 * first window starts once the queue has stayed non-empty for
 * write_sample_delay(). True when the connection is closing. */
static bool live_check_write(tether_conn *c, uint64_t now)
{
    struct tether__live *l = tether__conn_live(c);
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t wt = (uint64_t)o->write_timeout_ms;
    bool sample_due =
        l->wbase_at == 0 ? now - l->wwin_start >= write_sample_delay(o) : now - l->wbase_at >= wt;
    if (now - l->wstall < wt && !sample_due) {
        return false;
    }
    /* Read before the flush, so that an acknowledgement arriving during
     * it counts in the window this sample starts, with the write it
     * allows. */
    uint64_t d = live_delivered(c);
    uint64_t wstall = l->wstall;
    /* Ask the socket once more before blaming the peer (the loop may
     * have been busy elsewhere). */
    tether__conn_flush(c);
    if (c->state != TETHER__CS_READY) {
        return true;
    }
    if (c->queued == 0) {
        return false;
    }
    if (l->wbase_at != 0 && d == l->wbase_val) {
        /* The peer has taken nothing since the window began: what the
         * flush wrote went into room the kernel had left short of
         * reporting the socket writable, not towards the peer. Counted
         * as progress, it would put the no-progress close off by a
         * window at every check. */
        l->wstall = wstall;
    }
    char text[128];
    if (now - l->wstall >= wt) {
        snprintf(text, sizeof text, "write timeout (you read nothing for %llu ms)",
                 (unsigned long long)(now - l->wstall));
        live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_WRITE, text,
                   "write timeout: %zu queued bytes made no progress for %llu ms "
                   "(write_timeout_ms %d); the peer stopped reading",
                   c->queued, (unsigned long long)(now - l->wstall), o->write_timeout_ms);
        return true;
    }
    if (!sample_due) {
        return false;
    }
    if (l->wbase_at == 0) {
        l->wbase_at = now; /* the first window starts */
        l->wbase_val = d;
        return false;
    }
    uint64_t span = now - l->wbase_at;
    uint64_t got = d > l->wbase_val ? d - l->wbase_val : 0;
    bool slow =
        o->write_min_rate == 0 ? got == 0 : got * 1000u < (uint64_t)o->write_min_rate * span;
    if (!slow) {
        l->wbase_at = now; /* fast enough: measure the next window */
        l->wbase_val = d;
        return false;
    }
    snprintf(text, sizeof text, "write timeout (you read %llu bytes in %llu ms)",
             (unsigned long long)got, (unsigned long long)span);
    live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_WRITE, text,
               "write timeout: the peer received %llu bytes in %llu ms, below write_min_rate "
               "%d bytes/s (write_timeout_ms %d; %zu bytes queued); the peer stopped reading",
               (unsigned long long)got, (unsigned long long)span, o->write_min_rate,
               o->write_timeout_ms, c->queued);
    return true;
}

/* The frame check: the incomplete frame has been arriving for a whole
 * window, or (with a minimum rate) nothing of it came for one. With a
 * minimum rate it may go on as long as each window brings enough bytes
 * (mod_reqtimeout's MinRate), so a large message over a slow link is not
 * cut. True when the connection is closing. */
static bool live_check_frame(tether_conn *c, uint64_t now)
{
    struct tether__live *l = tether__conn_live(c);
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t span = now - l->frame_start;
    uint64_t ft = (uint64_t)o->frame_timeout_ms;
    char text[128];
    if (o->frame_min_rate > 0 && now - l->last_rx >= ft) {
        /* Nothing at all for a whole window: not granted a second one. */
        snprintf(text, sizeof text, "frame timeout (nothing of a message for %llu ms)",
                 (unsigned long long)(now - l->last_rx));
        live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_FRAME, text,
                   "frame timeout: nothing of an incomplete frame arrived for %llu ms "
                   "(%zu bytes of it held; frame_timeout_ms %d)",
                   (unsigned long long)(now - l->last_rx), tether__conn_rlen(c),
                   o->frame_timeout_ms);
        return true;
    }
    if (span < ft) {
        return false;
    }
    if (o->frame_min_rate == 0) {
        snprintf(text, sizeof text, "frame timeout (a message still incomplete after %llu ms)",
                 (unsigned long long)span);
        live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_FRAME, text,
                   "frame timeout: a frame was still incomplete after %llu ms "
                   "(%zu bytes of it received; frame_timeout_ms %d)",
                   (unsigned long long)span, tether__conn_rlen(c), o->frame_timeout_ms);
        return true;
    }
    uint64_t got = c->bytes_in - l->frame_bytes;
    if (got * 1000u >= (uint64_t)o->frame_min_rate * span) {
        l->frame_start = now;
        l->frame_bytes = c->bytes_in;
        return false;
    }
    snprintf(text, sizeof text, "frame timeout (a message arrived at %llu bytes in %llu ms)",
             (unsigned long long)got, (unsigned long long)span);
    live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_FRAME, text,
               "frame timeout: an incomplete frame received %llu bytes in %llu ms, below "
               "frame_min_rate %d bytes/s (frame_timeout_ms %d; %zu bytes of it held)",
               (unsigned long long)got, (unsigned long long)span, o->frame_min_rate,
               o->frame_timeout_ms, tether__conn_rlen(c));
    return true;
}

/* The checks themselves; the caller re-arms the timer. */
static void live_check(tether_conn *c)
{
    struct tether__live *l = tether__conn_live(c);
    const tether_conn_opts *o = &c->cfg->o;
    uint64_t now = tether__loop_time(c->h.loop);

    if (l->age_deadline != 0 && now >= l->age_deadline) {
        char text[96];
        snprintf(text, sizeof text, "maximum connection age reached (%llu ms)",
                 (unsigned long long)(now - c->ready_at));
        l->age_deadline = 0;
        if (c->drain_st != 0) {
            return; /* draining already, under its own deadline */
        }
        if (tether__ctrl_negotiated(c)) {
            /* Drain rather than close, so that nothing in flight is lost;
             * close_timeout_ms bounds it (as it bounds the plain close). */
            int dl = o->close_timeout_ms;
            if (tether__drain_start(c, TETHER__GOAWAY_MAX_AGE, text,
                                    dl >= 0 ? dl : TETHER_DRAIN_DEADLINE_DEFAULT) == TETHER_OK) {
                return;
            }
        }
        live_close(c, TETHER_OK, TETHER__GOAWAY_MAX_AGE, text,
                   "maximum connection age reached (%llu ms; max_age_ms %d)",
                   (unsigned long long)(now - c->ready_at), o->max_age_ms);
        return;
    }
    if (o->write_timeout_ms > 0 && c->queued > 0 && live_check_write(c, now)) {
        return;
    }
    if (c->flags & TETHER__CF_PAUSED) {
        return; /* silence is expected while we do not read */
    }
    uint32_t hb = tether__conn_hb_ms(c);
    bool hello_wait = hb == 0 && o->heartbeat_ms > 0 && (c->flags & TETHER__CF_DIALED) &&
                      !(c->flags & TETHER__CF_PEER_HELLO);
    uint64_t hello_limit = (uint64_t)o->heartbeat_ms * (uint64_t)(o->heartbeat_misses + 1);
    bool due = (o->idle_timeout_ms > 0 && now - l->last_rx >= (uint64_t)o->idle_timeout_ms) ||
               (o->frame_timeout_ms > 0 && tether__conn_rlen(c) > 0) ||
               (hb > 0 && now - l->last_rx >= hb) ||
               (hello_wait && now - l->last_rx >= hello_limit);
    if (due) {
        /* Before declaring the peer silent, read what the kernel holds: the
         * loop may have been blocked (or, for the blocking API, not run at
         * all) while the peer was talking. */
        tether__conn_read(c);
        if (c->state != TETHER__CS_READY) {
            return;
        }
        l = tether__conn_live(c); /* the application may have paused and resumed, freeing it */
        if (l == NULL) {
            return;
        }
    }
    if (o->idle_timeout_ms > 0 && now - l->last_rx >= (uint64_t)o->idle_timeout_ms) {
        char text[96];
        snprintf(text, sizeof text, "idle timeout (nothing received for %d ms)",
                 o->idle_timeout_ms);
        live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_IDLE, text,
                   "idle timeout: nothing received for %llu ms (idle_timeout_ms %d)",
                   (unsigned long long)(now - l->last_rx), o->idle_timeout_ms);
        return;
    }
    if (o->frame_timeout_ms > 0 && tether__conn_rlen(c) > 0) {
        if (l->frame_mark == UINT64_MAX) {
            /* A frame left incomplete across a pause: time it from now. */
            l->frame_mark = c->msgs_in + c->ctrl_in;
            l->frame_start = now;
            l->frame_bytes = c->bytes_in;
        } else if (live_check_frame(c, now)) {
            return;
        }
    }
    if (hb > 0) {
        if (l->last_rx >= l->last_ping) {
            l->unanswered = 0; /* anything received answers every ping before it */
        }
        uint64_t dl = live_hb_deadline(c);
        if (dl > 0 && now - l->last_rx >= dl && l->unanswered > 0) {
            char text[96];
            snprintf(text, sizeof text, "heartbeat timeout (%u pings unanswered)", l->unanswered);
            live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_HEARTBEAT, text,
                       "heartbeat timeout: %u pings unanswered, nothing received for %llu ms "
                       "(interval %u ms as the peer asked; heartbeat_ms %d)",
                       l->unanswered, (unsigned long long)(now - l->last_rx), hb, o->heartbeat_ms);
            return;
        }
        if (l->unanswered > 0 && c->queued > 0 && l->last_wprog > l->last_ping) {
            /* Our own output is still draining ahead of the ping: its
             * interval counts from that progress, not from when it was
             * queued. (A dead link stops the progress soon enough.) */
            l->last_ping = l->last_wprog;
        }
        if (l->unanswered >= (uint32_t)o->heartbeat_misses && now - l->last_ping >= hb) {
            char text[96];
            snprintf(text, sizeof text, "heartbeat timeout (%u pings unanswered)", l->unanswered);
            live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_HEARTBEAT, text,
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
        /* (No GOAWAY: the peer never answered, it may not speak control
         * frames at all; the close is still a clean one.) */
        live_close(c, TETHER_ETIMEDOUT, TETHER__GOAWAY_HEARTBEAT, "",
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

void tether__live_resume(tether_conn *c)
{
    struct tether__live *l = tether__conn_live(c);
    if (l == NULL) {
        if (!(tether__conn_rlen(c) > 0 && c->cfg->o.frame_timeout_ms > 0) ||
            (l = live_get(c)) == NULL) {
            return; /* lazy, and nothing pending */
        }
    }
    /* The peer was not heard while we did not listen: start over. */
    l->last_rx = tether__loop_time(c->h.loop);
    l->frame_mark = UINT64_MAX;
    l->unanswered = 0;
    tether__live_arm(c);
}

int tether__live_new(tether_conn *c)
{
    struct tether__conn_extra *ex = tether__conn_extra(c);
    struct tether__live *l = ex != NULL ? tether__zalloc(sizeof *l) : NULL;
    if (l == NULL) {
        tether__conn_extra_trim(c);
        return TETHER_ENOMEM;
    }
    tether__tnode_init(&l->timer, live_timer_cb);
    l->c = c;
    l->rtt_us = -1;
    ex->live = l;
    c->hooks |= TETHER__CH_LIVE;
    return TETHER_OK;
}
