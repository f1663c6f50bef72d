/* SPDX-License-Identifier: MIT */
/* Reconnecting clients: one connection to a URL at a time, redialled with
 * gRPC's connection backoff whenever it fails, and a list of the messages
 * that have not yet been written completely.
 *
 * Messages. The client copies every message into a record and keeps the
 * records in one list, in the order they were sent. A prefix of the list
 * has been handed to the current connection; the rest (from `waiting` on)
 * waits for a connection or for room in its queue. When a record is handed
 * over, it notes the stream offset just past its frame on that connection:
 * every byte the connection was ever given is bytes_out + queued (its
 * control frames included, since they share the queue), so the offset is
 * exact. The connection reports each write (the wnotify hook), and records
 * whose offset the written bytes have passed are freed. When the connection
 * ends, the records it had not written completely go back to waiting, and
 * the next connection sends them again from their first byte: a frame cut
 * in the middle dies with its connection, which the peer reports as
 * truncated and never delivers.
 *
 * Records of 16 KiB and more are handed over without a second copy
 * (tether_conn_send_zc() with no free callback): the record outlives the
 * reference, because it is freed only once the connection has written all
 * of it, or after the connection has released its queue.
 *
 * Schedule. tether__backoff_* (backoff.c) is gRPC's algorithm; an
 * attempt that starts at t with backoff b (jitter applied) connects within
 * max(b, min_connect_timeout) and, if it fails, the next attempt starts at
 * t + b or at once if that has passed. The schedule resets after a connection has
 * stayed up for stable_ms (the timer starts when on_connect reports
 * success, i.e. after the TLS handshake), never on a bare TCP connect. */
#include "reconnect.h"
#include "ack.h"
#include "client_alo.h"
#include "conn.h"
#include "tls.h"
#include "url.h"
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ZC_MIN (16u * 1024u) /* records at least this large are not copied again */

static double (*rand_hook)(void *arg);
static void *rand_hook_arg;

void tether__client_set_random(double (*fn)(void *arg), void *arg);
void tether__client_set_random(double (*fn)(void *arg), void *arg)
{
    rand_hook = fn;
    rand_hook_arg = arg;
}

static double client_random(void)
{
    if (rand_hook != NULL) {
        double r = rand_hook(rand_hook_arg);
        return r < 0 ? 0 : (r >= 1 ? 0.9999999999 : r);
    }
    return tether__random_unit();
}

/* ---- the client -------------------------------------------------------- */

static void client_pending_cb(struct tether__pending *p);
static void client_close_obj(void *obj);
static void client_timer_cb(struct tether__tnode *n);
static void client_finish(tether_client *cl, int reason);

static void client_todo(tether_client *cl, unsigned what)
{
    cl->todo |= what;
    tether__pending_queue(cl->loop, &cl->pend);
}

static void client_timer(tether_client *cl, enum timer_mode mode, uint64_t ms)
{
    cl->tmode = (uint8_t)mode;
    tether__tnode_start(cl->loop, &cl->timer, ms);
}

static void client_timer_stop(tether_client *cl)
{
    cl->tmode = TM_NONE;
    tether__tnode_stop(cl->loop, &cl->timer);
}

static void client_report(tether_client *cl, tether_client_state state, int reason,
                          const char *detail, uint32_t delay_ms)
{
    cl->state = state;
    if (cl->o.on_state == NULL) {
        return;
    }
    tether_client_event ev = {
        .state = state,
        .reason = reason,
        .detail = detail != NULL ? detail : "",
        .delay_ms = delay_ms,
        .attempt = cl->attempt,
    };
    cl->o.on_state(cl, &ev, cl->o.userdata);
}

/* ---- the message list -------------------------------------------------- */

static void msg_pop_head(tether_client *cl)
{
    struct cmsg *m = cl->head;
    cl->head = m->next;
    if (cl->head == NULL) {
        cl->tail = NULL;
    }
    if (cl->waiting == m) {
        cl->waiting = m->next;
    }
    cl->held_bytes -= m->len;
    cl->held_msgs--;
    if (m->done != NULL) {
        tether__cdone_written(cl->dq, m->done);
    }
    tether__cmsg_free(cl, m);
}

static void client_check_drain(tether_client *cl)
{
    if (cl->want_drain && cl->held_bytes <= cl->o.queue_max_bytes / 4 &&
        cl->held_msgs <= cl->o.queue_max_msgs / 4) {
        cl->want_drain = false;
        client_todo(cl, T_DRAIN);
    }
}

/* Frees the records the connection has written completely. */
static void client_prune(tether_client *cl)
{
    if (cl->conn == NULL) {
        return;
    }
    uint64_t written = cl->conn->bytes_out;
    while (cl->head != NULL && cl->head != cl->waiting && cl->head->end <= written) {
        msg_pop_head(cl);
        cl->msgs_out++;
    }
    client_check_drain(cl);
}

static void client_wnotify(tether_conn *c)
{
    tether_client *cl = tether_conn_userdata(c);
    if (cl != NULL && cl->olds != NULL && tether__client_is_old(cl, c)) {
        tether__client_drain_prune(cl, c); /* reconnect_drain.c */
    } else if (cl != NULL) {
        client_prune(cl);
    }
}

size_t tether__client_pop_acked(tether_client *cl, uint64_t seq)
{
    /* msg_pop_head() for a run of records, the counters settled once. */
    struct cmsg *first = cl->head;
    struct cmsg *m = first;
    size_t n = 0;
    size_t bytes = 0;
    while (m != NULL && m != cl->waiting && m->seq <= seq) {
        n++;
        bytes += m->len;
        if (m->done != NULL) {
            tether__cdone_written(cl->dq, m->done);
        }
        m = m->next;
    }
    if (n == 0) {
        return 0;
    }
    cl->head = m;
    if (m == NULL) {
        cl->tail = NULL;
    }
    cl->held_bytes -= bytes;
    cl->held_msgs -= n;
    cl->msgs_out += n;
    tether__cmsg_free_run(cl, first, m);
    client_check_drain(cl);
    return n;
}

/* Hands waiting records to the connection until its queue is full. */
void tether__client_feed(tether_client *cl)
{
    tether_conn *c = cl->conn;
    if (c == NULL || !cl->connected || cl->old_head != NULL) {
        return; /* (the drained connection writes its records first) */
    }
    while (cl->waiting != NULL) {
        struct cmsg *m = cl->waiting;
        int rv;
        if (cl->alo != NULL && !tether__calo_before_send(cl, c, m)) {
            break; /* client_alo.c: feeding resumes once acks are negotiated */
        }
        if (m->len >= ZC_MIN) {
            rv = tether_conn_send_zc(c, m->data, m->len, NULL, NULL);
        } else {
            rv = tether_conn_send(c, m->data, m->len);
        }
        if (rv != TETHER_OK) {
            /* EAGAIN: on_drain continues. ECLOSED: the connection is
             * ending and its on_close settles the records. */
            break;
        }
        m->end = c->bytes_out + c->queued;
        if (cl->alo != NULL) {
            tether__calo_sent(cl, c, m);
        }
        cl->waiting = m->next;
    }
    if (cl->alo == NULL || !tether__calo_acks_on(c)) {
        client_prune(cl); /* (with acks on, records go when acknowledged) */
    }
    if (cl->closing && cl->waiting == NULL && cl->conn != NULL && tether__calo_may_close(cl)) {
        tether_conn_close(cl->conn);
    }
}

/* Hands every held record back to the application. */
static void client_undeliver_all(tether_client *cl, int reason)
{
    struct cmsg *m = cl->head;
    /* Detach first: the callback may send (and is told ECLOSED or
     * ENOTCONN), which must not touch the list being walked. */
    cl->head = cl->tail = cl->waiting = NULL;
    while (m != NULL) {
        struct cmsg *next = m->next;
        cl->held_bytes -= m->len; /* (a drained connection may hold others: reconnect_drain.c) */
        cl->held_msgs--;
        tether__client_undeliver(cl, m, reason);
        m = next;
    }
    client_check_drain(cl);
}

/* ---- attempts ---------------------------------------------------------- */

static void client_on_connect(tether_conn *c, int status, void *ud);
static void client_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud);
static void client_on_drain(tether_conn *c, void *ud);
static void client_on_close(tether_conn *c, int reason, void *ud);

static void client_attempt_failed(tether_client *cl, int reason);

static void client_start_attempt(tether_client *cl)
{
    if (cl->closing || cl->conn != NULL || cl->gave_up) {
        return;
    }
    client_timer_stop(cl);
    cl->attempt++;
    cl->attempts++;
    uint32_t b = tether__backoff_next(&cl->bo, client_random());
    cl->backoff_ms = b;
    cl->attempt_deadline = tether__loop_time(cl->loop) + b;
    client_report(cl, TETHER_CLIENT_CONNECTING, 0, NULL, 0);
    if (cl->closing || cl->conn != NULL || cl->gave_up) {
        return; /* closed (or restarted) from inside the callback */
    }
    uint32_t ct = TETHER__MAX(b, cl->o.min_connect_timeout_ms);
    cl->co.connect_timeout_ms = ct > INT32_MAX ? INT32_MAX : (int)ct;
    tether_error err;
    tether__calo_dial(cl, true); /* HELLO bit 1, or a plain fallback (client_alo.c) */
    int rv = tether_conn_dial(&cl->conn, cl->loop, cl->url, &cl->co, &err);
    tether__calo_dial(cl, false);
    if (rv != TETHER_OK) {
        /* Only resource failures get here (the URL and options were
         * checked by tether_client_new()): count it as a failed attempt. */
        cl->conn = NULL;
        snprintf(cl->err, sizeof cl->err, "%s", err.message);
        client_attempt_failed(cl, rv);
        return;
    }
    if (tether__conn_extra(cl->conn) != NULL) { /* (the observers live in c->ex) */
        tether__conn_set_wnotify(cl->conn, client_wnotify);
        cl->conn->ex->gnotify = tether__client_gnotify;
    } else {
        /* Reported from the loop, as a failed attempt. */
        tether__conn_fail_const(cl->conn, TETHER_ENOMEM, "out of memory");
    }
    tether__calo_conn(cl, cl->conn);
    /* The connection is the client's: not walked or closed by
     * tether_loop_close_all() on its own, and referenced as the client is. */
    cl->conn->h.hidden = true;
    if (cl->h.unref) {
        tether_conn_unref(cl->conn);
    }
    if (cl->paused) {
        /* Before the connection reads anything: not one message of the
         * new connection may slip through. */
        tether_conn_pause(cl->conn);
    }
}

static void client_wait(tether_client *cl, uint32_t delay_ms, int reason)
{
    cl->backoff_ms = delay_ms;
    /* Armed before the report, so that reconnect_now() or close() from
     * inside on_state finds the wait to cancel. */
    client_timer(cl, TM_WAIT, delay_ms);
    client_report(cl, TETHER_CLIENT_WAITING, reason, cl->err, delay_ms);
}

static void client_give_up(tether_client *cl, int reason)
{
    cl->gave_up = true;
    client_timer_stop(cl);
    client_undeliver_all(cl, reason);
    client_report(cl, TETHER_CLIENT_GAVE_UP, reason, cl->err, 0);
}

/* Reports DISCONNECTED and, under fail_fast, hands back what the client
 * holds. False when the application closed or restarted the client from
 * inside those callbacks, and the caller must stop. */
static bool client_report_lost(tether_client *cl, int reason)
{
    cl->last_reason = reason;
    client_report(cl, TETHER_CLIENT_DISCONNECTED, reason, cl->err, 0);
    if (cl->closing || cl->conn != NULL || cl->gave_up || (cl->todo & T_START)) {
        return false;
    }
    if (cl->o.fail_fast) {
        client_undeliver_all(cl, reason);
        if (cl->closing || (cl->todo & T_START)) {
            return false;
        }
    }
    return true;
}

/* An attempt (or a connection that never became stable) failed. */
static void client_attempt_failed(tether_client *cl, int reason)
{
    if (!client_report_lost(cl, reason)) {
        return;
    }
    if (cl->o.max_attempts > 0 && cl->attempt >= cl->o.max_attempts) {
        client_give_up(cl, reason);
        return;
    }
    uint64_t now = tether__loop_time(cl->loop);
    uint32_t delay = 0;
    if (cl->attempt_deadline > now) {
        delay = (uint32_t)TETHER__MIN(cl->attempt_deadline - now, (uint64_t)UINT32_MAX);
    }
    client_wait(cl, delay, reason);
}

/* ---- connection callbacks ---------------------------------------------- */

static void client_on_connect(tether_conn *c, int status, void *ud)
{
    tether_client *cl = ud;
    if (status != TETHER_OK || c != cl->conn) {
        return; /* on_close follows and handles the failure */
    }
    cl->connected = true;
    cl->stable = false;
    cl->connects++;
    if (!cl->closing) {
        client_timer(cl, TM_STABLE, cl->o.stable_ms);
    }
    tether__calo_connected(cl, c);
    client_report(cl, TETHER_CLIENT_CONNECTED, 0, NULL, 0);
    tether__client_feed(cl);
}

static void client_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    tether_client *cl = ud;
    if (cl->o.on_message != NULL && !cl->finished) {
        cl->o.on_message(cl, data, len, cl->o.userdata);
    }
}

static void client_on_drain(tether_conn *c, void *ud)
{
    (void)c;
    tether__client_feed(ud);
}

static void client_on_close(tether_conn *c, int reason, void *ud)
{
    tether_client *cl = ud;
    if (cl->olds != NULL && tether__client_is_old(cl, c)) {
        tether__client_drain_closed(cl, c, reason);
        return;
    }
    if (c != cl->conn) {
        return;
    }
    tether__conn_set_wnotify(c, NULL);
    /* Settle the records this connection had: those it wrote completely are
     * done (they may still be lost in flight; see reconnect.h), the rest go
     * back to waiting and will be sent again from their first byte. The
     * connection has already released its queue, so nothing references
     * their memory any more. */
    client_prune(cl);
    cl->waiting = cl->head;
    tether__client_account(cl, c);
    const char *d = tether_conn_last_error(c);
    if (d[0] != '\0') {
        snprintf(cl->err, sizeof cl->err, "%s", d);
    } else {
        snprintf(cl->err, sizeof cl->err, "%s", tether_strerror(reason));
    }
    cl->conn = NULL;
    bool was_connected = cl->connected;
    bool was_stable = cl->stable;
    cl->connected = false;
    cl->stable = false;
    if (cl->tmode == TM_STABLE || cl->tmode == TM_CLOSE) {
        client_timer_stop(cl);
    }
    if (cl->closing) {
        client_finish(cl, reason == TETHER_OK ? TETHER_ECANCELED : reason);
        return;
    }
    if (tether__calo_closed(cl, c, was_connected, reason)) {
        /* A plain server (client_alo.c): at once, and not counted. */
        cl->attempt--;
        if (client_report_lost(cl, reason)) {
            client_wait(cl, 0, reason);
        }
        return;
    }
    if (!was_connected || (!was_stable && reason != TETHER_OK)) {
        client_attempt_failed(cl, reason);
        return;
    }
    /* A connection that had been up is gone. */
    if (!client_report_lost(cl, reason)) {
        return;
    }
    uint32_t delay = 0;
    if (reason == TETHER_OK) {
        /* Closed gracefully at max_age_ms: a planned rotation, not a
         * failure. Reconnect at once with a fresh schedule (the age had its
         * own jitter). */
        tether__backoff_reset(&cl->bo);
        cl->attempt = 0;
    } else if (cl->o.reconnect_spread_ms > 0) {
        /* The schedule was reset when the connection became stable. Its
         * first attempt would start at once; spread it instead, so that the
         * clients of a restarting server do not return all together. */
        delay = (uint32_t)(client_random() * (double)cl->o.reconnect_spread_ms);
    }
    client_wait(cl, delay, reason);
}

/* ---- loop callbacks ---------------------------------------------------- */

static void client_timer_cb(struct tether__tnode *n)
{
    tether_client *cl = tether__container_of(n, tether_client, timer);
    enum timer_mode mode = (enum timer_mode)cl->tmode;
    cl->tmode = TM_NONE;
    switch (mode) {
    case TM_WAIT:
        client_start_attempt(cl);
        break;
    case TM_STABLE:
        if (cl->connected) {
            cl->stable = true;
            tether__backoff_reset(&cl->bo);
            cl->attempt = 0;
        }
        break;
    case TM_CLOSE:
        if (cl->conn != NULL) {
            snprintf(cl->err, sizeof cl->err,
                     "close timed out after %d ms with %zu messages not yet written",
                     cl->co.close_timeout_ms, cl->held_msgs);
            tether_conn_abort(cl->conn);
        }
        break;
    default:
        break;
    }
}

static void client_free(tether_client *cl)
{
    client_timer_stop(cl);
    tether__pending_cancel(cl->loop, &cl->pend);
    tether__handle_detach(&cl->h);
    cl->loop->handles--;
    tether_tls_config_unref(cl->tls);
    tether__cdone_q_free(cl->dq);
    tether__calo_free(cl);
    tether__cpool_clear(cl);
    free(cl->line_delim);
    tether__ws_opts_free(cl->ws);
    free(cl->url);
    free(cl);
}

static void client_finish(tether_client *cl, int reason)
{
    client_timer_stop(cl);
    client_undeliver_all(cl, reason);
    cl->finished = true;
    cl->h.hidden = true; /* gone for the application from here on */
    client_report(cl, TETHER_CLIENT_CLOSED, 0, NULL, 0);
    client_todo(cl, T_FREE);
}

static void client_pending_cb(struct tether__pending *p)
{
    tether_client *cl = tether__container_of(p, tether_client, pend);
    if (cl->todo & T_START) {
        cl->todo &= ~T_START;
        client_start_attempt(cl);
    }
    if (cl->todo & T_DRAIN) {
        cl->todo &= ~T_DRAIN;
        if (!cl->closing && cl->o.on_drain != NULL) {
            cl->o.on_drain(cl, cl->o.userdata);
        }
    }
    if (cl->todo & T_FINISH) {
        cl->todo &= ~T_FINISH;
        client_finish(cl, TETHER_ECANCELED);
    }
    if (cl->todo & T_FEED) {
        cl->todo &= ~T_FEED;
        tether__client_feed(cl);
    }
    if ((cl->todo & T_FREE) && cl->olds == NULL) {
        client_free(cl); /* (a drained connection still finishing frees it when it ends) */
    }
}

/* ---- hooks for reconnect_drain.c ------------------------------------- */

void tether__client_report(tether_client *cl, tether_client_state state, int reason,
                           const char *detail)
{
    client_report(cl, state, reason, detail, 0);
}

void tether__client_restart(tether_client *cl)
{
    tether__backoff_reset(&cl->bo);
    cl->attempt = 0;
    client_start_attempt(cl);
}

/* Adds a finished connection's counters to the client's. */
void tether__client_account(tether_client *cl, tether_conn *c)
{
    cl->bytes_in += c->bytes_in;
    cl->bytes_out += c->bytes_out;
    cl->msgs_in += tether__conn_msgs_in(c);
    uint64_t pings, pongs;
    int64_t rtt;
    tether__conn_hb_stats(c, &pings, &pongs, &rtt);
    cl->pings_sent += pings;
    cl->pongs_in += pongs;
    cl->last_hb_ms = tether__conn_hb_ms(c);
    if (rtt >= 0) {
        cl->last_rtt_us = rtt;
    }
}

void tether__client_undeliver(tether_client *cl, struct cmsg *m, int reason)
{
    cl->undelivered++;
    if (cl->o.on_undelivered != NULL) {
        cl->o.on_undelivered(cl, m->data, m->len, reason, cl->o.userdata);
    }
    if (m->done != NULL) {
        tether__cdone_failed(cl, m->done, reason);
    }
    tether__cmsg_free(cl, m);
}

/* ---- public API -------------------------------------------------------- */

int tether_client_new(tether_client **out, tether_loop *loop, const char *url,
                      const tether_client_opts *opts, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (loop == NULL || url == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "%s is NULL",
                                 loop == NULL ? "loop" : "url");
    }
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "options not initialised with tether_client_opts_init()");
    }
    struct tether__url u;
    int rv = tether__url_parse(url, false, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_client *cl = calloc(1, sizeof *cl);
    if (cl == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    tether_client_opts_init(&cl->o);
    if (opts != NULL) {
        tether__opts_merge(&cl->o, sizeof cl->o, opts);
        cl->o.size = sizeof cl->o;
    }
    rv = tether__client_check_opts(&cl->o, out_err);
    if (rv != TETHER_OK) {
        free(cl);
        return rv;
    }
    tether_conn_opts_init(&cl->co);
    if (cl->o.conn_opts != NULL) {
        if (cl->o.conn_opts->size < sizeof(size_t)) {
            free(cl);
            return tether__set_error(out_err, TETHER_EINVAL,
                                     "conn_opts not initialised with tether_conn_opts_init()");
        }
        tether__opts_merge(&cl->co, sizeof cl->co, cl->o.conn_opts);
        cl->co.size = sizeof cl->co;
    }
    cl->o.conn_opts = NULL; /* not kept */
    cl->co.userdata = cl;
    cl->co.on_connect = client_on_connect;
    cl->co.on_message = client_on_message;
    cl->co.on_drain = client_on_drain;
    cl->co.on_close = client_on_close;
    cl->co.loop_opts = NULL;
    /* Check the connection options once, here, so that attempts can only
     * fail for reasons worth retrying; and settle the TLS configuration:
     * every attempt must use the same one, which keeps the session to
     * resume (a default configuration is made once, for all attempts). */
    struct tether__conn_cfg *cfg = NULL;
    rv = tether__conn_cfg_new(&cfg, &cl->co, out_err);
    if (rv == TETHER_OK && u.scheme == TETHER__SCHEME_TLS) {
        rv = tether__conn_cfg_set_tls(cfg, false, out_err);
        if (rv == TETHER_OK) {
            cl->tls = tether_tls_config_ref(cfg->tls);
        }
    }
    if (rv == TETHER_OK && u.ws) {
        rv = tether__ws_cfg_set(cfg, &u, out_err); /* checks the WebSocket options */
    }
    if (cfg != NULL) {
        tether__conn_cfg_unref(cfg);
    }
    if (rv != TETHER_OK) {
        free(cl);
        return rv;
    }
    cl->co.tls = u.scheme == TETHER__SCHEME_TLS ? cl->tls : NULL;
    if (cl->co.line_delim != NULL) {
        cl->line_delim = strdup(cl->co.line_delim);
        cl->co.line_delim = cl->line_delim;
    }
    cl->url = strdup(url);
    const tether_ws_opts *uws = cl->co.ws; /* the caller's, not kept */
    cl->ws = uws != NULL ? tether__ws_opts_dup(uws) : NULL;
    cl->co.ws = cl->ws;
    if (cl->url == NULL || (cl->co.line_delim != NULL && cl->line_delim == NULL) ||
        (uws != NULL && cl->ws == NULL)) {
        tether_tls_config_unref(cl->tls);
        tether__ws_opts_free(cl->ws);
        free(cl->line_delim);
        free(cl->url);
        free(cl);
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    bool len32 = cl->co.framing == TETHER_FRAMING_LEN32;
    if (cl->o.at_least_once && (!len32 || tether__calo_new(cl) != TETHER_OK)) {
        tether_tls_config_unref(cl->tls);
        free(cl->line_delim);
        free(cl->url);
        free(cl);
        return len32 ? tether__set_error(out_err, TETHER_ENOMEM, "out of memory")
                     : tether__set_error(out_err, TETHER_EINVAL,
                                         "at_least_once needs the len32 framing (acknowledgements "
                                         "travel in control frames)");
    }
    cl->loop = loop;
    cl->last_rtt_us = -1;
    tether__backoff_init(&cl->bo, cl->o.initial_backoff_ms, cl->o.multiplier, cl->o.jitter,
                         cl->o.max_backoff_ms);
    tether__pending_init(&cl->pend, client_pending_cb);
    tether__tnode_init(&cl->timer, client_timer_cb);
    tether__handle_init(&cl->h, loop, TETHER_HANDLE_CLIENT, cl, client_close_obj);
    tether__handle_start(&cl->h);
    client_todo(cl, T_START);
    *out = cl;
    return TETHER_OK;
}

int tether_client_send(tether_client *cl, const void *data, size_t len)
{
    return tether__client_send(cl, data, len, NULL);
}

struct tether__cdone_q **tether__client_dq(tether_client *cl)
{
    return &cl->dq;
}

int tether__client_send(tether_client *cl, const void *data, size_t len, struct tether__cdone *done)
{
    if (cl == NULL || (data == NULL && len > 0)) {
        return TETHER_EINVAL;
    }
    if (cl->closing || cl->gave_up) {
        return TETHER_ECLOSED;
    }
    if (len > cl->co.max_msg || len > cl->o.queue_max_bytes) {
        return TETHER_EMSGSIZE;
    }
    if (cl->o.fail_fast && !cl->connected) {
        return TETHER_ENOTCONN;
    }
    if (cl->held_msgs >= cl->o.queue_max_msgs || cl->held_bytes + len > cl->o.queue_max_bytes) {
        cl->want_drain = true;
        return TETHER_EAGAIN;
    }
    struct cmsg *m = tether__cmsg_new(cl, len);
    if (m == NULL) {
        return TETHER_ENOMEM;
    }
    m->seq = tether__calo_number(cl);
    m->done = done;
    if (len > 0) {
        memcpy(m->data, data, len);
    }
    if (cl->tail != NULL) {
        cl->tail->next = m;
    } else {
        cl->head = m;
    }
    cl->tail = m;
    if (cl->waiting == NULL) {
        cl->waiting = m;
    }
    cl->held_bytes += len;
    cl->held_msgs++;
    if (cl->connected && cl->waiting == m) {
        tether__client_feed(cl);
    }
    return TETHER_OK;
}

int tether_client_reconnect_now(tether_client *cl)
{
    if (cl == NULL) {
        return TETHER_EINVAL;
    }
    if (cl->closing) {
        return TETHER_ECLOSED;
    }
    if (cl->conn != NULL) {
        return TETHER_EBUSY;
    }
    if (cl->gave_up) {
        cl->gave_up = false;
        tether__backoff_reset(&cl->bo);
        cl->attempt = 0;
    }
    client_timer_stop(cl);
    client_todo(cl, T_START);
    return TETHER_OK;
}

void tether_client_close(tether_client *cl)
{
    if (cl == NULL || cl->closing) {
        return;
    }
    cl->closing = true;
    cl->todo &= ~(T_START | T_DRAIN);
    client_timer_stop(cl);
    tether__client_drain_close_all(cl);
    if (cl->conn == NULL) {
        client_todo(cl, T_FINISH);
        return;
    }
    if (!cl->connected) {
        tether_conn_abort(cl->conn); /* its on_close finishes the close */
        return;
    }
    /* Write what we hold, then close gracefully; on_close finishes. */
    if (cl->co.close_timeout_ms >= 0) {
        client_timer(cl, TM_CLOSE, (uint64_t)cl->co.close_timeout_ms);
    }
    tether__client_feed(cl);
}

static void client_close_obj(void *obj)
{
    tether_client_close(obj);
}

void tether_client_unref(tether_client *cl)
{
    if (cl != NULL) {
        tether__handle_unref(&cl->h);
        tether_conn_unref(cl->conn);
    }
}

void tether_client_ref(tether_client *cl)
{
    if (cl != NULL) {
        tether__handle_ref(&cl->h);
        tether_conn_ref(cl->conn);
    }
}

void tether_client_pause(tether_client *cl)
{
    if (cl == NULL || cl->paused) {
        return;
    }
    cl->paused = true;
    if (cl->conn != NULL) {
        tether_conn_pause(cl->conn);
    }
    tether__client_drain_pause(cl, true);
}

void tether_client_resume(tether_client *cl)
{
    if (cl == NULL || !cl->paused) {
        return;
    }
    cl->paused = false;
    if (cl->conn != NULL) {
        tether_conn_resume(cl->conn);
    }
    tether__client_drain_pause(cl, false);
}

bool tether_client_is_paused(const tether_client *cl)
{
    return cl != NULL && cl->paused;
}
