/* SPDX-License-Identifier: MIT */
/* Acknowledgements (at-least-once streams, issue #14): HELLO capability
 * bit 1, the ACK and RESUME control frames, and the receiver's duplicate
 * filter.
 *
 * Data frames carry no number: the sender's RESUME names the sequence
 * number of the next data frame, and every data frame after it counts one
 * up. The receiver acknowledges cumulatively, once per read batch (an
 * echoing peer's ACK rides in the same write as its replies), never per
 * message.
 *
 * Duplicates. Each loop keeps a table: resume token -> the highest
 * sequence number delivered under it. A data frame numbered at or below
 * that was delivered before (on an earlier connection of the same client,
 * whose ACK was lost with it) and is dropped. The table is per loop: a
 * client whose connections land on different loops of a group, or on a
 * restarted process, may see duplicates. It holds at most
 * TETHER__ACK_TABLE_MAX tokens; an entry unused for TETHER__ACK_EXPIRE_MS
 * is forgotten, and when the table is full the least recently used entry
 * without a connection goes. (With every entry in use the connection
 * filters only its own stream.) */
#include "ack.h"
#include "delivery.h"

#include <stdlib.h>
#include <string.h>

struct tether__ack_entry {
    uint64_t token;
    uint64_t delivered; /* highest sequence number delivered */
    uint64_t used;      /* loop ms of the last use */
    uint32_t refs;      /* connections using it */
    bool live;
};

struct ack_table {
    struct tether__loop_ext ext;
    uint32_t n;
    struct tether__ack_entry e[TETHER__ACK_TABLE_MAX];
};

static const int ack_key;
/* (ack.h: read inline on every dial.) */
_Thread_local bool tether__ack_dial_want_flag;

static void ack_table_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    free(tether__container_of(ext, struct ack_table, ext));
}

static struct ack_table *ack_table_get(tether_loop *loop)
{
    bool fresh;
    return TETHER__LOOP_EXT_GET(loop, &ack_key, struct ack_table, ext, ack_table_cleanup, &fresh);
}

/* The entry for token (created with delivered = first - 1 when new), or
 * NULL when the table is full of entries in use or out of memory. */
static struct tether__ack_entry *ack_entry_get(tether_loop *loop, uint64_t token, uint64_t first)
{
    struct ack_table *t = ack_table_get(loop);
    if (t == NULL) {
        return NULL;
    }
    uint64_t now = tether__loop_time(loop);
    struct tether__ack_entry *victim = NULL;
    for (uint32_t i = 0; i < t->n; i++) {
        struct tether__ack_entry *e = &t->e[i];
        bool expired = e->refs == 0 && now - e->used >= TETHER__ACK_EXPIRE_MS;
        if (e->live && e->token == token && !expired) {
            e->refs++;
            e->used = now;
            return e;
        }
        if (e->refs == 0 && (!e->live || expired || victim == NULL || e->used < victim->used)) {
            if (victim == NULL || victim->live) {
                victim = e;
            }
        }
    }
    if (t->n < TETHER__ACK_TABLE_MAX) {
        victim = &t->e[t->n++];
    }
    if (victim == NULL) {
        return NULL;
    }
    victim->token = token;
    victim->delivered = first - 1;
    victim->used = now;
    victim->refs = 1;
    victim->live = true;
    return victim;
}

void tether__ack_forget(tether_loop *loop)
{
    struct tether__loop_ext *x = tether__loop_ext_find(loop, &ack_key);
    if (x == NULL) {
        return;
    }
    struct ack_table *t = tether__container_of(x, struct ack_table, ext);
    for (uint32_t i = 0; i < t->n; i++) {
        /* (An entry still in use stays reserved for its connection, which
         * keeps filtering its own stream, until that connection ends.) */
        t->e[i].live = false;
    }
}

void tether__ack_dial_want(bool want)
{
    tether__ack_dial_want_flag = want;
}

static void ack_on_timer(struct tether__tnode *n);

/* The connection's acknowledgement state, in c->ex; NULL when out of
 * memory. */
static struct tether__ack *ack_new(tether_conn *c)
{
    struct tether__conn_extra *ex = tether__conn_extra(c);
    struct tether__ack *a = ex != NULL ? calloc(1, sizeof *a) : NULL;
    if (a == NULL) {
        return NULL;
    }
    a->c = c;
    tether__tnode_init(&a->timer, ack_on_timer);
    ex->ack = a;
    c->hooks |= TETHER__CH_ACK;
    return a;
}

int tether__ack_dial_take(tether_conn *c)
{
    if (!tether__ack_dial_want_flag) {
        return TETHER_OK;
    }
    tether__ack_dial_want_flag = false;
    struct tether__ack *a = ack_new(c);
    if (a == NULL) {
        return TETHER_ENOMEM;
    }
    a->want = true;
    return TETHER_OK;
}

uint8_t tether__ack_hello_flags(const tether_conn *c)
{
    /* A server takes acknowledgements from any client that asks. */
    bool on = (c->flags & TETHER__CF_ACCEPTED) ||
              (tether__conn_ack(c) != NULL && tether__conn_ack(c)->want);
    return on && c->cfg->fast_len32 ? TETHER__HELLO_ACKS : 0;
}

bool tether__ack_on_hello(tether_conn *c, uint8_t flags)
{
    bool peer = (flags & TETHER__HELLO_ACKS) != 0;
    struct tether__ack *a = tether__conn_ack(c);
    if (a != NULL && a->want) {
        a->st = peer ? TETHER__ACK_ON : TETHER__ACK_OFF;
        if (!peer) {
            char who[64];
            if (tether_conn_peer(c, who, sizeof who) != TETHER_OK) {
                strcpy(who, "?");
            }
            tether__log(TETHER_LOG_WARN,
                        "%s: no acknowledgements on this connection (the peer's HELLO does not "
                        "announce them: a tether peer that predates them); messages count as "
                        "delivered once written",
                        who);
        }
        if (a->on_nego != NULL) {
            a->on_nego(c, peer);
        }
        return c->state == TETHER__CS_READY;
    }
    if (peer && tether__ack_hello_flags(c) != 0) {
        if (a == NULL) {
            a = ack_new(c);
            if (a == NULL) {
                tether__conn_fail(c, TETHER_ENOMEM, "out of memory for acknowledgements");
                return false;
            }
        }
        a->rx_on = true;
    }
    return true;
}

bool tether__ack_admits(const tether_conn *c, uint8_t type)
{
    const struct tether__ack *a = tether__conn_ack(c);
    if (a == NULL || !(c->flags & TETHER__CF_PEER_HELLO)) {
        return false;
    }
    return type == TETHER__CTRL_ACK ? a->st == TETHER__ACK_ON : a->rx_on;
}

int tether__ack_queue_resume(tether_conn *c, uint64_t token, uint64_t seq)
{
    uint8_t buf[TETHER__CTRL_HDR_LEN + TETHER__CTRL_RESUME_LEN];
    tether__len32_ctrl_header(buf, TETHER__CTRL_RESUME, TETHER__CTRL_RESUME_LEN);
    tether__put_be32(buf + 4, (uint32_t)(token >> 32));
    tether__put_be32(buf + 8, (uint32_t)token);
    tether__put_be32(buf + 12, (uint32_t)(seq >> 32));
    tether__put_be32(buf + 16, (uint32_t)seq);
    struct iovec iov = {buf, sizeof buf};
    int rv = tether__wq_append_copy(c, &iov, 1, sizeof buf);
    if (rv == TETHER_OK) {
        struct tether__ack *a = tether__conn_ack(c);
        if (a->tx_next == 0 || a->acked >= seq) {
            a->acked = seq - 1; /* acknowledgements count from here */
        }
        a->tx_next = seq;
    }
    return rv;
}

static uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)tether__get_be32(p) << 32) | tether__get_be32(p + 4);
}

bool tether__ack_on_ctrl(tether_conn *c, uint8_t type, const uint8_t *p, size_t n)
{
    struct tether__ack *a = tether__conn_ack(c);
    if (type == TETHER__CTRL_ACK) {
        if (n != TETHER__CTRL_ACK_LEN) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed ACK control frame (%zu bytes)", n);
            return false;
        }
        uint64_t seq = get_be64(p);
        if (a->tx_next == 0 || seq >= a->tx_next) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "protocol error: the peer acknowledged message %llu, which was not "
                              "sent on this connection",
                              (unsigned long long)seq);
            return false;
        }
        if (seq > a->acked) {
            a->acked_n += seq - a->acked;
            a->acked = seq;
            if (a->on_ack != NULL) {
                a->on_ack(c, seq);
            }
        }
        return c->state == TETHER__CS_READY;
    }
    if (n != TETHER__CTRL_RESUME_LEN) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "framing error (len32): malformed RESUME control frame (%zu bytes)", n);
        return false;
    }
    uint64_t token = get_be64(p);
    uint64_t seq = get_be64(p + 8);
    if (seq == 0 || (a->rx_resumed && token != a->rx_token)) {
        tether__conn_fail(c, TETHER_EPROTO, "protocol error: RESUME with %s",
                          seq == 0 ? "sequence number 0" : "a different resume token");
        return false;
    }
    if (c->rx_tag != 0 && c->rx_tag != TETHER__RX_SEQ) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: a RESUME control frame where a data frame belongs");
        return false;
    }
    if (!a->rx_resumed) {
        a->rx_token = token;
        a->e = ack_entry_get(c->h.loop, token, seq);
        a->rx_own = seq - 1;
        a->rx_done = a->e != NULL ? &a->e->delivered : &a->rx_own;
        a->rx_resumed = true;
    }
    a->rx_next = seq;
    if (a->rx_acked >= seq) {
        a->rx_acked = seq - 1;
    }
    c->rx_tag = TETHER__RX_SEQ;
    return true;
}

/* Queues an ACK for everything delivered so far. */
static void ack_send(tether_conn *c, struct tether__ack *a)
{
    uint64_t seq = a->rx_next - 1;
    uint8_t buf[TETHER__CTRL_HDR_LEN + TETHER__CTRL_ACK_LEN];
    tether__len32_ctrl_header(buf, TETHER__CTRL_ACK, TETHER__CTRL_ACK_LEN);
    tether__put_be32(buf + 4, (uint32_t)(seq >> 32));
    tether__put_be32(buf + 8, (uint32_t)seq);
    struct iovec iov = {buf, sizeof buf};
    if (tether__wq_append_copy(c, &iov, 1, sizeof buf) != TETHER_OK) {
        return; /* the next batch acknowledges (or the sender resends) */
    }
    a->rx_acked = seq;
    a->acks_out++;
    a->ack_at = tether__loop_time(c->h.loop);
    a->ack_bytes = c->bytes_in;
    if (tether__tnode_active(&a->timer)) {
        tether__tnode_stop(c->h.loop, &a->timer);
    }
    tether__conn_after_queue(c);
}

static bool ack_due(const tether_conn *c, const struct tether__ack *a)
{
    return a->rx_resumed && a->rx_next - 1 > a->rx_acked && c->state == TETHER__CS_READY;
}

static void ack_on_timer(struct tether__tnode *n)
{
    struct tether__ack *a = tether__container_of(n, struct tether__ack, timer);
    if (ack_due(a->c, a)) {
        ack_send(a->c, a);
    }
}

/* One ACK per read batch would be one write (and one wake-up of the
 * sender) per batch: at a few dozen messages a batch that is a tenth of
 * a fast sender's time. So within the loop millisecond of the last ACK,
 * the next waits (for the timer, 1 ms) unless a quarter MiB has arrived
 * since; a sender that waits for each acknowledgement is answered at
 * once, since its message comes in a later millisecond. */
void tether__ack_after_read(tether_conn *c)
{
    struct tether__ack *a = tether__conn_ack(c);
    if (!ack_due(c, a)) {
        return;
    }
    if (tether__loop_time(c->h.loop) == a->ack_at &&
        c->bytes_in - a->ack_bytes < TETHER__ACK_COALESCE_BYTES) {
        if (!tether__tnode_active(&a->timer)) {
            tether__tnode_start(c->h.loop, &a->timer, 1);
        }
        return;
    }
    ack_send(c, a);
}

void tether__ack_stats(const tether_conn *c, tether_stats *s)
{
    const struct tether__ack *a = tether__conn_ack(c);
    if (a == NULL) {
        return;
    }
    s->dups_dropped = a->dups;
    s->acks_sent = a->acks_out;
    s->acked = a->acked_n;
}

void tether__ack_free(tether_conn *c)
{
    struct tether__ack *a = tether__conn_ack(c);
    if (a == NULL) {
        return;
    }
    if (tether__tnode_active(&a->timer)) {
        tether__tnode_stop(c->h.loop, &a->timer);
    }
    if (a->e != NULL) {
        a->e->refs--;
        a->e->used = tether__loop_time(c->h.loop);
    }
    free(a);
    c->ex->ack = NULL;
    c->hooks &= (uint8_t)~TETHER__CH_ACK;
}
