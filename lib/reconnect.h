/* SPDX-License-Identifier: MIT */
/* Internal side of reconnecting clients (reconnect.c): the option checks
 * (client_opts.c) and the backoff schedule (backoff.c) as pure functions, so that the unit tests
 * can check it with their own random numbers and clock; and the client
 * object, shared with the move to a new connection on a drain
 * (reconnect_drain.c). */
#ifndef TETHER_RECONNECT_INT_H
#define TETHER_RECONNECT_INT_H

#include "internal.h"
#include "loop.h"
#include "random.h" /* tether__random_unit(), for the tests of the schedule */

/* gRPC's connection backoff (grpc/grpc doc/connection-backoff.md). */
struct tether__backoff {
    double initial_ms;
    double multiplier;
    double jitter; /* 0..1 */
    double max_ms;
    double current_ms; /* the un-jittered backoff of the last attempt; 0 after a reset */
};

void tether__backoff_init(struct tether__backoff *b, uint32_t initial_ms, double multiplier,
                          double jitter, uint32_t max_ms);

/* The next attempt uses the initial backoff again. */
void tether__backoff_reset(struct tether__backoff *b);

/* An attempt starts: advances the schedule and returns its backoff with
 * the jitter applied, in ms. r is a uniform random number in [0, 1): 0
 * gives the lowest value (backoff × (1 − jitter)), 0.5 the backoff itself.
 * Never negative. The next attempt starts this long after the start of
 * this one (or at once, if this one took longer). */
uint32_t tether__backoff_next(struct tether__backoff *b, double r);

/* Checks the options of tether_client_new() (client_opts.c): TETHER_OK, or
 * TETHER_EINVAL with a message in err naming the option. */
int tether__client_check_opts(const tether_client_opts *o, tether_error *err);

/* ---- delivery on a client (client_delivery.c, issue 14) ----------------- */

struct tether__cdone;   /* one tether_client_send_cb() */
struct tether__cdone_q; /* a client's reported completions */

/* tether_client_send() with a completion record (NULL for none), which the
 * client then owns: it reports through tether__cdone_written() or
 * tether__cdone_failed(). On error the record stays the caller's. */
int tether__client_send(tether_client *cl, const void *data, size_t len,
                        struct tether__cdone *done);

/* The client's completion queue slot (allocated by client_delivery.c). */
struct tether__cdone_q **tether__client_dq(tether_client *cl);

/* The message was written completely to a connection: reported from the
 * loop later (the write path must not call user code). */
void tether__cdone_written(struct tether__cdone_q *q, struct tether__cdone *d);

/* The message was handed back through on_undelivered: reported now. */
void tether__cdone_failed(tether_client *cl, struct tether__cdone *d, int reason);

/* The client is freed: reports what is still queued and frees the queue. */
void tether__cdone_q_free(struct tether__cdone_q *q);

/* Adds the client's call counters to its statistics (q may be NULL). */
void tether__cdone_stats(const struct tether__cdone_q *q, tether_stats *s);

/* ---- the client object (reconnect.c, reconnect_drain.c) --------------- */

struct cmsg {
    struct cmsg *next;
    uint64_t end; /* stream offset past its frame on the connection it was handed to */
    uint64_t seq; /* at-least-once: its number (client_alo.c); 0 otherwise */
    bool sent;    /* at-least-once: handed to a connection before */
    uint32_t off; /* client_pool.c: offset in its slab; 0 when from malloc() */
    struct tether__cdone *done; /* tether_client_send_cb() (client_delivery.c), or NULL */
    size_t len;
    uint8_t data[];
};

/* Slabs the records of a client are carved from (client_pool.c). */
#define TETHER__CSLAB_SIZE (64u * 1024u)
#define TETHER__CSLAB_MAX_REC (8u * 1024u) /* larger records come from malloc() */

struct tether__cslab;
struct tether__cpool {
    struct tether__cslab *cur;   /* records are carved from here */
    struct tether__cslab *spare; /* empty slabs kept for the next (client_pool.c) */
    uint32_t n_spare;
    struct tether__pending trim; /* frees both once nothing is held */
};

/* A record for len bytes of payload, its fields zeroed but for len; NULL
 * when out of memory. */
struct cmsg *tether__cmsg_new(tether_client *cl, size_t len);
/* Frees a record (its slab when it was the slab's last). */
void tether__cmsg_free(tether_client *cl, struct cmsg *m);
/* Frees the records from m up to stop (exclusive), following next. */
void tether__cmsg_free_run(tether_client *cl, struct cmsg *m, struct cmsg *stop);
/* Frees the slabs (the client is freed, holding nothing). */
void tether__cpool_clear(tether_client *cl);

enum timer_mode {
    TM_NONE,
    TM_WAIT,   /* the wait before the next attempt */
    TM_STABLE, /* the connection must stay up this long to reset the schedule */
    TM_CLOSE,  /* closing: the deadline for flushing what we hold */
};

#define T_START 0x1u  /* start an attempt */
#define T_DRAIN 0x2u  /* fire on_drain */
#define T_FINISH 0x4u /* the close is complete: hand back, report CLOSED */
#define T_FREE 0x8u
#define T_FEED 0x10u /* hand waiting records to the connection (after a drain) */

struct tether_client {
    /* First member (see struct tether__handle); active from creation until
     * freed, hidden from the walk once CLOSED has been reported. */
    struct tether__handle h;
    tether_loop *loop;
    char *url;
    tether_client_opts o;
    tether_conn_opts co; /* for every attempt: our callbacks, the shared TLS configuration */
    char *line_delim;
    tether_ws_opts *ws; /* our copy of conn_opts->ws (ws.h) */
    tether_tls_config *tls;
    tether_conn *conn; /* the current attempt or connection */

    tether_client_state state; /* last reported */
    struct tether__pending pend;
    unsigned todo;
    struct tether__tnode timer;
    uint8_t tmode;

    struct tether__backoff bo;
    uint64_t attempt_deadline; /* start of the last attempt + its backoff */
    uint32_t attempt;          /* attempts since the schedule started over */
    bool connected;            /* the current connection is established */
    bool stable;               /* ... and has passed stable_ms */
    bool closing;
    bool gave_up;
    bool want_drain;
    bool paused; /* tether_client_pause(): every connection starts paused */

    /* Delivery (client_delivery.c): completions to report, or NULL. */
    struct tether__cdone_q *dq;
    /* At-least-once streams (client_alo.c), or NULL. */
    struct tether__calo *alo;

    /* Messages held: head .. waiting (exclusive) are with the connection. */
    struct cmsg *head;
    struct cmsg *tail;
    struct cmsg *waiting;
    size_t held_bytes;
    size_t held_msgs;
    struct tether__cpool pool; /* record slabs (client_pool.c) */

    /* Statistics; the current connection's own counters are added. */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t msgs_in;
    uint64_t msgs_out;
    uint64_t connects;
    uint64_t attempts;
    uint64_t undelivered;
    uint32_t backoff_ms;
    uint32_t last_hb_ms;
    int64_t last_rtt_us;
    uint64_t pings_sent;
    uint64_t pongs_in;

    int last_reason;
    char err[TETHER_ERROR_MSG_MAX];

    /* ---- drain (reconnect_drain.c): connections that were asked to
     * drain, finishing while `conn` takes over, and the records the one
     * that has any (old_owner) was handed: its own list, in order before
     * head. ---- */
    struct tether__cdrain *olds;
    tether_conn *old_owner;
    struct cmsg *old_head;
    struct cmsg *old_tail;
    bool finished; /* CLOSED reported; freed once the drained connections are gone too */
};

/* Hooks of reconnect_drain.c into reconnect.c and back. */

/* c->ex->gnotify of every connection of a client: a drain started on it. */
void tether__client_gnotify(tether_conn *c);
/* c is one of the client's draining connections. */
bool tether__client_is_old(const tether_client *cl, const tether_conn *c);
/* A draining connection wrote output: frees its records written
 * completely. */
void tether__client_drain_prune(tether_client *cl, tether_conn *c);
/* Takes the first record of a drained connection off its list as done
 * (written, or acknowledged): counted, its completion reported, freed. */
void tether__client_old_done(tether_client *cl);
/* A draining connection closed (from its on_close): what it did not write
 * goes back in front of the waiting records. */
void tether__client_drain_closed(tether_client *cl, tether_conn *c, int reason);

/* tether_client_close(): the draining connections close too (gracefully:
 * what they hold is written, what the server still sends is not read). */
void tether__client_drain_close_all(tether_client *cl);

/* tether_client_pause()/resume(): the draining connections too. */
void tether__client_drain_pause(tether_client *cl, bool pause);

/* reconnect.c, for reconnect_drain.c. */
void tether__client_report(tether_client *cl, tether_client_state state, int reason,
                           const char *detail);
void tether__client_restart(tether_client *cl);
void tether__client_account(tether_client *cl, tether_conn *c);
void tether__client_undeliver(tether_client *cl, struct cmsg *m, int reason);

/* reconnect.c, for client_alo.c: frees the records from the head on that
 * are numbered up to seq and with the connection (acknowledged; counted
 * in msgs_out), returning how many; hands waiting records over. */
size_t tether__client_pop_acked(tether_client *cl, uint64_t seq);
void tether__client_feed(tether_client *cl);

/* ---- at-least-once streams (client_alo.c) ------------------------------ */

struct tether__calo;
int tether__calo_new(tether_client *cl);
void tether__calo_free(tether_client *cl);
/* Around tether_conn_dial() (begin true, then false): asks for acks, or
 * dials a plain connection after a failed probe (client_alo.c). */
void tether__calo_dial(tether_client *cl, bool begin);
/* The connection is established: the HELLO deadline starts. */
void tether__calo_connected(tether_client *cl, tether_conn *c);
/* The connection ended: true when it showed a plain server (the next
 * connection falls back, and a warning was logged). */
bool tether__calo_closed(tether_client *cl, tether_conn *c, bool was_connected, int reason);
/* A connection was dialled: sets its acknowledgement hooks. */
void tether__calo_conn(tether_client *cl, tether_conn *c);
/* A closing client may close its connection: nothing waits for an ACK. */
bool tether__calo_may_close(const tether_client *cl);
void tether__calo_stats(const tether_client *cl, tether_stats *s);
/* The per-message steps (numbering, before and after a send) are inline:
 * client_alo.h. */

#ifdef TETHER_TESTING
/* Replaces the random source of every client (NULL restores the real one),
 * so that tests can predict the jitter. Not thread-safe: set it before the
 * clients exist. */
void tether__client_set_random(double (*fn)(void *arg), void *arg);
#endif

#endif /* TETHER_RECONNECT_INT_H */
