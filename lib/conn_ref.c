/* SPDX-License-Identifier: MIT */
/* Thread-safe connection references (tether/ref.h): the process-wide slot
 * table with generations, each loop's queue of operations from other
 * threads (a lock-free MPSC queue drained in batches on the loop), and the
 * loop side that hands those operations to the connections, holds sends
 * back while a connection's queue is full and reports every accepted
 * message as written or failed.
 *
 * A slot's state word packs its generation (high 32 bits), an OPEN bit and
 * a count of senders inside a push ("pins"). A sender pins the slot with a
 * compare-and-swap that also checks generation and OPEN, pushes, and
 * unpins. Freeing the connection clears OPEN and waits for the pins to
 * drain; only then is the slot's loop-side state torn down and the slot
 * reused with the next generation. So a pinned sender always sees a live
 * loop and hub, and nothing a sender touches is ever freed: the table's
 * chunks live as long as the process. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "conn_core.h"
#include "mpsc.h"

#define REF_CHUNK_BITS 10u
#define REF_CHUNK_SLOTS (1u << REF_CHUNK_BITS)
#define REF_CHUNKS 1024u
#define REF_MAX_SLOTS (REF_CHUNKS * REF_CHUNK_SLOTS) /* index 0 is never used */

/* Operations one loop iteration takes from the queue at most. */
#define REF_BATCH_MAX 1024u

#define ST_OPEN 0x80000000ull
#define ST_PINS 0x7fffffffull
#define ST_GEN(st) ((uint32_t)((st) >> 32))

enum ref_kind {
    K_SEND,
    K_CLOSE,
    K_WORK,
    K_DRAIN
};

/* One operation from any thread. Allocated by the caller of the public
 * function, freed on the owning loop (or on the notified loop, for a
 * drain notification posted there). */
struct ref_node {
    struct tether__mpsc_node mn;
    struct ref_node *next; /* loop-side lists */
    uint64_t id;
    uint8_t kind;
    int status;
    tether_ref_cb cb;        /* K_SEND, K_DRAIN */
    tether_ref_work_cb work; /* K_WORK */
    void *ud;
    tether_loop *notify;      /* K_DRAIN: the loop to post the notification to */
    struct tether__post post; /* ... with this node */
    uint64_t end;             /* K_SEND handed over: stream offset of its last byte */
    size_t len;
    uint8_t data[];
};

struct ref_list {
    struct ref_node *head;
    struct ref_node *tail;
};

struct ref_hub;

struct ref_slot {
    _Atomic uint64_t state;
    atomic_size_t xbytes; /* payload accepted and not yet handed to the connection */
    atomic_bool closing;  /* the loop saw the connection refuse or close: refuse sends */
    /* Set by the owning loop before OPEN is published; read by pinned senders. */
    struct ref_hub *hub;
    size_t hwm;
    size_t lwm;
    size_t max_msg;
    /* The owning loop's thread only. */
    tether_conn *conn;
    struct ref_list ops;     /* operations not yet carried out, in order */
    struct ref_list written; /* sends with a callback, handed over, waiting for the write */
    struct ref_list drains;  /* drain requests waiting for xbytes <= lwm */
    struct ref_slot *dirty_next;
    bool dirty;
    uint32_t free_next; /* the free list (under ref_tab_mu) */
};

/* Per-loop state: the queue other threads push to and the loop's work. */
struct ref_hub {
    struct tether__loop_ext ext;
    tether_loop *loop;
    struct tether__mpsc q;
    atomic_bool scheduled;       /* post is queued or its callback has not emptied q yet */
    struct tether__post post;    /* takes the batch: posted by the first push */
    struct tether__pending pend; /* loop-side work: dirty slots, reports */
    struct ref_slot *dirty;      /* slots with work to look at */
    struct ref_list done;        /* nodes to report */
};

static _Atomic(struct ref_slot *) ref_chunks[REF_CHUNKS];
static pthread_mutex_t ref_tab_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t ref_free_head;      /* 0: empty */
static uint32_t ref_next_fresh = 1; /* the next never-used index */

static const char ref_hub_key; /* tether__loop_ext key */

static void list_add(struct ref_list *l, struct ref_node *n)
{
    n->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = n;
    } else {
        l->head = n;
    }
    l->tail = n;
}

static struct ref_node *list_pop(struct ref_list *l)
{
    struct ref_node *n = l->head;
    if (n != NULL) {
        l->head = n->next;
        if (l->head == NULL) {
            l->tail = NULL;
        }
        n->next = NULL;
    }
    return n;
}

static struct ref_slot *slot_at(uint32_t idx)
{
    struct ref_slot *chunk =
        atomic_load_explicit(&ref_chunks[idx >> REF_CHUNK_BITS], memory_order_acquire);
    return chunk != NULL ? &chunk[idx & (REF_CHUNK_SLOTS - 1)] : NULL;
}

/* ---- the sender's side ------------------------------------------------- */

/* Pins the slot of a live reference. */
static struct ref_slot *slot_pin(tether_ref ref, int *rv)
{
    uint32_t idx = (uint32_t)ref.id;
    uint32_t gen = (uint32_t)(ref.id >> 32);
    struct ref_slot *s = NULL;
    if (idx != 0 && gen != 0 && idx < REF_MAX_SLOTS) {
        s = slot_at(idx);
    }
    if (s == NULL) {
        *rv = TETHER_EINVAL; /* never issued */
        return NULL;
    }
    uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
    for (;;) {
        if (ST_GEN(st) != gen || !(st & ST_OPEN)) {
            *rv = TETHER_ECLOSED;
            return NULL;
        }
        if (atomic_compare_exchange_weak_explicit(&s->state, &st, st + 1, memory_order_acquire,
                                                  memory_order_acquire)) {
            return s;
        }
    }
}

static void slot_unpin(struct ref_slot *s)
{
    atomic_fetch_sub_explicit(&s->state, 1, memory_order_release);
}

static void hub_on_post(tether_loop *loop, void *ud);

/* Pushes a node; the first push of a batch schedules the loop's drain
 * (one eventfd write, through the loop's post queue). The slot is pinned,
 * so the hub and its loop are alive. */
static void hub_schedule(struct ref_hub *hub)
{
    if (!atomic_exchange(&hub->scheduled, true)) {
        tether__loop_post_node(hub->loop, &hub->post, hub_on_post, hub);
    }
}

static void hub_push(struct ref_hub *hub, struct ref_node *n)
{
    tether__mpsc_push(&hub->q, &n->mn);
    hub_schedule(hub);
}

static struct ref_node *node_new(tether_ref ref, uint8_t kind, size_t len)
{
    struct ref_node *n = malloc(sizeof *n + len);
    if (n != NULL) {
        memset(n, 0, sizeof *n);
        n->id = ref.id;
        n->kind = kind;
        n->len = len;
    }
    return n;
}

/* Pins, pushes and unpins; frees the node on failure. */
static int ref_submit(tether_ref ref, struct ref_node *n)
{
    int rv = TETHER_OK;
    struct ref_slot *s = slot_pin(ref, &rv);
    if (s == NULL) {
        free(n);
        return rv;
    }
    if (n->kind == K_DRAIN && atomic_load_explicit(&s->closing, memory_order_relaxed)) {
        slot_unpin(s);
        free(n);
        return TETHER_ECLOSED; /* it will never drain */
    }
    hub_push(s->hub, n);
    slot_unpin(s);
    return TETHER_OK;
}

int tether_ref_send(tether_ref ref, const void *data, size_t len, tether_ref_cb cb, void *ud)
{
    if (data == NULL && len > 0) {
        return TETHER_EINVAL;
    }
    /* Allocate and copy before pinning: the pinned section is what a
     * connection's free may wait for, so it holds no allocation. */
    struct ref_node *n = node_new(ref, K_SEND, len);
    if (n == NULL) {
        return TETHER_ENOMEM;
    }
    if (len > 0) {
        memcpy(n->data, data, len);
    }
    n->cb = cb;
    n->ud = ud;
    int rv = TETHER_OK;
    struct ref_slot *s = slot_pin(ref, &rv);
    if (s == NULL) {
        free(n);
        return rv;
    }
    if (atomic_load_explicit(&s->closing, memory_order_relaxed)) {
        rv = TETHER_ECLOSED;
    } else if (len > s->max_msg) {
        rv = TETHER_EMSGSIZE;
    } else {
        size_t before = atomic_fetch_add(&s->xbytes, len);
        if (before >= s->hwm) {
            atomic_fetch_sub(&s->xbytes, len);
            rv = TETHER_EAGAIN;
        } else {
            hub_push(s->hub, n);
            n = NULL;
        }
    }
    slot_unpin(s);
    free(n);
    return rv;
}

int tether_ref_close(tether_ref ref)
{
    struct ref_node *n = node_new(ref, K_CLOSE, 0);
    return n != NULL ? ref_submit(ref, n) : TETHER_ENOMEM;
}

int tether_ref_post(tether_ref ref, tether_ref_work_cb cb, void *ud)
{
    if (cb == NULL) {
        return TETHER_EINVAL;
    }
    struct ref_node *n = node_new(ref, K_WORK, 0);
    if (n == NULL) {
        return TETHER_ENOMEM;
    }
    n->work = cb;
    n->ud = ud;
    return ref_submit(ref, n);
}

int tether_ref_on_drain(tether_ref ref, tether_loop *notify_loop, tether_ref_cb cb, void *ud)
{
    if (cb == NULL) {
        return TETHER_EINVAL;
    }
    struct ref_node *n = node_new(ref, K_DRAIN, 0);
    if (n == NULL) {
        return TETHER_ENOMEM;
    }
    n->cb = cb;
    n->ud = ud;
    n->notify = notify_loop;
    /* Held before the push: once pushed, the owning loop may post to it. */
    tether_loop_ref(notify_loop);
    int rv = ref_submit(ref, n);
    if (rv != TETHER_OK) {
        tether_loop_unref(notify_loop);
    }
    return rv;
}

size_t tether_ref_pending(tether_ref ref)
{
    int rv;
    struct ref_slot *s = slot_pin(ref, &rv);
    if (s == NULL) {
        return 0;
    }
    size_t n = atomic_load(&s->xbytes);
    slot_unpin(s);
    return n;
}

/* ---- the owning loop's side -------------------------------------------- */

static void drain_notify_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct ref_node *n = ud;
    n->cb((tether_ref){n->id}, n->status, n->ud);
    free(n);
}

/* Reports one node (user code runs here) and frees it. */
static void node_report(struct ref_node *n)
{
    tether_ref ref = {n->id};
    switch (n->kind) {
    case K_SEND:
        if (n->cb != NULL) {
            n->cb(ref, n->status, n->ud);
        }
        break;
    case K_WORK:
        n->work(NULL, n->status, n->ud);
        break;
    case K_DRAIN:
        if (n->notify != NULL) {
            tether_loop *nl = n->notify;
            tether__loop_post_node(nl, &n->post, drain_notify_cb, n);
            tether_loop_unref(nl); /* the post keeps it now */
            return;
        }
        n->cb(ref, n->status, n->ud);
        break;
    default:
        break;
    }
    free(n);
}

static void hub_done(struct ref_hub *hub, struct ref_node *n, int status)
{
    n->status = status;
    list_add(&hub->done, n);
    tether__pending_queue(hub->loop, &hub->pend);
}

static void hub_mark_dirty(struct ref_hub *hub, struct ref_slot *s)
{
    if (!s->dirty) {
        s->dirty = true;
        s->dirty_next = hub->dirty;
        hub->dirty = s;
    }
    tether__pending_queue(hub->loop, &hub->pend);
}

/* Carries out what a slot can do now: reports written messages, hands
 * operations to the connection in order until its queue is full, fires
 * drain requests. */
static void slot_run(struct ref_hub *hub, struct ref_slot *s)
{
    tether_conn *c = s->conn;
    while (s->written.head != NULL && s->written.head->end <= c->bytes_out) {
        hub_done(hub, list_pop(&s->written), TETHER_OK);
    }
    struct ref_node *n;
    while ((n = s->ops.head) != NULL) {
        if (n->kind == K_SEND) {
            /* Held back while the queue is full: tether_conn_send() would
             * refuse and arm the application's own on_drain. */
            if (c->queued >= c->cfg->o.send_hwm) {
                break;
            }
            int rv = tether_conn_send(c, n->data, n->len);
            if (rv == TETHER_EAGAIN) {
                break; /* the loop's memory budget: retried on write progress */
            }
            list_pop(&s->ops);
            atomic_fetch_sub(&s->xbytes, n->len);
            if (rv == TETHER_ECLOSED) {
                atomic_store_explicit(&s->closing, true, memory_order_relaxed);
            }
            if (rv != TETHER_OK) {
                hub_done(hub, n, rv);
            } else if (n->cb == NULL) {
                free(n);
            } else {
                /* Every byte ever queued is bytes_out + queued: the message
                 * is written once bytes_out passes its end. */
                n->end = c->bytes_out + c->queued;
                if (n->end <= c->bytes_out) {
                    hub_done(hub, n, TETHER_OK);
                } else {
                    list_add(&s->written, n);
                }
            }
        } else if (n->kind == K_CLOSE) {
            list_pop(&s->ops);
            atomic_store_explicit(&s->closing, true, memory_order_relaxed);
            tether_conn_close(c);
            free(n);
        } else if (n->kind == K_WORK) {
            list_pop(&s->ops);
            /* The slot is open, so on_close has not run yet. The work may
             * close c: it is freed from deferred work, never from here. */
            n->work(c, TETHER_OK, n->ud);
            free(n);
        } else {
            list_add(&s->drains, list_pop(&s->ops));
        }
    }
    if (s->drains.head != NULL && atomic_load(&s->xbytes) <= s->lwm) {
        while ((n = list_pop(&s->drains)) != NULL) {
            hub_done(hub, n, TETHER_OK);
        }
    }
    bool watch = s->written.head != NULL || s->ops.head != NULL;
    c->hooks = (uint8_t)(watch ? c->hooks | TETHER__CH_REF : c->hooks & ~TETHER__CH_REF);
}

static void hub_run(struct ref_hub *hub)
{
    while (hub->dirty != NULL) {
        struct ref_slot *s = hub->dirty;
        hub->dirty = s->dirty_next;
        s->dirty_next = NULL;
        s->dirty = false;
        slot_run(hub, s);
    }
    /* Reports last, and only those queued so far: their callbacks may
     * push, post or close, which queues more work for the next round. */
    struct ref_list done = hub->done;
    hub->done.head = hub->done.tail = NULL;
    struct ref_node *n;
    while ((n = list_pop(&done)) != NULL) {
        node_report(n);
    }
}

static void hub_pending_cb(struct tether__pending *p)
{
    hub_run(tether__container_of(p, struct ref_hub, pend));
}

/* Sorts one popped node to its slot, or fails it when the slot has moved
 * on (closed, or reused by another connection). */
static void hub_route(struct ref_hub *hub, struct ref_node *n)
{
    struct ref_slot *s = slot_at((uint32_t)n->id);
    uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
    if (ST_GEN(st) != (uint32_t)(n->id >> 32) || !(st & ST_OPEN)) {
        hub_done(hub, n, TETHER_ECLOSED);
        return;
    }
    list_add(&s->ops, n);
    hub_mark_dirty(hub, s);
}

/* The batch: takes everything pushed so far. */
static void hub_on_post(tether_loop *loop, void *ud)
{
    (void)loop;
    struct ref_hub *hub = ud;
    /* Cleared before popping: a push that the pops below miss (it lands
     * after them, or is half done) sees the flag clear and posts again. */
    atomic_store(&hub->scheduled, false);
    struct tether__mpsc_node *mn = NULL;
    for (unsigned i = 0; i < REF_BATCH_MAX; i++) {
        mn = tether__mpsc_pop(&hub->q);
        if (mn == NULL) {
            break;
        }
        hub_route(hub, tether__container_of(mn, struct ref_node, mn));
    }
    if (mn != NULL) {
        /* Producers outpace the loop: leave the rest for the next
         * iteration, so that I/O and timers are not starved meanwhile. */
        hub_schedule(hub);
    }
    hub_run(hub);
}

/* From tether_loop_free(): every connection is freed, so no slot of this
 * loop is open and no sender can push; the batch post has run (a queued
 * post makes tether_loop_free() refuse), and so has the pending work. */
static void hub_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    struct ref_hub *hub = tether__container_of(ext, struct ref_hub, ext);
    struct tether__mpsc_node *mn;
    while ((mn = tether__mpsc_pop(&hub->q)) != NULL) {
        struct ref_node *n = tether__container_of(mn, struct ref_node, mn);
        n->status = TETHER_ECLOSED;
        node_report(n);
    }
    struct ref_node *n;
    while ((n = list_pop(&hub->done)) != NULL) {
        node_report(n);
    }
    free(hub);
}

static struct ref_hub *hub_get(tether_loop *loop)
{
    bool fresh;
    struct ref_hub *hub =
        TETHER__LOOP_EXT_GET(loop, &ref_hub_key, struct ref_hub, ext, hub_cleanup, &fresh);
    if (hub != NULL && fresh) {
        hub->loop = loop;
        tether__mpsc_init(&hub->q);
        atomic_init(&hub->scheduled, false);
        tether__pending_init(&hub->pend, hub_pending_cb);
    }
    return hub;
}

/* A free slot index, or 0 when out of memory or the table is full. */
static uint32_t slot_alloc(void)
{
    uint32_t idx = 0;
    pthread_mutex_lock(&ref_tab_mu);
    if (ref_free_head != 0) {
        idx = ref_free_head;
        ref_free_head = slot_at(idx)->free_next;
    } else if (ref_next_fresh < REF_MAX_SLOTS) {
        uint32_t ci = ref_next_fresh >> REF_CHUNK_BITS;
        if (atomic_load_explicit(&ref_chunks[ci], memory_order_relaxed) == NULL) {
            /* Zeroed memory is a valid closed slot of generation 0; the
             * chunk is published before any index in it is handed out. */
            struct ref_slot *chunk = calloc(REF_CHUNK_SLOTS, sizeof *chunk);
            if (chunk != NULL) {
                atomic_store_explicit(&ref_chunks[ci], chunk, memory_order_release);
            }
        }
        if (atomic_load_explicit(&ref_chunks[ci], memory_order_relaxed) != NULL) {
            idx = ref_next_fresh++;
        }
    }
    pthread_mutex_unlock(&ref_tab_mu);
    return idx;
}

int tether_ref_get(tether_conn *c, tether_ref *out_ref)
{
    if (out_ref != NULL) {
        out_ref->id = 0;
    }
    if (c == NULL || out_ref == NULL) {
        return TETHER_EINVAL;
    }
    uint32_t have = tether__conn_ref_idx(c);
    if (have != 0) {
        struct ref_slot *s = slot_at(have);
        uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        out_ref->id = (uint64_t)ST_GEN(st) << 32 | have;
        return TETHER_OK;
    }
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF))) {
        return TETHER_ECLOSED;
    }
    struct ref_hub *hub = hub_get(c->h.loop);
    uint32_t idx = hub != NULL && tether__conn_extra(c) != NULL ? slot_alloc() : 0;
    if (idx == 0) {
        return TETHER_ENOMEM;
    }
    struct ref_slot *s = slot_at(idx);
    uint32_t gen = ST_GEN(atomic_load_explicit(&s->state, memory_order_relaxed)) + 1;
    if (gen == 0) {
        gen = 1; /* after 2^32 - 1 reuses: 0 marks "never issued" */
    }
    atomic_store_explicit(&s->xbytes, 0, memory_order_relaxed);
    atomic_store_explicit(&s->closing, false, memory_order_relaxed);
    s->hub = hub;
    s->hwm = c->cfg->o.send_hwm;
    s->lwm = c->cfg->o.send_lwm;
    s->max_msg = c->cfg->o.max_msg;
    s->conn = c;
    s->free_next = 0;
    /* Publishes the fields above to the senders that pin it. */
    atomic_store_explicit(&s->state, (uint64_t)gen << 32 | ST_OPEN, memory_order_release);
    c->ex->ref_idx = idx;
    out_ref->id = (uint64_t)gen << 32 | idx;
    return TETHER_OK;
}

void tether__conn_ref_gone(tether_conn *c)
{
    uint32_t idx = c->ex->ref_idx;
    struct ref_slot *s = slot_at(idx);
    struct ref_hub *hub = s->hub;
    c->ex->ref_idx = 0;
    c->hooks &= (uint8_t)~TETHER__CH_REF;
    /* No new pins from now on; wait out the pushes in progress (a few
     * instructions each, no allocation, no user code). */
    atomic_fetch_and(&s->state, ~ST_OPEN);
    while ((atomic_load_explicit(&s->state, memory_order_acquire) & ST_PINS) != 0) {
        sched_yield();
    }
    /* Written messages succeeded; the rest never will be. Reported from the
     * pending work, not from inside the connection's free. */
    struct ref_node *n;
    while ((n = list_pop(&s->written)) != NULL) {
        hub_done(hub, n, n->end <= c->bytes_out ? TETHER_OK : TETHER_ECLOSED);
    }
    while ((n = list_pop(&s->ops)) != NULL) {
        if (n->kind == K_CLOSE) {
            free(n);
        } else {
            hub_done(hub, n, TETHER_ECLOSED);
        }
    }
    while ((n = list_pop(&s->drains)) != NULL) {
        hub_done(hub, n, TETHER_ECLOSED);
    }
    if (s->dirty) {
        for (struct ref_slot **pp = &hub->dirty; *pp != NULL; pp = &(*pp)->dirty_next) {
            if (*pp == s) {
                *pp = s->dirty_next;
                break;
            }
        }
        s->dirty = false;
        s->dirty_next = NULL;
    }
    s->conn = NULL;
    s->hub = NULL;
    /* The state keeps this generation, closed: the next tether_ref_get()
     * that takes the slot moves it on. */
    pthread_mutex_lock(&ref_tab_mu);
    s->free_next = ref_free_head;
    ref_free_head = idx;
    pthread_mutex_unlock(&ref_tab_mu);
}

void tether__conn_ref_wrote(tether_conn *c)
{
    struct ref_slot *s = slot_at(c->ex->ref_idx);
    hub_mark_dirty(s->hub, s);
}
