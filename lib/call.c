/* SPDX-License-Identifier: MIT */
/* Request/response calls on a connection (tether_call): the id table of
 * pending calls, their timeouts and cancellation, the CALL and REPLY
 * control frames that tag a data frame with an id (negotiated through HELLO
 * capability bit 0), and the server side's tether_conn_reply(). Every call
 * that tether_call() accepted ends exactly once: a reply, a timeout, a
 * cancellation, a peer that turns out not to take calls, or the end of
 * the connection. */
#include "delivery.h"

#include <stdlib.h>
#include <string.h>

/* One pending call. */
struct tether__call {
    struct tether__tnode timer; /* its timeout, when it has one */
    struct tether__dl *dl;
    uint32_t id;
    tether_reply_cb cb;
    void *ud;
    struct tether__call *prev; /* dl->first..last, oldest first */
    struct tether__call *next; /* also the fin list once canceled */
    int status;                /* on the fin list */
    uint8_t *held;             /* request kept until the peer's HELLO, or NULL */
    size_t held_len;
};

#define TABLE_MIN 16u

/* ---- the id table ------------------------------------------------------ */

/* Ids are handed out in sequence, so the low bits spread them evenly. */
static uint32_t slot_of(const struct tether__dl *dl, uint32_t id)
{
    return id & (dl->cap - 1);
}

static struct tether__call *table_find(const struct tether__dl *dl, uint32_t id)
{
    if (dl->cap == 0) {
        return NULL;
    }
    for (uint32_t i = slot_of(dl, id);; i = (i + 1) & (dl->cap - 1)) {
        struct tether__call *k = dl->slots[i];
        if (k == NULL || k->id == id) {
            return k;
        }
    }
}

static void table_put(struct tether__dl *dl, struct tether__call *k)
{
    uint32_t i = slot_of(dl, k->id);
    while (dl->slots[i] != NULL) {
        i = (i + 1) & (dl->cap - 1);
    }
    dl->slots[i] = k;
    dl->n++;
}

/* Keeps the load at or below one half. */
static int table_reserve(struct tether__dl *dl)
{
    if (dl->cap != 0 && (dl->n + 1) * 2 <= dl->cap) {
        return TETHER_OK;
    }
    uint32_t cap = dl->cap == 0 ? TABLE_MIN : dl->cap * 2;
    if (cap == 0 || cap > (1u << 30)) {
        return TETHER_ENOMEM;
    }
    struct tether__call **old = dl->slots;
    uint32_t ocap = dl->cap;
    dl->slots = calloc(cap, sizeof *dl->slots);
    if (dl->slots == NULL) {
        dl->slots = old;
        return TETHER_ENOMEM;
    }
    dl->cap = cap;
    dl->n = 0;
    for (uint32_t i = 0; i < ocap; i++) {
        if (old[i] != NULL) {
            table_put(dl, old[i]);
        }
    }
    free(old);
    return TETHER_OK;
}

/* Removes by backward shift, so that lookups never need tombstones. */
static void table_remove(struct tether__dl *dl, struct tether__call *k)
{
    uint32_t mask = dl->cap - 1;
    uint32_t i = slot_of(dl, k->id);
    while (dl->slots[i] != k) {
        i = (i + 1) & mask;
    }
    dl->slots[i] = NULL;
    dl->n--;
    for (uint32_t j = (i + 1) & mask; dl->slots[j] != NULL; j = (j + 1) & mask) {
        struct tether__call *m = dl->slots[j];
        uint32_t home = slot_of(dl, m->id);
        /* m may move to the hole at i unless its home lies in (i, j]. */
        bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            dl->slots[i] = m;
            dl->slots[j] = NULL;
            i = j;
        }
    }
}

/* The next free id: never 0, never one still pending (ids wrap after
 * 2^32 - 1 calls on one connection). */
static uint32_t next_id(struct tether__dl *dl)
{
    do {
        dl->next_id++;
    } while (dl->next_id == 0 || table_find(dl, dl->next_id) != NULL);
    return dl->next_id;
}

/* Takes a call out of the table, the list and the timer heap. */
static void call_unlink(struct tether__call *k)
{
    struct tether__dl *dl = k->dl;
    table_remove(dl, k);
    if (k->prev != NULL) {
        k->prev->next = k->next;
    } else {
        dl->first = k->next;
    }
    if (k->next != NULL) {
        k->next->prev = k->prev;
    } else {
        dl->last = k->prev;
    }
    k->prev = k->next = NULL;
    tether__tnode_stop(dl->c->h.loop, &k->timer);
}

/* Ends a call that is already unlinked: its one callback, then its memory. */
static void call_end(struct tether__call *k, int status, const uint8_t *data, size_t len)
{
    tether_conn *c = k->dl->c;
    tether_reply_cb cb = k->cb;
    void *ud = k->ud;
    free(k->held);
    free(k);
    cb(c, status, data, len, ud);
}

/* ---- negotiation -------------------------------------------------------- */

uint8_t tether__call_hello_flags(const tether_conn *c)
{
    return c->cfg->o.calls ? TETHER__HELLO_CALLS : 0;
}

bool tether__call_negotiated(const tether_conn *c)
{
    return c->cfg->o.calls && (c->flags & TETHER__CF_HELLO_SENT) &&
           (c->flags & TETHER__CF_PEER_HELLO) && tether__conn_dl(c) != NULL &&
           tether__conn_dl(c)->peer_calls;
}

/* Queues a CALL or REPLY control frame and its data frame as one piece,
 * so that nothing can come between them. The checks are those of
 * tether_conn_send(), but for `held` requests: those were accepted before
 * the peer's HELLO and go out whatever the queue holds. */
static int call_queue(tether_conn *c, uint8_t type, uint32_t id, const void *data, size_t len,
                      bool held)
{
    const struct tether__conn_cfg *cfg = c->cfg;
    if (len > cfg->o.max_msg) {
        return TETHER_EMSGSIZE;
    }
    if (!held && c->queued >= cfg->o.send_hwm) {
        c->flags |= TETHER__CF_WANT_DRAIN;
        return TETHER_EAGAIN;
    }
    if (!held && TETHER__UNLIKELY(tether__conn_mem_over(c)) && tether__mem_heavy(c, c->queued) &&
        tether__mem_block(c, TETHER__MF_REFUSED)) {
        return TETHER_EAGAIN;
    }
    uint8_t hdr[TETHER__CTRL_HDR_LEN + TETHER__CTRL_CALL_LEN + 4];
    tether__len32_ctrl_header(hdr, type, TETHER__CTRL_CALL_LEN);
    tether__put_be32(hdr + TETHER__CTRL_HDR_LEN, id);
    tether__put_be32(hdr + TETHER__CTRL_HDR_LEN + TETHER__CTRL_CALL_LEN, (uint32_t)len);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)data, len}};
    int rv = tether__wq_append_copy(c, iov, 2, sizeof hdr + len);
    if (rv != TETHER_OK) {
        return rv;
    }
    c->msgs_out++;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

/* The peer does not take calls: says so once, naming why. */
static void call_log_fallback(tether_conn *c, const char *why)
{
    char peer[64];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        strcpy(peer, "?");
    }
    /* A client asked for calls and wants to know; a server sees this for
     * every plain client. */
    tether__log((c->flags & TETHER__CF_DIALED) ? TETHER_LOG_INFO : TETHER_LOG_DEBUG,
                "%s: no request ids on this connection (%s); tether_call() fails with "
                "TETHER_ENOTSUP, plain messages work as before",
                peer, why);
}

/* The peer's capabilities are known now: sends the calls made before, in
 * order, or fails them when the peer does not take calls. The failed ones
 * are reported after the walk, so that their callbacks (which may call or
 * cancel) never touch the list being walked. */
static void call_settle_held(tether_conn *c, struct tether__dl *dl)
{
    struct tether__call *failed = NULL;
    struct tether__call **ftail = &failed;
    struct tether__call *k = dl->first;
    while (k != NULL) {
        struct tether__call *next = k->next;
        if (k->held != NULL) {
            int rv = dl->peer_calls
                         ? call_queue(c, TETHER__CTRL_CALL, k->id, k->held, k->held_len, true)
                         : TETHER_ENOTSUP;
            if (rv == TETHER_OK) {
                free(k->held);
                k->held = NULL;
            } else {
                dl->failed++;
                call_unlink(k);
                k->status = rv;
                *ftail = k;
                ftail = &k->next;
            }
        }
        k = next;
    }
    while (failed != NULL) {
        k = failed;
        failed = k->next;
        call_end(k, k->status, NULL, 0);
    }
}

bool tether__call_on_hello(tether_conn *c, uint8_t flags)
{
    if (!c->cfg->o.calls) {
        return true;
    }
    if (c->rx_tag == TETHER__RX_PROBE) {
        c->rx_tag = 0;
    }
    struct tether__dl *dl = tether__dl_get(c);
    if (dl == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory for request ids");
        return false;
    }
    dl->peer_calls = (flags & TETHER__HELLO_CALLS) != 0;
    if (!dl->peer_calls) {
        call_log_fallback(c, "the peer's HELLO does not announce them: a tether peer without "
                             "tether_conn_opts.calls, or an older one");
    }
    call_settle_held(c, dl);
    return c->state == TETHER__CS_READY;
}

/* ---- the wire ------------------------------------------------------------ */

bool tether__call_on_ctrl(tether_conn *c, uint8_t type, const uint8_t *p, size_t n)
{
    const char *name = type == TETHER__CTRL_CALL ? "CALL" : "REPLY";
    if (n != TETHER__CTRL_CALL_LEN) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "framing error (len32): malformed %s control frame (%zu bytes)", name, n);
        return false;
    }
    if (c->rx_tag == TETHER__RX_REQ || c->rx_tag == TETHER__RX_REPLY) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: a %s control frame where the data frame of the "
                          "previous one belongs",
                          name);
        return false;
    }
    uint32_t id = tether__get_be32(p);
    if (id == 0) {
        tether__conn_fail(c, TETHER_EPROTO, "protocol error: a %s control frame with id 0", name);
        return false;
    }
    tether__conn_dl(c)->rx_id = id;
    c->rx_tag = type == TETHER__CTRL_CALL ? TETHER__RX_REQ : TETHER__RX_REPLY;
    return true;
}

void tether__call_deliver(tether_conn *c, const uint8_t *p, size_t len)
{
    uint8_t tag = c->rx_tag;
    c->rx_tag = 0;
    struct tether__dl *dl = tether__conn_dl(c);
    if (tag == TETHER__RX_REPLY) {
        struct tether__call *k = table_find(dl, dl->rx_id);
        if (k == NULL || k->held != NULL) {
            dl->late++; /* timed out or canceled already */
            return;
        }
        dl->completed++;
        call_unlink(k);
        call_end(k, TETHER_OK, p, len);
        return;
    }
    if (tag == TETHER__RX_PROBE && !(c->flags & TETHER__CF_PEER_HELLO)) {
        /* The first frame came without a HELLO: a plain len32 peer, which
         * will never send one. */
        call_log_fallback(c, "the peer sent data without a HELLO: a plain length-prefixed peer");
        dl = tether__dl_get(c);
        if (dl != NULL) {
            dl->peer_plain = true;
            call_settle_held(c, dl);
        }
    }
    tether__conn_count_in(c);
    tether_msg_cb cb = c->cfg->o.on_message;
    if (tag == TETHER__RX_REQ) {
        dl->requests_in++;
        dl->cur_id = dl->rx_id;
    }
    if (cb != NULL) {
        cb(c, p, len, c->userdata);
    }
    if (tag == TETHER__RX_REQ && tether__conn_dl(c) != NULL) {
        tether__conn_dl(c)->cur_id = 0;
    }
}

/* ---- ending calls ---------------------------------------------------------- */

static void call_timer_cb(struct tether__tnode *n)
{
    struct tether__call *k = tether__container_of(n, struct tether__call, timer);
    tether_conn *c = k->dl->c;
    k->dl->timed_out++;
    call_unlink(k);
    c->dispatching++;
    call_end(k, TETHER_ETIMEDOUT, NULL, 0);
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        c->dispatching++;
        tether__conn_dispatch_end(c);
        c->dispatching--;
    }
}

void tether__call_fail_all(tether_conn *c, int status)
{
    struct tether__dl *dl = tether__conn_dl(c);
    while (dl->first != NULL) {
        struct tether__call *k = dl->first;
        dl->failed++;
        call_unlink(k);
        call_end(k, status, NULL, 0);
    }
    tether__call_fire_fin(dl);
}

void tether__call_fire_fin(struct tether__dl *dl)
{
    struct tether__call *k = dl->fin_head;
    dl->fin_head = dl->fin_tail = NULL;
    while (k != NULL) {
        struct tether__call *next = k->next;
        call_end(k, k->status, NULL, 0);
        k = next;
    }
}

void tether__call_free(struct tether__dl *dl)
{
    /* Normally none is left (tether__dl_conn_gone failed them). */
    if (dl->first != NULL || dl->fin_head != NULL) {
        tether__call_fail_all(dl->c, tether__dl_gone_status(dl->c));
    }
    free(dl->slots);
    dl->slots = NULL;
    dl->cap = dl->n = 0;
}

void tether__call_stats(const tether_conn *c, tether_stats *s)
{
    const struct tether__dl *dl = tether__conn_dl(c);
    if (dl == NULL) {
        return;
    }
    s->calls_in_flight = dl->n;
    s->calls_completed = dl->completed;
    s->calls_timed_out = dl->timed_out;
    s->calls_failed = dl->failed;
    s->calls_canceled = dl->canceled;
    s->calls_late_replies = dl->late;
    s->requests_in = dl->requests_in;
}

/* ---- public API ------------------------------------------------------------ */

int tether_call(tether_conn *c, const void *req, size_t len, int timeout_ms,
                tether_reply_cb on_reply, void *ud, uint32_t *out_id)
{
    if (c == NULL || on_reply == NULL || (req == NULL && len > 0) || timeout_ms < 0) {
        return TETHER_EINVAL;
    }
    if (!c->cfg->o.calls) {
        tether__conn_set_err(c, "tether_call: calls are off on this connection (set "
                                "tether_conn_opts.calls on both ends)");
        return TETHER_ENOTSUP;
    }
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF))) {
        return TETHER_ECLOSED;
    }
    if (len > c->cfg->o.max_msg) {
        return TETHER_EMSGSIZE;
    }
    /* Before the peer's HELLO only the dialling side may call: it spoke
     * first, so the answer decides. An accepted connection without the
     * peer's HELLO has a plain peer (HELLO comes first) or none yet. */
    bool known = (c->flags & TETHER__CF_PEER_HELLO) ||
                 (tether__conn_dl(c) != NULL && tether__conn_dl(c)->peer_plain);
    if ((known || !(c->flags & TETHER__CF_DIALED)) && !tether__call_negotiated(c)) {
        tether__conn_set_err(c, (c->flags & TETHER__CF_PEER_HELLO)
                                    ? "tether_call: the peer does not take calls (its HELLO "
                                      "lacks capability bit 0)"
                                    : "tether_call: the peer has not negotiated calls (no "
                                      "HELLO received: a plain length-prefixed peer)");
        return TETHER_ENOTSUP;
    }
    struct tether__dl *dl = tether__dl_get(c);
    if (dl == NULL || table_reserve(dl) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    struct tether__call *k = calloc(1, sizeof *k);
    if (k == NULL) {
        return TETHER_ENOMEM;
    }
    k->dl = dl;
    k->id = next_id(dl);
    k->cb = on_reply;
    k->ud = ud;
    int rv;
    if (known) {
        rv = call_queue(c, TETHER__CTRL_CALL, k->id, req, len, false);
    } else {
        /* Kept until the peer's HELLO says whether it takes calls. */
        k->held = malloc(len > 0 ? len : 1);
        k->held_len = len;
        rv = k->held != NULL ? TETHER_OK : TETHER_ENOMEM;
        if (rv == TETHER_OK && len > 0) {
            memcpy(k->held, req, len);
        }
    }
    if (rv != TETHER_OK) {
        free(k->held);
        free(k);
        return rv;
    }
    table_put(dl, k);
    k->prev = dl->last;
    if (dl->last != NULL) {
        dl->last->next = k;
    } else {
        dl->first = k;
    }
    dl->last = k;
    tether__tnode_init(&k->timer, call_timer_cb);
    if (timeout_ms > 0) {
        tether__tnode_start(c->h.loop, &k->timer, (uint64_t)timeout_ms);
    }
    if (out_id != NULL) {
        *out_id = k->id;
    }
    return TETHER_OK;
}

int tether_call_cancel(tether_conn *c, uint32_t id)
{
    if (c == NULL || tether__conn_dl(c) == NULL) {
        return TETHER_EINVAL;
    }
    struct tether__call *k = table_find(tether__conn_dl(c), id);
    if (k == NULL || id == 0) {
        return TETHER_EINVAL;
    }
    struct tether__dl *dl = tether__conn_dl(c);
    dl->canceled++;
    call_unlink(k);
    /* Reported from the loop, like every other outcome. */
    k->status = TETHER_ECANCELED;
    k->next = NULL;
    if (dl->fin_tail != NULL) {
        dl->fin_tail->next = k;
    } else {
        dl->fin_head = k;
    }
    dl->fin_tail = k;
    tether__pending_queue(c->h.loop, &dl->pend);
    return TETHER_OK;
}

uint32_t tether_conn_msg_call_id(const tether_conn *c)
{
    return c != NULL && tether__conn_dl(c) != NULL ? tether__conn_dl(c)->cur_id : 0;
}

int tether_conn_reply(tether_conn *c, uint32_t id, const void *data, size_t len)
{
    if (c == NULL || id == 0 || (data == NULL && len > 0)) {
        return TETHER_EINVAL;
    }
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF))) {
        return TETHER_ECLOSED;
    }
    if (!tether__call_negotiated(c)) {
        tether__conn_set_err(c, "tether_conn_reply: calls were not negotiated on this connection");
        return TETHER_ENOTSUP;
    }
    return call_queue(c, TETHER__CTRL_REPLY, id, data, len, false);
}
