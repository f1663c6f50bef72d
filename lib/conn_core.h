/* SPDX-License-Identifier: MIT */
/* Declarations shared only by the files that make up a connection: the
 * state machine and public API (conn.c), the options (conn_opts.c), the
 * write queue and write path (wqueue.c), the read path (conn_read.c) and
 * liveness (liveness.c). Dialling, listeners, reconnecting clients and the
 * blocking API need conn.h alone.
 *
 * What runs once per message is static inline here, so that the split
 * into files costs no function calls on the hot paths. */
#ifndef TETHER_CONN_CORE_H
#define TETHER_CONN_CORE_H

#include <stdarg.h>
#include <sys/uio.h>

#include "conn.h"

/* Queued bytes that trigger a write inside send(). Measured with
 * tether_bench (thr tcp, 64 B and 1 KiB): 32-48 KiB writes keep the
 * receiver busy in parallel; 64 KiB writes ran 1 KiB messages at a third
 * of the rate on loopback, and 16-24 KiB cost more system calls. */
#define TETHER__FLUSH_BATCH (32u * 1024u)

/* The same for tether_conn_send_batch() (send_batch.c), where send_hwm is
 * above it: an application that sends in batches makes a stream of small
 * messages, and writing it 64 KiB at a time (what a program framing many
 * messages into one buffer by hand writes) halves the system calls per
 * byte and the kernel's per-write cost on both sides (thr tcp 64 B: 0.0020
 * sends per message before, 0.0010 after). Single sends keep
 * TETHER__FLUSH_BATCH: a dispatch's sends are written when it ends anyway,
 * and so are a batch's. */
#define TETHER__FLUSH_BULK (64u * 1024u)

/* ---- conn.c: the state machine ----------------------------------------- */

/* Queues deferred work for the connection's pending callback. */
static inline void tether__conn_todo(tether_conn *c, uint8_t what)
{
    c->todo |= what;
    if (!(c->todo & TETHER__CT_HELD)) {
        tether__pending_queue(c->h.loop, &c->pend);
    }
}

/* Sets the socket's epoll interest from the state and the flags. */
void tether__conn_update_io(tether_conn *c);

/* Fails with the transport's own detail, prefixed with what we were doing
 * ("read", "write") (conn_fail.c). */
void tether__conn_fail_io(tether_conn *c, int rv, const char *what);

/* Records a printf-style detail in the connection's own buffer
 * (conn_fail.c); out of memory, the previous detail stays. */
void tether__conn_vset_err(tether_conn *c, const char *fmt, va_list ap);

/* Starts closing: CLOSING flushes the queue (bounded by the close
 * timeout), then shuts the transport down. */
void tether__conn_begin_close(tether_conn *c);

/* The queue is empty in CLOSING: shut the transport down (TLS
 * close_notify, FIN), then linger or finish. */
void tether__conn_begin_shutdown(tether_conn *c);

/* ---- wqueue.c and wq_seg.c: the output queue and the write path -------- */

/* The loop's cache of output segments (wq_seg.c), created on first use
 * and freed with the loop; NULL if it cannot be allocated. */
struct tether__seg_cache *tether__seg_cache_get(tether_loop *loop);

/* Releases every queued segment, calling the zero-copy free callbacks. */
void tether__wq_release_all(tether_conn *c);

/* tether__wq_release_all(), called only when there is something to
 * release or to take off the memory budget. */
static inline void tether__conn_release_queue(tether_conn *c)
{
    if (c->wq_head != NULL || c->queued != 0 || c->qacct != 0) {
        tether__wq_release_all(c);
    }
}

/* Appends pieces as copies: what fits goes into the tail segment, the rest
 * into one new segment. All or nothing on allocation failure. */
int tether__wq_append_copy(tether_conn *c, const struct iovec *iov, int n, size_t total);

/* Room for need bytes at the end of the queue (the tail segment, or a new
 * one); NULL when out of memory. tether__wq_commit() adds what was
 * written there (below). */
uint8_t *tether__wq_reserve_slow(tether_conn *c, size_t need);
static inline uint8_t *tether__wq_reserve(tether_conn *c, size_t need)
{
    struct tether__wseg *t = c->wq_tail;
    if (TETHER__LIKELY(t != NULL && t->cap != 0 &&
                       t->cap - (size_t)(t->ptr - t->data) - t->len >= need)) {
        return (uint8_t *)t->ptr + t->len;
    }
    return tether__wq_reserve_slow(c, need);
}

/* Makes sure the loop holds a reference record for the next
 * tether__wq_append_ref(), so that it cannot fail: a zero-copy send
 * calls it before it writes or queues anything. TETHER_ENOMEM if out of
 * memory. */
int tether__wq_ref_reserve(tether_conn *c);

/* Appends a reference to the caller's data (zero-copy); fcb(fdata, fud)
 * runs once it is written or released. TETHER_ENOMEM only when no record
 * was reserved and none can be allocated. */
int tether__wq_append_ref(tether_conn *c, const uint8_t *data, size_t len, tether_free_cb fcb,
                          void *fdata, void *fud);

/* Writes as much of the queue as the socket takes. */
void tether__conn_flush(tether_conn *c);

/* The same, whole multiples of TETHER__FLUSH_BATCH only: a write inside
 * send(), which leaves the bytes behind the last batch to the next one or
 * to the end of the dispatch. Batches of whole TLS records (16 KiB) make
 * no record of the few bytes of the last message that crossed the
 * threshold. */
void tether__conn_flush_batch(tether_conn *c);

/* End of a dispatch to this connection: send what the callbacks queued
 * and fire on_drain when it is due. */
void tether__conn_dispatch_end(tether_conn *c);

/* The same, with its common case inline: write what the dispatch queued;
 * the rest (on_drain, and what it queues) only when due. */
static inline void tether__conn_dispatch_end_fast(tether_conn *c)
{
    if (c->wq_head != NULL && !(c->flags & TETHER__CF_WBLOCKED)) {
        tether__conn_flush(c);
    }
    if (TETHER__UNLIKELY(c->flags & TETHER__CF_DRAIN_DUE) ||
        (c->wq_head != NULL && !(c->flags & TETHER__CF_WBLOCKED))) {
        tether__conn_dispatch_end(c);
    }
}

/* The loop's pre-poll flush hook of a connection (c->flush). */
void tether__conn_flush_cb(struct tether__flush *f);

/* After a message was queued: write at once when at least `at` bytes
 * (TETHER__FLUSH_BATCH or TETHER__FLUSH_BULK) are waiting, otherwise make
 * sure the queue is flushed when the current dispatch ends (or before the
 * loop polls, for a send from outside this connection's callbacks). */
static inline void tether__conn_after_queue_at(tether_conn *c, size_t at)
{
    if (c->queued >= at && c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_WBLOCKED)) {
        tether__conn_flush_batch(c);
        if ((c->flags & TETHER__CF_DRAIN_DUE) || (c->wq_head != NULL && c->dispatching == 0)) {
            tether__flush_queue(c->h.loop, &c->flush);
        }
    } else if (c->dispatching == 0 && c->flush.next == NULL) {
        /* (Not queued yet: the second of a run of sends made outside a
         * dispatch finds it queued, without a call.) */
        tether__flush_queue(c->h.loop, &c->flush);
    }
}

/* The same for a message queued by send(). */
static inline void tether__conn_after_queue(tether_conn *c)
{
    tether__conn_after_queue_at(c, TETHER__FLUSH_BATCH);
}

/* ---- conn_ref.c: thread-safe references ------------------------------ */

/* The connection's on_close has run (or it is being freed): closes its
 * reference slot (waiting for any push in progress on it) and reports what
 * is still pending there. Its output is final by then: written, or
 * released unwritten. */
void tether__conn_ref_gone(tether_conn *c);

/* Output was written while the reference waits for it (TETHER__CH_REF):
 * schedules the reference's work (delivery reports, held-back sends). */
void tether__conn_ref_wrote(tether_conn *c);

/* ---- conn_read.c: the read path -------------------------------------- */

/* conn->memflags: what the budget holds back on a connection (it is on
 * the budget's blocked list while any is set). */
#define TETHER__MF_PAUSED 0x01u  /* reading stopped */
#define TETHER__MF_REFUSED 0x02u /* a send was refused: on_drain once it clears */

/* The connection takes messages now: established and not paused. */
static inline bool tether__conn_can_deliver(const tether_conn *c)
{
    return c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_PAUSED);
}

/* The connection may read now: it takes messages and the memory budget
 * does not hold it back. (Input already buffered is still delivered while
 * only the budget holds the connection back.) */
static inline bool tether__conn_can_read(const tether_conn *c)
{
    return tether__conn_can_deliver(c) && !(c->memflags & TETHER__MF_PAUSED);
}

/* The interest of an established connection in its socket, besides what
 * its transport wants for itself: input unless paused or at EOF, and
 * writability while the socket is full. */
static inline unsigned tether__conn_ready_events(const tether_conn *c)
{
    unsigned ev = 0;
    if (!(c->flags & (TETHER__CF_PAUSED | TETHER__CF_EOF)) && !(c->memflags & TETHER__MF_PAUSED)) {
        ev |= TETHER_EV_READ;
    }
    if (c->flags & TETHER__CF_WBLOCKED) {
        ev |= TETHER_EV_WRITE;
    }
    return ev;
}

/* Reads what the transport has (a few rounds at most) and delivers the
 * whole frames. */
void tether__conn_read(tether_conn *c);

/* The loop's readiness report for an established connection on a plain
 * socket (conn.c's watcher callback hands it over): flushes on
 * writability, reads, and ends the dispatch. Here, with the read path
 * inline, so that a report costs one call. */
void tether__conn_on_io_plain(tether_conn *c, unsigned revents);

/* The watcher callback of a connection whose transport is the plain one
 * for its whole life (listener.c sets it for a plain listener's sockets
 * once they are established): READY goes to the plain dispatch without
 * conn.c's test of the transport on the way, any other state to
 * tether__conn_on_io_other(). */
void tether__conn_io_plain_cb(struct tether__io *io, unsigned revents);

/* conn.c's watcher callback for a connection in any state but READY on a
 * plain socket: lingering, handshaking, closing. */
void tether__conn_on_io_other(tether_conn *c, unsigned revents);

/* After a dispatch whose read ended the connection (conn.c): reports the
 * close and frees it now when that is all the deferred work would do. */
void tether__conn_end_in_dispatch(tether_conn *c);

/* The peer's FIN, read in c's own dispatch (dispatching 1), ends an
 * accepted connection that has nothing else due (conn_read.c checks):
 * fails it with TETHER_EOF, reports the close and frees it in one call,
 * the steps the read's EOF and tether__conn_end_in_dispatch() would take
 * one after the other (conn.c). c is freed on return. */
void tether__conn_end_eof(tether_conn *c);

/* Parses what rpart holds (after a resume, or once a large frame is in). */
void tether__conn_parse_rpart(tether_conn *c);

/* Fails with "connection reset by peer during <what>", suggesting tls://
 * to a plain client that has heard nothing from its server. */
void tether__conn_fail_reset(tether_conn *c, const char *what);

/* Reads and discards after our FIN, until the peer's FIN: true when the
 * lingering is over (the peer's FIN, or a failed read), for the caller to
 * end the connection. */
bool tether__conn_linger_read(tether_conn *c);

/* The loop's readiness report for a lingering connection already
 * reported closed and with no deferred work due (conn.c's watcher
 * callback hands it over): reads and drops, and at the peer's FIN frees
 * the connection there and then (conn_finish() for LINGER without its
 * stops and the close, which the free makes). */
void tether__conn_on_io_linger(tether_conn *c);

/* conn_linger.c: how long a connection lingers after its FIN at most. */
#define TETHER__LINGER_MS 2000u
/* Sets up the loop's linger list and timer (with its budget, m). */
void tether__linger_init(struct tether__mem *m);
/* Stops the linger timer (from the budget's cleanup). */
void tether__linger_fini(struct tether__mem *m);
/* (tether__linger_add(), inline, follows struct tether__mem below.) */
/* The connection stops lingering (the peer's FIN, an error, the
 * deadline): off the list, if it is on it. (Inline: the end of every
 * connection closed by us.) */
static inline void tether__linger_remove(tether_conn *c)
{
    if (c->linger_node.next != NULL) {
        tether__queue_remove(&c->linger_node);
        c->wq_head = NULL; /* the output queue, empty, in the same bytes */
        c->wq_tail = NULL;
    }
}

/* ---- liveness.c: control frames, heartbeats and timeouts -------------- */

/* Allocates c->ex->live for a configuration with a liveness option (at
 * creation, or on demand when cfg->live_lazy). */
int tether__live_new(tether_conn *c);

/* The connection is established: takes the first timestamps, draws the
 * maximum age, and arms the timer. */
void tether__live_start(tether_conn *c);

/* The part of becoming READY that every connection shares (conn.c's
 * conn_became_ready(), listener.c's inline set-up of a plain accepted
 * socket): the state, the time (uptime), no handshake deadline any more,
 * the liveness timers started where configured. */
static inline __attribute__((always_inline)) void tether__conn_mark_ready(tether_conn *c)
{
    c->state = TETHER__CS_READY;
    c->ready_at = tether__loop_time(c->h.loop);
    if (TETHER__UNLIKELY(c->ex != NULL)) {
        tether__conn_timer_stop(c);
        tether__conn_extra_trim(c); /* (an accepted TLS connection's deadline) */
    }
    if (c->hooks & TETHER__CH_LIVE) {
        tether__live_start(c);
    }
}

/* An accepted connection is the application's now: on_accept, once
 * (conn.c's conn_became_ready(), listener.c's plain set-up). It may
 * close, abort or pause the connection. */
static inline __attribute__((always_inline)) void tether__conn_report_accept(tether_conn *c)
{
    c->flags |= TETHER__CF_ACCEPT_DONE;
    c->h.hidden = false; /* the application has it now */
    if (c->cfg->on_accept != NULL) {
        c->dispatching++;
        c->cfg->on_accept(c->cfg->listener, c, c->cfg->accept_ud);
        c->dispatching--;
    }
}

/* Arms the timer for the earliest check that could fail or ping; on a
 * lazy configuration frees c->ex->live when there is none. */
void tether__live_arm(tether_conn *c);

/* Reading resumed (cfg->live): the silence while paused does not count. */
void tether__live_resume(tether_conn *c);

/* Queues our HELLO control frame (heartbeat negotiation). */
int tether__ctrl_queue_hello(tether_conn *c);

/* Queues a control frame of `type` with payload p[0..n) (n at most the
 * largest payload the types have) behind whatever is queued. */
int tether__ctrl_queue(tether_conn *c, uint8_t type, const uint8_t *p, size_t n);

/* The peer's HELLO arrived, announcing heartbeats every peer_ms: starts
 * ours (negotiated interval, a first PING) when we have them. */
void tether__live_on_hello(tether_conn *c, uint32_t peer_ms);

/* A PONG answered one of our PINGs: counts it and takes the round-trip
 * time from its payload. */
void tether__live_on_pong(tether_conn *c, const uint8_t *p, size_t n);

/* The queue went from empty to non-empty: the write timeout counts from
 * here when nothing moves. */
void tether__live_queue_started(tether_conn *c);

/* A flush ended with TETHER__CF_QSTART_DUE set: output it left queued is
 * watched from now (the queue started in this iteration: same time). */
void tether__live_qstart_due(tether_conn *c);

/* ---- writes past the queue (wqueue.c, conn_ws.c) ----------------------- */

/* w bytes of a message written from the caller's memory went out past the
 * queue: counted, and progress for the write timeout (as flush_finish() in
 * wqueue.c stamps it for the queue). */
static inline void tether__conn_direct_wrote(tether_conn *c, size_t w)
{
    c->bytes_out += w;
    if (w > 0 && (c->hooks & TETHER__CH_LIVE)) {
        c->ex->live->wstall = c->ex->live->last_wprog = tether__loop_time(c->h.loop);
    }
}

/* The part of such a message the socket did not take was queued (rv: how
 * that went): an out-of-memory fails the connection, since part of the
 * frame is on the wire and the stream cannot be kept consistent without
 * the rest; otherwise the queue is watched. The send itself succeeded:
 * TETHER_OK either way. */
static inline int tether__conn_direct_queued(tether_conn *c, int rv)
{
    if (rv != TETHER_OK) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
        return TETHER_OK;
    }
    if (c->flags & TETHER__CF_QSTART_DUE) {
        tether__live_qstart_due(c); /* no flush follows while the socket is full */
    }
    tether__conn_update_io(c);
    return TETHER_OK;
}

/* After a read: notices when an incomplete frame starts, for the frame
 * timeout. */
void tether__live_after_read(tether_conn *c);

/* Handles one complete control frame (HELLO, PING, PONG, GOAWAY). Returns
 * false when the connection failed or is closing. */
bool tether__ctrl_on_frame(tether_conn *c, const uint8_t *frame, size_t len);

/* Both sides speak control frames (HELLO sent and received). */
bool tether__ctrl_negotiated(const tether_conn *c);

/* Queues a GOAWAY control frame (flags, reason, text truncated to the
 * wire limit) behind what is queued. */
int tether__ctrl_queue_goaway(tether_conn *c, uint8_t flags, uint16_t code, const char *text);

/* ---- drain.c: GOAWAY with the drain flag ------------------------------ */

/* Starts a drain we ask for: queues GOAWAY(drain) and arms the deadline
 * (negative: none). The connection must be READY and negotiated. */
int tether__drain_start(tether_conn *c, uint16_t code, const char *text, int deadline_ms);

/* A GOAWAY with the drain flag arrived (text already made printable).
 * Returns true when the connection goes on reading. */
bool tether__drain_on_goaway(tether_conn *c, uint8_t flags, uint16_t code, const char *text);

/* The drain's deadline passed (its timer, or a listener shutdown's):
 * close now, reporting TETHER_ETIMEDOUT. */
void tether__drain_expire(tether_conn *c);

/* The connection is freed: frees c->ex->drain. */
void tether__drain_free(tether_conn *c);

/* ---- conn_proxy.c: the PROXY protocol header ------------------------ */

/* A connection got its socket: prepares the header to send (dialled, with
 * tether_conn_opts::proxy_protocol) or to receive (accepted by a listener
 * that requires one) in c->ex->pp, and for the latter arms the header
 * deadline. Returns an error only when out of memory or when the header
 * cannot be built. */
int tether__pp_conn_start(tether_conn *c, bool server);

/* One non-blocking step of the header exchange, before the transport's
 * handshake: *done once it is sent or received and valid. Fails the
 * connection itself on error (and returns false). */
bool tether__pp_conn_step(tether_conn *c, bool *done);

/* The header exchange is in progress: the readiness it waits for. */
bool tether__pp_conn_pending(const tether_conn *c, unsigned *events);

/* The deadline passed while the header was still awaited. */
void tether__pp_conn_timeout(tether_conn *c);

/* Formats the client address the header announced; false when there is
 * none (no PROXY protocol, LOCAL, UNKNOWN). */
bool tether__pp_conn_source(const tether_conn *c, char *buf, size_t len);

/* Frees c->ex->pp. */
void tether__pp_conn_free(tether_conn *c);

/* Validates the PROXY options of a configuration and fills cfg->pp_source
 * (conn_opts.c calls it once the options are merged). */
int tether__pp_cfg_init(struct tether__conn_cfg *cfg, tether_error *err);

/* The total size of the control frame starting at hdr (4 bytes available),
 * or 0 when the peer may not send it now. A peer that never sent HELLO
 * gets exactly the framing error it got before control frames existed. */
size_t tether__ctrl_frame_len(const tether_conn *c, const uint8_t *hdr);

/* hdr starts a control frame that tether__ctrl_frame_len() refused (a
 * second HELLO, a known type before HELLO, or an unknown type on a
 * connection where control frames are spoken): fails the connection
 * naming the violation and returns true. False otherwise: to a plain
 * len32 peer such a header is just an oversized length. */
bool tether__ctrl_violation(tether_conn *c, const uint8_t *hdr);

/* The heartbeat interval to use given our options and the interval the
 * peer's HELLO announced. */
uint32_t tether__hb_negotiate(const tether_conn_opts *o, uint32_t peer_ms);

/* ---- membudget.c: the loop's memory budget ---------------------------- */

/* Per-loop accounting of the memory connections hold for their peers:
 * the capacity of the input buffers (rpart) and the queued output. Past
 * the limit, the connections holding the most stop reading and have their
 * sends refused, until usage falls to the low-water mark. */
/* Blocks of freed connections (or of their cold state) kept for the next
 * ones (conn_mem.c), up to TETHER__SPARES of each kind per loop (the
 * bound: at most 4 x (232 + the cold struct) bytes held beyond what
 * connections use, released by the budget's cleanup at tether_loop_free();
 * documented in tether/conn.h with the budget): malloc() and free() of
 * the two cost a connection that is set up and torn down about 270
 * instructions, the same blocks taken from here a few (issue #17). */
#define TETHER__SPARES 4
struct tether__spares {
    void *blk[TETHER__SPARES];
    unsigned n;
};

struct tether__mem {
    struct tether__loop_ext ext;
    tether_loop *loop;
    size_t in_bytes;  /* sum of rcap */
    size_t out_bytes; /* sum of queued */
    size_t limit;     /* SIZE_MAX: none */
    size_t lwm;       /* resume at or below this */
    size_t conns;     /* connections on the loop */
    /* (The loop's cache of small output segments: loop->segs.) */
    bool over; /* went past limit, not yet back to lwm */
    tether_conn *blocked;
    struct tether__pending resume;
    uint64_t pauses;
    uint64_t refusals;
    struct tether__spares spare_conns;  /* sizeof(struct tether_conn) each */
    struct tether__spares spare_extras; /* sizeof(struct tether__conn_extra) each */
    /* Lingering connections reported closed, oldest first, and the one
     * timer that ends them (conn_linger.c). */
    struct tether__queue linger_q;
    struct tether__tnode linger_timer;
};

/* conn_linger.c: a lingering connection was reported closed: its
 * deadline, LINGER_MS after now, is kept by the loop's list from here on.
 * (Inline: every connection closed by us joins; the loop's one timer is
 * started only when it is not armed.) */
static inline void tether__linger_add(tether_conn *c)
{
    tether_loop *loop = c->h.loop;
    struct tether__mem *m = loop->mem;
    /* A flush still queued (a send from outside its dispatch, before the
     * close) would look at the output queue, whose bytes the list takes
     * over: with nothing to write any more, it has nothing to do. */
    tether__flush_cancel(loop, &c->flush);
    c->linger_until = tether__loop_time(loop) + TETHER__LINGER_MS;
    tether__queue_insert_tail(&m->linger_q, &c->linger_node);
    if (!tether__tnode_active(&m->linger_timer)) {
        tether__tnode_start(loop, &m->linger_timer, TETHER__LINGER_MS);
    }
}

/* Frees the spare blocks (from the budget's cleanup; conn_mem.c). */
void tether__conn_spares_free(struct tether__mem *m);
/* The bytes a connection of cfg needs after its struct: a TLS transport
 * is built at c->tcp, the struct's last member, and runs on past it
 * (cfg->tls_tail, set with cfg->tls). */
static inline size_t tether__conn_tail(const struct tether__conn_cfg *cfg)
{
    return cfg->tls_tail;
}
/* conn_mem.c: a zeroed connection block (a spare one or a new one; NULL
 * if out of memory); one with tail bytes after it (tether__conn_tail()
 * != 0: a new one); and back to the spares (or free(): with a tail). */
tether_conn *tether__conn_block_new(struct tether__mem *m);
tether_conn *tether__conn_block_new_tail(size_t tail);
void tether__conn_block_drop(struct tether__mem *m, tether_conn *c, size_t tail);
/* conn_mem.c: closes the socket (through the transport, if any) and
 * frees a finished connection with all it holds. */
void tether__conn_destroy_transport(tether_conn *c);
void tether__conn_free(tether_conn *c);
/* conn_handshake.c: the connection's deadline timer (connect, handshake,
 * close). */
void tether__conn_timer_cb(struct tether__tnode *n);

/* conn_handshake.c: one step of a connection's handshakes (PROXY header,
 * then the transport's), as its socket becomes ready; at the end, the
 * connection is ready (tether__conn_became_ready()). */
void tether__conn_handshake_step(tether_conn *c);

/* conn.c: a connection whose handshakes are done is READY: reported
 * (on_connect / on_accept) and watched for its events. */
void tether__conn_became_ready(tether_conn *c);

/* The loop's budget, created with the defaults on first use; NULL if out
 * of memory. */
struct tether__mem *tether__mem_get(tether_loop *loop);

void tether__mem_went_over(struct tether__mem *m);
void tether__mem_went_under(struct tether__mem *m);

/* Over the budget, a connection that holds (or would hold) held bytes,
 * more than its share and more than a small floor, is "heavy": it may not
 * read or queue more. */
bool tether__mem_heavy(const tether_conn *c, size_t held);

/* Holds a heavy connection back (TETHER__MF_*); it is released when
 * usage falls to the low-water mark. False when out of memory for its
 * place on the list (c->ex): the connection is not held back then. */
bool tether__mem_block(tether_conn *c, uint8_t what);

/* The connection is freed: leaves the blocked list (unblock: off it,
 * memflags 0) and the count. (The test inline: every free asks, and few
 * connections are on the list.) */
void tether__mem_conn_unblock(tether_conn *c);
static inline void tether__mem_conn_gone(tether_conn *c)
{
    if (c->memflags != 0) {
        tether__mem_conn_unblock(c); /* (off the list; memflags 0) */
    }
    tether__conn_mem(c)->conns--;
}

static inline void tether__mem_add(struct tether__mem *m, size_t *counter, size_t n)
{
    *counter += n;
    if (TETHER__UNLIKELY(m->in_bytes + m->out_bytes > m->limit)) {
        tether__mem_went_over(m);
    }
}

static inline void tether__mem_sub(struct tether__mem *m, size_t *counter, size_t n)
{
    *counter -= n;
    if (TETHER__UNLIKELY(m->over) && m->in_bytes + m->out_bytes <= m->lwm) {
        tether__mem_went_under(m);
    }
}

/* The bytes of c->queued the memory budget has not counted yet. The
 * small-message path of tether_conn_send() only adds to c->queued (a
 * few instructions per message count); every write, segment allocation
 * and release syncs, so the budget lags by less than one segment, and
 * queued only grows between two syncs: the difference of the low 32 bits
 * is the lag (c->qacct). */
static inline size_t tether__conn_qlag(const tether_conn *c)
{
    return (uint32_t)((uint32_t)c->queued - c->qacct);
}

/* Brings the budget's count of queued output up to date with c->queued,
 * which now grows by n (queued_add) or shrinks by n (queued_sub). */
static inline void tether__conn_queued_add(tether_conn *c, size_t n)
{
    struct tether__mem *m = tether__conn_mem(c);
    size_t lag = tether__conn_qlag(c);
    c->queued += n;
    c->qacct = (uint32_t)c->queued;
    tether__mem_add(m, &m->out_bytes, lag + n);
}

static inline void tether__conn_queued_sub(tether_conn *c, size_t n)
{
    struct tether__mem *m = tether__conn_mem(c);
    size_t lag = tether__conn_qlag(c);
    c->queued -= n;
    c->qacct = (uint32_t)c->queued;
    if (lag >= n) {
        tether__mem_add(m, &m->out_bytes, lag - n);
    } else {
        tether__mem_sub(m, &m->out_bytes, n - lag);
    }
}

/* Free bytes at the end of copy segment s. */
static inline size_t tether__wseg_room(const struct tether__wseg *s)
{
    return s->cap - (size_t)(s->ptr - s->data) - s->len;
}

/* Copies n <= 64 bytes with fixed-size moves that overlap in the middle
 * (as memcpy does for small sizes), inline: the per-message paths then
 * keep their state in registers across the copy instead of around a
 * call (send_batch.c's runs, conn_send_plain()). */
static inline void tether__copy_small(uint8_t *d, const uint8_t *s, size_t n)
{
    if (n >= 16) {
        if (n > 32) {
            memcpy(d, s, 32);
            memcpy(d + n - 32, s + n - 32, 32);
        } else {
            memcpy(d, s, 16);
            memcpy(d + n - 16, s + n - 16, 16);
        }
    } else if (n >= 4) {
        if (n >= 8) {
            memcpy(d, s, 8);
            memcpy(d + n - 8, s + n - 8, 8);
        } else {
            memcpy(d, s, 4);
            memcpy(d + n - 4, s + n - 4, 4);
        }
    } else if (n > 0) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

/* Room at the end of the tail segment, if it is a copy segment. */
static inline size_t tether__wq_tail_room(const tether_conn *c)
{
    const struct tether__wseg *t = c->wq_tail;
    return t != NULL && t->cap != 0 ? tether__wseg_room(t) : 0;
}

/* Adds the n bytes written at tether__wq_reserve()'s pointer to the queue. */
static inline void tether__wq_commit(tether_conn *c, size_t n)
{
    c->wq_tail->len += n;
    tether__conn_queued_add(c, n);
}

/* Frees the input buffer, if there is one (conn_read.c; the test inline:
 * most connections that end or go idle have none). */
void tether__conn_rpart_drop(tether_conn *c);
static inline void tether__conn_rpart_free(tether_conn *c)
{
    if (c->rb != NULL) {
        tether__conn_rpart_drop(c);
    }
}

#endif /* TETHER_CONN_CORE_H */
