/* SPDX-License-Identifier: MIT */
/* The per-loop memory budget of connections: accounting of the memory
 * they hold on behalf of their peers (input buffers and queued output),
 * the limit an operator sets on it, and which connections are held back
 * when it is spent.
 *
 * Past the limit, a connection that holds more than its share (the limit
 * divided by the connections on the loop, and at least HEAVY_FLOOR) may
 * not read or queue more: the read path stops reading it (input and
 * output count, and so does the growth a read would need), and
 * tether_conn_send() refuses its messages with TETHER_EAGAIN (its queued
 * output counts: the frame being delivered is about to be freed, so an
 * echo of it does not add to what the connection holds). Connections
 * holding little carry on, so that one client's small requests are still
 * answered while a few peers pin large buffers. Everything held back is
 * released together when usage falls to the low-water mark (a quarter
 * below the limit): reading resumes and refused senders get on_drain. The
 * state lives with the loop through tether__loop_ext, like the read
 * buffer and the segment cache. */
#include "conn_core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEAVY_FLOOR (64u * 1024u) /* never "heavy" below this */

static const char mem_key; /* its address identifies the budget */

static void mem_resume_cb(struct tether__pending *p);

static void mem_set_limit(struct tether__mem *m, size_t limit)
{
    m->limit = limit == 0 ? SIZE_MAX : limit;
    m->lwm = limit == 0 ? SIZE_MAX : limit - limit / 4;
    if (m->in_bytes + m->out_bytes > m->limit) {
        tether__mem_went_over(m);
    } else if (m->over && m->in_bytes + m->out_bytes <= m->lwm) {
        tether__mem_went_under(m);
    }
}

static void mem_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    struct tether__mem *m = tether__container_of(ext, struct tether__mem, ext);
    tether__pending_cancel(loop, &m->resume);
    tether__linger_fini(m);
    loop->mem = NULL;
    tether__conn_spares_free(m);
    free(m);
}

struct tether__mem *tether__mem_get(tether_loop *loop)
{
    if (loop->mem != NULL) {
        return loop->mem;
    }
    struct tether__mem *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->loop = loop;
    m->ext.key = &mem_key;
    m->ext.cleanup = mem_cleanup;
    tether__pending_init(&m->resume, mem_resume_cb);
    tether__linger_init(m);
    mem_set_limit(m, TETHER_MEM_LIMIT_DEFAULT);
    tether__loop_ext_add(loop, &m->ext);
    loop->mem = m;
    return m;
}

void tether__mem_went_over(struct tether__mem *m)
{
    m->over = true;
    m->loop->mem_over = true;
}

void tether__mem_went_under(struct tether__mem *m)
{
    m->over = false;
    m->loop->mem_over = false;
    if (m->blocked != NULL) {
        /* Not from here: this runs inside whatever freed the memory. */
        tether__pending_queue(m->loop, &m->resume);
    }
}

bool tether__mem_heavy(const tether_conn *c, size_t held)
{
    const struct tether__mem *m = tether__conn_mem(c);
    if (held < HEAVY_FLOOR) {
        return false;
    }
    size_t share = m->limit / (m->conns > 0 ? m->conns : 1);
    return held >= share;
}

/* The list's links are in the connections' cold state (c->ex): few
 * connections are ever held back, and those hold much more than it. */
static void mem_unlink(tether_conn *c)
{
    struct tether__mem *m = tether__conn_mem(c);
    struct tether__conn_extra *ex = c->ex;
    if (ex->mem_prev != NULL) {
        ex->mem_prev->ex->mem_next = ex->mem_next;
    } else {
        m->blocked = ex->mem_next;
    }
    if (ex->mem_next != NULL) {
        ex->mem_next->ex->mem_prev = ex->mem_prev;
    }
    ex->mem_next = ex->mem_prev = NULL;
}

bool tether__mem_block(tether_conn *c, uint8_t what)
{
    struct tether__mem *m = tether__conn_mem(c);
    if (c->memflags == 0) {
        struct tether__conn_extra *ex = tether__conn_extra(c);
        if (ex == NULL) {
            return false;
        }
        ex->mem_prev = NULL;
        ex->mem_next = m->blocked;
        if (m->blocked != NULL) {
            m->blocked->ex->mem_prev = c;
        }
        m->blocked = c;
    }
    if (what & TETHER__MF_PAUSED) {
        m->pauses++;
    } else {
        m->refusals++;
    }
    c->memflags |= what;
    if (what & TETHER__MF_PAUSED) {
        tether__conn_update_io(c);
    }
    return true;
}

void tether__mem_conn_unblock(tether_conn *c)
{
    mem_unlink(c);
    c->memflags = 0;
}

static void mem_resume_cb(struct tether__pending *p)
{
    struct tether__mem *m = tether__container_of(p, struct tether__mem, resume);
    if (m->over) {
        return; /* over again before this ran: stay held back */
    }
    while (m->blocked != NULL) {
        tether_conn *c = m->blocked;
        uint8_t what = c->memflags;
        mem_unlink(c);
        c->memflags = 0;
        if (c->state != TETHER__CS_READY) {
            continue;
        }
        if (what & TETHER__MF_PAUSED) {
            tether__conn_update_io(c);
            if (c->tr != NULL && c->tr->ops->has_pending(c->tr)) {
                tether__conn_todo(c, TETHER__CT_PARSE); /* TLS input epoll cannot see */
            }
        }
        if (what & TETHER__MF_REFUSED) {
            c->flags &= (uint16_t)~TETHER__CF_WANT_DRAIN;
            c->flags |= TETHER__CF_DRAIN_DUE;
            tether__flush_queue(c->h.loop, &c->flush); /* fires on_drain from the loop */
        }
    }
}

int tether_loop_set_mem_limit(tether_loop *loop, size_t bytes)
{
    if (loop == NULL) {
        return TETHER_EINVAL;
    }
    struct tether__mem *m = tether__mem_get(loop);
    if (m == NULL) {
        return TETHER_ENOMEM;
    }
    mem_set_limit(m, bytes);
    return TETHER_OK;
}

int tether_loop_get_mem_stats_sized(tether_loop *loop, tether_mem_stats *st, size_t size)
{
    if (loop == NULL || st == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    struct tether__mem *m = tether__mem_get(loop);
    if (m == NULL) {
        return TETHER_ENOMEM;
    }
    tether_mem_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    s.limit = m->limit == SIZE_MAX ? 0 : m->limit;
    s.input_bytes = m->in_bytes;
    s.output_bytes = m->out_bytes;
    s.conns = m->conns;
    s.over = m->over;
    s.pauses = m->pauses;
    s.refusals = m->refusals;
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}
