/* SPDX-License-Identifier: MIT */
/* Connections: the state machine and the public connection API.
 *
 * State machine: CONNECTING -> HANDSHAKING -> READY -> CLOSING -> LINGER ->
 * DEAD. This file moves a connection between the states and ties together
 * the parts in the other files: options (conn_opts.c), the output queue and
 * the write path (wqueue.c), the read path (conn_read.c) and liveness
 * (liveness.c), its memory (conn_mem.c), the dial (conn_dial.c), its
 * handshakes and deadline (conn_handshake.c), the wording of its failures
 * (conn_fail.c); what the application reads about a connection is in
 * conn_info.c; conn_core.h declares what they share.
 *
 * Those files are the only ones that call the application's callbacks, and
 * only from loop dispatch (I/O events, deferred work, pre-poll flushes),
 * never from inside an API call: an API call that has something to report
 * queues it on the connection's pending node. Memory is freed only from
 * deferred work, or at the end of the connection's own I/O dispatch once
 * on_close (its last callback) has returned (a peer's close with nothing
 * else due, conn_read.c), so it is always safe to close or abort a
 * connection inside its callbacks. */
#include "ack.h"
#include "conn_core.h"
#include "delivery.h"
#include "dial.h"
#include "tls.h"
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- small helpers ----------------------------------------------------- */

/* Every accepted connection is one of these (TCP: nothing else; TLS: with
 * its transport running on into the block's tail), for as long as it
 * lives: tens of thousands idle in one process (issue #12,
 * tests/bench/README.md). What only some connections need, or need only
 * for a while, goes into struct tether__conn_extra instead. */
static_assert(sizeof(struct tether_conn) <= 232, "keep the connection small");
static_assert(offsetof(struct tether_conn, tcp) + sizeof(struct tether_transport) ==
                  sizeof(struct tether_conn),
              "the transport is last: a TLS one runs on into the tail");
/* c->reason holds a TETHER_E* code in a byte (error.c's table ends at
 * TETHER_ECERTREQUIRED). */
static_assert(TETHER_ECERTREQUIRED >= INT8_MIN, "error codes fit c->reason");

/* A dialled connection is established: on_connect, once, then the close
 * the application asked for before it (kept until now). */
static inline __attribute__((always_inline)) void conn_report_connected(tether_conn *c)
{
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

static void conn_pending_cb(struct tether__pending *p);
static void conn_on_io(struct tether__io *io, unsigned revents);
static void conn_close_obj(void *obj);

tether_conn *tether__conn_alloc(tether_loop *loop, struct tether__conn_cfg *cfg, uint8_t state)
{
    /* (The loop's budget, created by its first connection.) */
    struct tether__mem *m = loop->mem != NULL ? loop->mem : tether__mem_get(loop);
    if (m == NULL) {
        return NULL;
    }
    tether_conn *c = cfg->tls == NULL ? tether__conn_block_new(m)
                                      : tether__conn_block_new_tail(tether__conn_tail(cfg));
    if (c == NULL) {
        return NULL;
    }
    c->h.loop = loop; /* for the calls below; registered at the end */
    c->cfg = cfg;
    cfg->refs++;
    c->userdata = cfg->o.userdata;
    c->state = state;
    c->rx_tag = cfg->o.calls ? TETHER__RX_PROBE : 0; /* notices a plain peer (call.c) */
    if (cfg->live && !cfg->live_lazy) {
        if (tether__live_new(c) != TETHER_OK) {
            size_t tail = tether__conn_tail(cfg);
            tether__conn_cfg_unref(cfg);
            tether__conn_block_drop(m, c, tail);
            return NULL;
        }
    }
    m->conns++;
    if (loop->segs == NULL) {
        loop->segs = tether__seg_cache_get(loop); /* NULL (no caching) if out of memory */
    }
    /* tether__io_init(), tether__pending_init() and tether__flush_init()
     * of the zeroed block: what is not 0. */
    c->io.fd = -1;
    c->io.cb = conn_on_io;
    c->pend.cb = conn_pending_cb;
    c->flush.cb = tether__conn_flush_cb;
    /* Active, and so keeping the loop running unless unref'd, until freed
     * (after on_close and any lingering close). */
    tether__handle_init(&c->h, loop, TETHER_HANDLE_CONN, c, conn_close_obj);
    tether__handle_start(&c->h);
    return c;
}

/* ---- closing ----------------------------------------------------------- */

/* conn_finish() of a connection not yet reported closed (neither DEAD
 * nor LINGER); inline in tether__conn_fail_const(), the peer's EOF. */
static inline __attribute__((always_inline)) void conn_finish_open(tether_conn *c, int reason,
                                                                   bool report)
{
    if (c->hooks & TETHER__CH_LIVE) {
        tether__tnode_stop(c->h.loop, &c->ex->live->timer);
    }
    if (c->state == TETHER__CS_CONNECTING) {
        tether__dial_cancel(c);
    }
    c->state = TETHER__CS_DEAD;
    c->reason = reason;
    tether__conn_timer_stop(c);
    /* The socket stays open, unwatched, until the handle is freed after
     * on_close, so that tether_conn_peer() still works in on_close. */
    tether__io_stop(c->h.loop, &c->io);
    tether__conn_rpart_free(c);
    if (report) {
        tether__conn_todo(c, TETHER__CT_CLOSE);
    } /* (else the caller reports the close at once) */
}

/* The detail becomes a constant string, and a formatted one held before
 * is freed. */
static inline void conn_set_err_const(tether_conn *c, const char *detail)
{
    if (c->err_owned) {
        free((char *)c->err);
        c->err_owned = false;
    }
    c->err = detail;
}

/* Moves the connection to DEAD with a reason and queues the report. */
static void conn_finish(tether_conn *c, int reason)
{
    if (c->state == TETHER__CS_LINGER) {
        /* Already reported closed; only the fd remains. */
        if (c->hooks & TETHER__CH_LIVE) {
            tether__tnode_stop(c->h.loop, &c->ex->live->timer);
        }
        c->state = TETHER__CS_DEAD;
        tether__linger_remove(c);
        tether__conn_timer_stop(c);
        tether__conn_destroy_transport(c);
        tether__conn_todo(c, TETHER__CT_FREE);
    } else if (c->state != TETHER__CS_DEAD) {
        conn_finish_open(c, reason, true);
    }
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
    if (c->state == TETHER__CS_CLOSING && (c->flags & TETHER__CF_KEEP_REASON) &&
        c->reason != TETHER_OK) {
        /* A liveness close (liveness.c) already named the cause; a reset
         * or a failed write while the peer is being closed follows from
         * it (a peer that stopped reading, then gave up). */
        conn_finish(c, c->reason);
        return;
    }
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        tether__conn_vset_err(c, fmt, ap);
        va_end(ap);
    }
    conn_finish(c, reason);
}

void tether__conn_fail_const(tether_conn *c, int reason, const char *detail)
{
    if (c->state == TETHER__CS_DEAD || c->state == TETHER__CS_LINGER ||
        (c->state == TETHER__CS_CLOSING && (c->flags & TETHER__CF_KEEP_REASON) &&
         c->reason != TETHER_OK)) {
        tether__conn_fail(c, reason, NULL); /* keeps what is recorded */
        return;
    }
    conn_set_err_const(c, detail);
    conn_finish_open(c, reason, true);
}

/* ---- I/O interest ---------------------------------------------------- */

static inline void conn_watch(tether_conn *c, unsigned ev)
{
    int rv = tether__io_set(c->h.loop, &c->io, ev);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "cannot watch the socket: %s", tether_strerror(rv));
    }
}

void tether__conn_update_io(tether_conn *c)
{
    if (c->tr == NULL || c->state == TETHER__CS_DEAD) {
        return;
    }
    unsigned ev = 0;
    switch (c->state) {
    case TETHER__CS_HANDSHAKING:
        if (tether__pp_conn_pending(c, &ev)) {
            break; /* the PROXY protocol header comes first */
        }
        ev = c->tr->ops->want_events(c->tr);
        if (ev == 0) {
            ev = TETHER_EV_READ;
        }
        break;
    case TETHER__CS_READY:
        ev = tether__conn_ready_events(c) | c->tr->ops->want_events(c->tr);
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
    conn_watch(c, ev);
}

/* ---- state transitions ------------------------------------------------- */

/* Our FIN is out, the peer's still to come: report the close now and
 * drain the peer's remaining input in the background, so that closing
 * with unread input does not turn into a reset that destroys data the
 * peer has not read yet. */
static inline void conn_start_linger(tether_conn *c)
{
    /* (The close deadline ends: the loop's linger timer takes over once
     * on_close has run, conn_linger.c.) */
    tether__conn_timer_stop(c);
    c->state = TETHER__CS_LINGER;
    tether__conn_rpart_free(c);
    /* (tether__conn_update_io() for LINGER, without its dispatch on the
     * state: reading only, which a plain socket is mostly set to already) */
    if (!c->io.registered || c->io.events != TETHER_EV_READ) {
        int rv = tether__io_set(c->h.loop, &c->io, TETHER_EV_READ);
        if (rv != TETHER_OK) {
            tether__conn_fail(c, rv, "cannot watch the socket: %s", tether_strerror(rv));
        }
    }
    tether__conn_todo(c, TETHER__CT_CLOSE);
}

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
    if ((reason == TETHER_EOF && c->drain_st == 0) || (c->flags & TETHER__CF_EOF)) {
        /* Peer closed first and we have flushed our replies: nothing left
         * to wait for. (After a drain its FIN is still to come: linger.) */
        conn_finish(c, (c->flags & TETHER__CF_KEEP_REASON) ? reason : TETHER_EOF);
        return;
    }
    /* A liveness close (liveness.c) keeps its reason. */
    if (!(c->flags & TETHER__CF_KEEP_REASON)) {
        c->reason = TETHER_OK;
    }
    conn_start_linger(c);
}

void tether__conn_begin_close(tether_conn *c)
{
    if (c->tr == &c->tcp && c->tcp.ops->plain && c->wq_head == NULL &&
        !(c->flags & (TETHER__CF_EOF | TETHER__CF_KEEP_REASON)) && !(c->hooks & TETHER__CH_LIVE) &&
        c->reason != TETHER_EOF) {
        /* What follows for a plain socket with nothing queued, no
         * liveness timer to stop, no reason to keep and the peer's FIN
         * still to come, in one step: the FIN at once (a failing one, the
         * peer already gone, changes nothing), then lingering. */
        (void)tether__plain_shutdown(&c->tcp);
        c->reason = TETHER_OK;
        conn_start_linger(c);
        return;
    }
    c->state = TETHER__CS_CLOSING;
    if (c->hooks & TETHER__CH_LIVE) {
        /* The close timeout bounds this phase. */
        tether__tnode_stop(c->h.loop, &c->ex->live->timer);
    }
    if (c->wq_head == NULL) {
        tether__conn_begin_shutdown(c);
    } else {
        c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
        tether__conn_flush(c);
    }
    /* The close timeout bounds this phase, if it did not end at once: a
     * plain close of an idle connection allocates no deadline. */
    int ms = c->cfg->o.close_timeout_ms;
    if (c->state == TETHER__CS_CLOSING && ms >= 0 && !tether__conn_timer_start(c, (uint64_t)ms)) {
        tether__conn_fail_const(c, TETHER_ENOMEM, "out of memory for the close deadline");
    }
}

static inline __attribute__((always_inline)) void conn_became_ready(tether_conn *c)
{
    tether__conn_mark_ready(c);
    if (c->flags & TETHER__CF_DIALED) {
        tether__conn_todo(c, TETHER__CT_CONNECTED);
    }
    if (c->flags & TETHER__CF_ACCEPTED && !(c->flags & TETHER__CF_ACCEPT_DONE)) {
        tether__conn_report_accept(c);
    }
    if (c->state != TETHER__CS_READY) {
        return;
    }
    bool plain = c->tr->ops->plain;
    if (plain) {
        /* (tether__conn_update_io() without the transport's own events,
         * which a plain socket never has) */
        conn_watch(c, tether__conn_ready_events(c));
    } else {
        tether__conn_update_io(c);
    }
    if (c->wq_head != NULL) {
        tether__conn_todo(c, TETHER__CT_FLUSH);
    }
    if (!plain && c->tr->ops->has_pending(c->tr)) {
        /* TLS read data along with the end of the handshake. */
        tether__conn_todo(c, TETHER__CT_PARSE);
    }
}

void tether__conn_became_ready(tether_conn *c)
{
    conn_became_ready(c);
}

int tether__conn_attach(tether_conn *c, int fd, bool is_unix, const char *host, bool server,
                        struct tether__io *handoff)
{
    int rv;
    if (c->cfg->tls != NULL) {
        /* (In place: the block has room for it, tether__conn_alloc.) */
        rv = tether__tls_transport_init(&c->tcp, c->h.loop, c->cfg->tls, fd, host, server);
        if (rv == TETHER_OK) {
            c->tr = &c->tcp;
        }
        if (rv == TETHER_OK && server && c->cfg->pp_accept == 0) {
            /* Accepted connections have no connect deadline: the TLS
             * configuration bounds their handshake. */
            int ms = tether__tls_handshake_timeout_ms(c->cfg->tls);
            if (ms >= 0 && !tether__conn_timer_start(c, (uint64_t)ms)) {
                rv = TETHER_ENOMEM;
            }
        }
    } else {
        tether__tcp_transport_init(&c->tcp, fd, is_unix);
        c->tr = &c->tcp;
        rv = TETHER_OK;
    }
    if (rv == TETHER_OK && c->cfg->ws != NULL) {
        rv = tether__ws_wrap(c, server); /* the HTTP upgrade ends the handshake */
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    tether__io_init(&c->io, fd, conn_on_io);
    if (handoff != NULL) {
        tether__io_take_over(&c->io, handoff);
    }
    /* (With a PROXY header to receive, its deadline comes first and the
     * TLS handshake's is armed once it is in.) */
    if (server ? c->cfg->pp_accept != 0 : c->cfg->o.proxy_protocol != 0) {
        rv = tether__pp_conn_start(c, server);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    c->state = TETHER__CS_HANDSHAKING;
    c->dispatching++;
    if (c->tr->ops->plain && (c->ex == NULL || c->ex->pp == NULL)) {
        /* A plain socket with no PROXY header to exchange (its state would
         * be in c->ex->pp): there is no handshake, it is established. */
        conn_became_ready(c);
    } else {
        tether__conn_handshake_step(c);
    }
    c->dispatching--;
    return TETHER_OK;
}

/* (Inline in conn_pending_cb(), which attaches most dials.) */
static inline __attribute__((always_inline)) void conn_attach_dialed(tether_conn *c, bool is_unix)
{
    int fd = c->io.fd;
    tether__tcp_transport_init(&c->tcp, fd, is_unix);
    c->tr = &c->tcp;
    tether__io_init(&c->io, fd, conn_on_io);
    c->dispatching++;
    conn_became_ready(c);
    c->dispatching--;
}

void tether__conn_attach_dialed(tether_conn *c, bool is_unix)
{
    conn_attach_dialed(c, is_unix);
}

/* ---- loop callbacks ---------------------------------------------------- */

static inline void conn_report_close(tether_conn *c);

/* The read found the end (the peer's FIN, a reset, a failed read): when
 * the report of the close is all that is due and the loop has no other
 * deferred work, which would have run first, reports it and frees the
 * connection now, as conn_pending_cb() would at the start of the next
 * iteration. (This dispatch was the connection's own, and on_close is its
 * last callback: nothing refers to it after this. The peer's FIN ends
 * every connection of the hs benchmark.) */
void tether__conn_end_in_dispatch(tether_conn *c)
{
    if (c->todo != TETHER__CT_CLOSE ||
        (c->pend.next != NULL && !tether__pending_take_sole(c->h.loop, &c->pend))) {
        return; /* (not queued: conn_read.c's EOF kept it off the list) */
    }
    c->todo = 0;
    conn_report_close(c);
    if (c->todo & TETHER__CT_FREE) {
        tether__conn_free(c);
    }
}

void tether__conn_end_eof(tether_conn *c)
{
    c->dispatching--; /* (the dispatch ends here, as before end_in_dispatch) */
    c->flags |= TETHER__CF_EOF;
    /* tether__conn_fail_const() of an established connection, with the
     * close reported here rather than queued, as
     * tether__conn_end_in_dispatch() would report it. */
    conn_set_err_const(c, "connection closed by peer");
    conn_finish_open(c, TETHER_EOF, false); /* (c->todo is 0: nothing else is due) */
    conn_report_close(c);
    tether__conn_free(c); /* (DEAD: reported, due to be freed) */
}

static void conn_on_io_general(tether_conn *c, unsigned revents);

/* conn_on_io() of a connection that is not established on a plain
 * socket. */
static inline __attribute__((always_inline)) void conn_on_io_other(tether_conn *c, unsigned revents)
{
    if (c->state == TETHER__CS_LINGER && (c->flags & TETHER__CF_CLOSE_DONE) &&
        c->pend.next == NULL) {
        tether__conn_on_io_linger(c); /* (the common end after our close) */
    } else {
        conn_on_io_general(c, revents);
    }
}

static void conn_on_io(struct tether__io *io, unsigned revents)
{
    tether_conn *c = tether__container_of(io, tether_conn, io);
    if (TETHER__LIKELY(c->state == TETHER__CS_READY && c->tr->ops->plain)) {
        /* Established on a plain socket: the general case without the
         * transport's own readiness and buffered input, which a plain
         * socket never has. */
        tether__conn_on_io_plain(c, revents);
    } else {
        conn_on_io_other(c, revents);
    }
}

void tether__conn_on_io_other(tether_conn *c, unsigned revents)
{
    conn_on_io_other(c, revents);
}

/* Out of line: conn_on_io() stays a test and a jump. */
__attribute__((noinline)) static void conn_on_io_general(tether_conn *c, unsigned revents)
{
    c->dispatching++;
    switch (c->state) {
    case TETHER__CS_HANDSHAKING:
        tether__conn_handshake_step(c);
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
            while (c->state == TETHER__CS_READY && c->tr != NULL && tether__conn_can_read(c) &&
                   c->tr->ops->has_pending(c->tr)) {
                size_t before = tether__conn_rlen(c);
                tether__conn_read(c);
                if (tether__conn_rlen(c) == before && c->tr != NULL &&
                    c->tr->ops->has_pending(c->tr)) {
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
        /* The peer's FIN (or a reset) ends the linger, here with on_close
         * or other deferred work still due (reported closed with nothing
         * due, the connection went to tether__conn_on_io_linger(), which
         * frees it at once). */
        if (!tether__conn_linger_read(c)) {
            break;
        }
        c->todo |= TETHER__CT_HELD;
        conn_finish(c, TETHER_OK);
        c->todo &= (uint8_t)~TETHER__CT_HELD;
        if (c->todo != 0) {
            tether__pending_queue(c->h.loop, &c->pend);
        }
        break;
    default:
        break;
    }
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        tether__conn_dispatch_end(c);
    }
}

/* CT_CLOSE: tells the application (on_close) that the connection ended,
 * once. A dead connection is then due to be freed (CT_FREE). */
static inline __attribute__((always_inline)) void conn_report_close(tether_conn *c)
{
    if (!(c->flags & TETHER__CF_CLOSE_DONE)) {
        c->flags |= TETHER__CF_CLOSE_DONE;
        /* Gone for the application: no longer walked, even while the
         * socket lingers. */
        c->h.hidden = true;
        int reason = c->reason; /* (TETHER_OK once lingering, but for a liveness close) */
        if (reason != TETHER_OK && reason != TETHER_ECANCELED && tether__log_on(TETHER_LOG_DEBUG)) {
            const char *d = tether_conn_last_error(c);
            tether__log(TETHER_LOG_DEBUG, "%s connection ended (%s): %s",
                        tether__conn_url(c) != NULL ? "dialled" : "accepted",
                        tether_err_name(reason), d[0] != '\0' ? d : tether_strerror(reason));
        }
        /* Whatever is still queued will never be sent: release zero-copy
         * buffers before telling the application the connection is gone. */
        if (c->state == TETHER__CS_DEAD) {
            tether__conn_release_queue(c);
        }
        if (tether__conn_dl(c) != NULL) {
            tether__dl_conn_gone(c); /* completions and calls fail first */
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
        if (tether__conn_ref_idx(c) != 0) {
            tether__conn_ref_gone(c); /* references fail from now on, even while it lingers */
        }
        if (c->state == TETHER__CS_DEAD) {
            c->todo |= TETHER__CT_FREE;
        } else if (c->state == TETHER__CS_LINGER) {
            tether__linger_add(c); /* (nothing reads its stats any more) */
        }
    }
}

static void conn_pending_cb(struct tether__pending *p)
{
    tether_conn *c = tether__container_of(p, tether_conn, pend);
    if (c->todo == TETHER__CT_CLOSE && c->state == TETHER__CS_LINGER && c->ex == NULL &&
        c->reason == TETHER_OK &&
        (c->flags & (TETHER__CF_DIALED | TETHER__CF_CONNECT_DONE | TETHER__CF_CLOSE_DONE)) ==
            (TETHER__CF_DIALED | TETHER__CF_CONNECT_DONE)) {
        /* conn_report_close() of the commonest end of a dialled connection:
         * our close, lingering, with nothing in c->ex (no deliveries or
         * references to fail) and nothing to log. */
        c->todo = 0;
        c->flags |= TETHER__CF_CLOSE_DONE;
        c->h.hidden = true;
        if (c->cfg->o.on_close != NULL) {
            c->cfg->o.on_close(c, TETHER_OK, c->userdata);
        }
        if (TETHER__UNLIKELY(tether__conn_ref_idx(c) != 0)) {
            tether__conn_ref_gone(c); /* (one made inside on_close) */
        }
        tether__linger_add(c); /* (still LINGER: nothing on_close may call ends that) */
        return;
    }
    if (c->todo == TETHER__CT_CLOSE &&
        (c->state == TETHER__CS_DEAD || c->state == TETHER__CS_LINGER)) {
        /* The common ends (the peer closed, or an error; our close, then
         * lingering): with none of the steps below due, report the close
         * and free the connection, or leave it lingering. */
        c->todo = 0;
        conn_report_close(c); /* (DEAD: it released the queue) */
        if (c->todo & TETHER__CT_FREE) {
            tether__conn_free(c);
        }
        return;
    }
    if (c->todo == TETHER__CT_DIALED && c->state == TETHER__CS_CONNECTING && c->cfg->ws == NULL &&
        c->cfg->o.proxy_protocol == 0) {
        /* The usual dial (dial_direct.c): a plain socket established inside
         * tether_conn_dial(), nothing else due. It is attached here, with
         * conn_attach_dialed() and conn_became_ready() for a plain dialled
         * socket inline, less what this pass does itself: it reports the
         * connection below, and what was sent before it, queued, goes out
         * at its dispatch end. A failure ends the connection (CT_CLOSE,
         * below). */
        c->todo = TETHER__CT_HELD;
        tether__tcp_transport_init(&c->tcp, c->io.fd, false);
        c->tr = &c->tcp;
        /* (tether__io_init() of a watcher never registered, whose fd is
         * set: the callback.) */
        c->io.cb = conn_on_io;
        c->dispatching++;
        tether__conn_mark_ready(c);
        if (c->state == TETHER__CS_READY) {
            /* (conn_watch() of a socket never registered: tether__io_add()) */
            int rv = tether__io_add(c->h.loop, &c->io, tether__conn_ready_events(c));
            if (rv != TETHER_OK) {
                tether__conn_fail(c, rv, "cannot watch the socket: %s", tether_strerror(rv));
            }
        }
        c->dispatching--;
        c->todo &= (uint8_t)~TETHER__CT_HELD;
        if (c->state == TETHER__CS_READY) {
            conn_report_connected(c);
        }
        if (TETHER__LIKELY(c->todo == 0 && c->state == TETHER__CS_READY)) {
            /* (Nothing else due: the end of this pass, from the dispatch
             * end on.) */
            c->dispatching++;
            tether__conn_dispatch_end_fast(c);
            c->dispatching--;
            goto after_dispatch;
        }
    } else if (c->todo & TETHER__CT_DIALED) {
        c->todo &= (uint16_t)~TETHER__CT_DIALED;
        if (c->state == TETHER__CS_CONNECTING) {
            /* What the attach adds (CT_CONNECTED; on a failure CT_CLOSE)
             * is handled below, in this call: no second pass. */
            c->todo |= TETHER__CT_HELD;
            tether__dial_connected(c);
            c->todo &= (uint8_t)~TETHER__CT_HELD;
        }
    }
    if (c->todo & TETHER__CT_CONNECTED) {
        c->todo &= (uint16_t)~TETHER__CT_CONNECTED;
        if (c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_CONNECT_DONE)) {
            conn_report_connected(c);
        }
    }
    if (c->todo & TETHER__CT_PARSE) {
        c->todo &= (uint16_t)~TETHER__CT_PARSE;
        if (tether__conn_rlen(c) > 0 && tether__conn_can_deliver(c)) {
            c->dispatching++;
            tether__conn_parse_rpart(c);
            c->dispatching--;
        }
        if (tether__conn_can_read(c) && c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
            /* Input held inside the transport (TLS) that epoll will not
             * report; more than one read's worth continues next time. */
            c->dispatching++;
            tether__conn_read(c);
            c->dispatching--;
            if (tether__conn_can_read(c) && c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
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
        tether__conn_dispatch_end_fast(c);
        c->dispatching--;
    }
after_dispatch:
    if (c->todo & TETHER__CT_CLOSE) {
        c->todo &= (uint16_t)~TETHER__CT_CLOSE;
        conn_report_close(c);
    }
    if ((c->todo & TETHER__CT_FREE) && c->state == TETHER__CS_DEAD) {
        tether__conn_release_queue(c);
        tether__conn_free(c);
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

/* tether_loop_close_all(): what the application has is closed as it
 * would close it; an accepted connection still in its handshake, which
 * the application has not seen, is dropped; a hidden one (a reconnecting
 * client's, or one already reported closed) is left to its owner. */
static void conn_close_obj(void *obj)
{
    tether_conn *c = obj;
    if ((c->flags & TETHER__CF_ACCEPTED) && !(c->flags & TETHER__CF_ACCEPT_DONE)) {
        tether_conn_abort(c);
    } else if (!c->h.hidden) {
        tether_conn_close(c);
    }
}

void tether_conn_unref(tether_conn *c)
{
    if (c != NULL) {
        tether__handle_unref(&c->h);
    }
}

void tether_conn_ref(tether_conn *c)
{
    if (c != NULL) {
        tether__handle_ref(&c->h);
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
    if (c->cfg->live) {
        tether__live_resume(c);
    }
    if (tether__conn_rlen(c) > 0 || (c->tr != NULL && c->tr->ops->has_pending(c->tr))) {
        /* Frames held back while paused (here or inside TLS): deliver them
         * from the loop, not from inside this call. */
        tether__conn_todo(c, TETHER__CT_PARSE);
    } else {
        tether__conn_update_io(c);
    }
}
