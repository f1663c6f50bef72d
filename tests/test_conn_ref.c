/* SPDX-License-Identifier: MIT */
/* Thread-safe connection references (tether/ref.h, lib/conn_ref.c): the
 * single-thread contract (errors, order, delivery reports, ECLOSED once the
 * connection is gone, generations on a reused slot), backpressure with its
 * drain notification on the sender's own loop and on the owning loop, and
 * eight threads sending to connections that close underneath them (closed
 * by the server, by the peer, by the server's loop being stopped and
 * freed): every accepted message is written or reported failed exactly
 * once, what is written arrives in order per sending thread. Built for the
 * TSan run too (tests/run-all.sh, TETHER_TSAN). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "loop.h" /* private: the posted-callback count of a loop */
#include "mpsc.h"

/* ---- shared helpers ----------------------------------------------------- */

struct counts {
    atomic_int ok;
    atomic_int failed;
    atomic_int eclosed;
};

static void count_cb(tether_ref ref, int status, void *ud)
{
    (void)ref;
    struct counts *k = ud;
    if (status == TETHER_OK) {
        atomic_fetch_add(&k->ok, 1);
    } else {
        atomic_fetch_add(&k->failed, 1);
        if (status == TETHER_ECLOSED) {
            atomic_fetch_add(&k->eclosed, 1);
        }
    }
}

/* ---- single thread: the contract ---------------------------------------- */

struct one {
    tether_conn *srv; /* accepted */
    tether_conn *cli; /* dialled */
    int srv_closed;
    int cli_closed;
    int got;
    int want;          /* for pred_got */
    uint64_t seq_next; /* 8-byte messages: numbered from 0 */
    int seq_bad;
    char msgs[8][32];
    int posted; /* work accepted by tether_ref_post() */
    tether_ref ref;
    int work_live;
    int work_gone;
    tether_conn *work_conn;
    int app_drains;
};

static void one_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct one *o = ud;
    o->srv = c;
    tether_conn_set_userdata(c, o);
}

static void one_srv_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    ((struct one *)ud)->srv_closed++;
}

static void one_srv_drain(tether_conn *c, void *ud)
{
    (void)c;
    ((struct one *)ud)->app_drains++;
}

static void one_cli_msg(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct one *o = ud;
    if (len == sizeof(uint64_t)) {
        uint64_t v;
        memcpy(&v, data, sizeof v);
        if (v != o->seq_next) {
            o->seq_bad++;
        }
        o->seq_next = v + 1;
    }
    if (o->got < 8 && len < sizeof o->msgs[0]) {
        memcpy(o->msgs[o->got], data, len);
        o->msgs[o->got][len] = '\0';
    }
    o->got++;
}

static void one_cli_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    ((struct one *)ud)->cli_closed++;
}

static void one_work(tether_conn *c, int status, void *ud)
{
    struct one *o = ud;
    if (status == TETHER_OK) {
        ck_assert_ptr_nonnull(c);
        o->work_live++;
        o->work_conn = c;
    } else {
        ck_assert_int_eq(status, TETHER_ECLOSED);
        ck_assert_ptr_null(c);
        o->work_gone++;
    }
}

static bool pred_accepted(void *arg)
{
    return ((struct one *)arg)->srv != NULL;
}

static bool pred_got(void *arg)
{
    struct one *o = arg;
    return o->got >= o->want;
}

/* True once posting is refused (the slot is released); the work accepted
 * on the way is counted. */
static bool pred_post_gone(void *arg)
{
    struct one *o = arg;
    int rv = tether_ref_post(o->ref, one_work, o);
    if (rv == TETHER_OK) {
        o->posted++;
        return false;
    }
    ck_assert_int_eq(rv, TETHER_ECLOSED);
    return o->work_live + o->work_gone == o->posted;
}

struct gone_arg {
    tether_ref ref;
    struct counts *k;
    int accepted;
};

/* True once the reference refuses; the zero-length messages it still
 * accepted on the way are counted and must be reported too. */
static bool pred_ref_gone(void *arg)
{
    struct gone_arg *g = arg;
    int rv = tether_ref_send(g->ref, NULL, 0, count_cb, g->k);
    if (rv == TETHER_OK) {
        g->accepted++;
        return false;
    }
    ck_assert_int_eq(rv, TETHER_ECLOSED);
    return true;
}

static bool pred_reported(void *arg)
{
    struct gone_arg *g = arg;
    return atomic_load(&g->k->ok) + atomic_load(&g->k->failed) >= g->accepted;
}

static void one_setup(struct one *o, tether_listener **l)
{
    memset(o, 0, sizeof *o);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.max_msg = 1024;
    so.on_close = one_srv_close;
    so.on_drain = one_srv_drain;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    lo.on_accept = one_on_accept;
    lo.userdata = o;
    *l = th_listen_tcp(&lo);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = one_cli_msg;
    co.on_close = one_cli_close;
    co.userdata = o;
    th_dial(&o->cli, th_url_of(*l), &co);
    ck_assert(th_run_until_pred(pred_accepted, o, 10000));
}

START_TEST(ref_contract)
{
    struct one o;
    tether_listener *l;
    one_setup(&o, &l);
    struct counts k = {0};

    /* Bad input. */
    tether_ref r = {0};
    ck_assert_int_eq(tether_ref_get(NULL, &r), TETHER_EINVAL);
    ck_assert_int_eq(tether_ref_get(o.srv, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_ref_send((tether_ref){0}, "x", 1, NULL, NULL), TETHER_EINVAL);
    /* A slot index far beyond anything issued. */
    ck_assert_int_eq(tether_ref_send((tether_ref){(1ull << 32) | 0xfffff}, "x", 1, NULL, NULL),
                     TETHER_EINVAL);

    ck_assert_int_eq(tether_ref_get(o.srv, &r), TETHER_OK);
    ck_assert_uint_ne(r.id, 0);
    o.ref = r;
    o.posted = 1; /* the one below */
    tether_ref r_again;
    ck_assert_int_eq(tether_ref_get(o.srv, &r_again), TETHER_OK);
    ck_assert_uint_eq(r.id, r_again.id);
    ck_assert_int_eq(tether_ref_send(r, NULL, 5, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_ref_post(r, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_ref_on_drain(r, NULL, NULL, NULL), TETHER_EINVAL);
    char big[2000];
    memset(big, 'b', sizeof big);
    ck_assert_int_eq(tether_ref_send(r, big, sizeof big, count_cb, &k), TETHER_EMSGSIZE);

    /* From the owning thread itself: in order, reported once written. */
    ck_assert_int_eq(tether_ref_send(r, "one", 3, count_cb, &k), TETHER_OK);
    ck_assert_int_eq(tether_ref_send(r, "two", 3, count_cb, &k), TETHER_OK);
    ck_assert_int_eq(tether_ref_send(r, "three", 5, count_cb, &k), TETHER_OK);
    ck_assert_uint_eq(tether_ref_pending(r), 11); /* not handed over inside the call */
    ck_assert_int_eq(tether_ref_post(r, one_work, &o), TETHER_OK);
    ck_assert_int_eq(o.work_live, 0); /* never inside the call */
    o.want = 3;
    ck_assert(th_run_until_pred(pred_got, &o, 10000));
    ck_assert_str_eq(o.msgs[0], "one");
    ck_assert_str_eq(o.msgs[1], "two");
    ck_assert_str_eq(o.msgs[2], "three");
    struct gone_arg g = {r, &k, 3};
    ck_assert(th_run_until_pred(pred_reported, &g, 10000));
    ck_assert_int_eq(atomic_load(&k.ok), 3);
    ck_assert_int_eq(atomic_load(&k.failed), 0);
    ck_assert_uint_eq(tether_ref_pending(r), 0);
    ck_assert_int_eq(o.work_live, 1);
    ck_assert_ptr_eq(o.work_conn, o.srv);

    /* Closed through the reference: sends are refused once the loop has
     * closed it, everything else once the connection is freed. Work
     * posted in between runs with the connection until its on_close, with
     * NULL and ECLOSED after. */
    ck_assert_int_eq(tether_ref_close(r), TETHER_OK);
    ck_assert(th_run_until_pred(pred_ref_gone, &g, 10000));
    ck_assert(th_run_until_pred(pred_post_gone, &o, 10000));
    ck_assert(th_run_until_pred(pred_reported, &g, 10000));
    ck_assert_int_eq(atomic_load(&k.ok) + atomic_load(&k.failed), g.accepted);
    ck_assert_int_eq(o.work_live + o.work_gone, o.posted);
    ck_assert_int_eq(o.srv_closed, 1);
    ck_assert_int_eq(tether_ref_send(r, "x", 1, count_cb, &k), TETHER_ECLOSED);
    ck_assert_int_eq(tether_ref_post(r, one_work, &o), TETHER_ECLOSED);
    ck_assert_int_eq(tether_ref_close(r), TETHER_ECLOSED);
    ck_assert_int_eq(tether_ref_on_drain(r, NULL, count_cb, &k), TETHER_ECLOSED);
    ck_assert_uint_eq(tether_ref_pending(r), 0);
    /* The application's own on_drain was never involved. */
    ck_assert_int_eq(o.app_drains, 0);

    /* A new connection reuses the slot with the next generation: the old
     * reference still refuses, the new one works. */
    o.srv = NULL;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = one_cli_msg;
    co.on_close = one_cli_close;
    co.userdata = &o;
    th_dial(&o.cli, th_url_of(l), &co);
    ck_assert(th_run_until_pred(pred_accepted, &o, 10000));
    tether_ref r2;
    ck_assert_int_eq(tether_ref_get(o.srv, &r2), TETHER_OK);
    ck_assert_uint_eq((uint32_t)r2.id, (uint32_t)r.id);
    ck_assert_uint_ne(r2.id, r.id);
    ck_assert_int_eq(tether_ref_send(r, "x", 1, NULL, NULL), TETHER_ECLOSED);
    ck_assert_int_eq(tether_ref_send(r2, "four", 4, NULL, NULL), TETHER_OK);
    o.want = 4;
    ck_assert(th_run_until_pred(pred_got, &o, 10000));
    ck_assert_str_eq(o.msgs[3], "four");

    tether_conn_close(o.cli);
    tether_listener_close(l);
    th_run_idle(10000);
    ck_assert_int_eq(tether_ref_send(r2, "x", 1, NULL, NULL), TETHER_ECLOSED);
}
END_TEST

static bool pred_srv_closed(void *arg)
{
    return ((struct one *)arg)->srv_closed > 0;
}

/* Once a connection has been reported closed, its reference refuses
 * everything at once; work never sees the connection. */
START_TEST(ref_post_after_close)
{
    struct one o;
    tether_listener *l;
    one_setup(&o, &l);
    tether_ref r;
    ck_assert_int_eq(tether_ref_get(o.srv, &r), TETHER_OK);
    tether_conn_abort(o.srv);
    ck_assert_int_eq(tether_ref_get(o.srv, &r), TETHER_OK); /* known ref: same id */
    ck_assert(th_run_until_pred(pred_srv_closed, &o, 10000));
    /* Its on_close has run: the slot is released, even if the socket is
     * still lingering. */
    ck_assert_int_eq(tether_ref_post(r, one_work, &o), TETHER_ECLOSED);
    ck_assert_int_eq(tether_ref_send(r, "x", 1, NULL, NULL), TETHER_ECLOSED);
    ck_assert_int_eq(o.work_live, 0);
    if (o.cli_closed == 0) { /* the abort's reset may have ended it already */
        tether_conn_close(o.cli);
    }
    tether_listener_close(l);
    th_run_idle(10000);
    ck_assert_int_eq(tether_ref_post(r, one_work, &o), TETHER_ECLOSED);
}
END_TEST

/* ---- the queue and the batching ------------------------------------------ */

#define MQ_PRODUCERS 4
#define MQ_PER 50000

struct mq_node {
    struct tether__mpsc_node mn;
    uint32_t producer;
    uint32_t seq;
};

struct mq_prod {
    struct tether__mpsc *q;
    struct mq_node *nodes;
    uint32_t id;
};

static void *mq_producer(void *arg)
{
    struct mq_prod *p = arg;
    for (uint32_t i = 0; i < MQ_PER; i++) {
        p->nodes[i].producer = p->id;
        p->nodes[i].seq = i;
        tether__mpsc_push(p->q, &p->nodes[i].mn);
    }
    return NULL;
}

/* Four producers push while the consumer pops: every node comes out once,
 * and each producer's in the order it pushed them. */
START_TEST(mpsc_fifo_per_producer)
{
    struct tether__mpsc q;
    tether__mpsc_init(&q);
    ck_assert_ptr_null(tether__mpsc_pop(&q));
    struct mq_node *nodes = calloc(MQ_PRODUCERS * MQ_PER, sizeof *nodes);
    ck_assert_ptr_nonnull(nodes);
    pthread_t th[MQ_PRODUCERS];
    struct mq_prod prod[MQ_PRODUCERS];
    for (uint32_t i = 0; i < MQ_PRODUCERS; i++) {
        prod[i] = (struct mq_prod){&q, nodes + (size_t)i * MQ_PER, i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, mq_producer, &prod[i]), 0);
    }
    uint32_t next[MQ_PRODUCERS] = {0};
    long got = 0;
    uint64_t t0 = th_now_ms();
    while (got < (long)MQ_PRODUCERS * MQ_PER) {
        struct tether__mpsc_node *mn = tether__mpsc_pop(&q);
        if (mn == NULL) {
            ck_assert_msg(th_now_ms() - t0 < 60000, "only %ld nodes came out", got);
            sched_yield();
            continue;
        }
        struct mq_node *n = (struct mq_node *)mn;
        ck_assert_uint_lt(n->producer, MQ_PRODUCERS);
        ck_assert_uint_eq(n->seq, next[n->producer]);
        next[n->producer]++;
        got++;
    }
    for (int i = 0; i < MQ_PRODUCERS; i++) {
        pthread_join(th[i], NULL);
    }
    ck_assert_ptr_null(tether__mpsc_pop(&q));
    free(nodes);
}
END_TEST

#define BATCH_MSGS 3000

static void *batch_sender(void *arg)
{
    tether_ref *r = arg;
    for (uint64_t i = 0; i < BATCH_MSGS; i++) {
        if (tether_ref_send(*r, &i, sizeof i, NULL, NULL) != TETHER_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

/* Many sends from another thread while the loop is not running cost one
 * scheduled batch: one posted callback and one eventfd write. */
START_TEST(ref_one_wakeup_per_batch)
{
    struct one o;
    tether_listener *l;
    one_setup(&o, &l);
    tether_ref r;
    ck_assert_int_eq(tether_ref_get(o.srv, &r), TETHER_OK);
    ck_assert_uint_eq(atomic_load(&th_loop->posts_queued), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, batch_sender, &r), 0);
    void *res = NULL;
    pthread_join(th, &res);
    ck_assert_ptr_null(res);
    ck_assert_uint_eq(atomic_load(&th_loop->posts_queued), 1);
    ck_assert(atomic_load(&th_loop->wake_armed));
    ck_assert_uint_eq(tether_ref_pending(r), BATCH_MSGS * sizeof(uint64_t));
    o.want = BATCH_MSGS;
    ck_assert(th_run_until_pred(pred_got, &o, 20000));
    ck_assert_int_eq(o.seq_bad, 0);
    ck_assert_uint_eq(o.seq_next, BATCH_MSGS);
    tether_conn_close(o.cli);
    tether_listener_close(l);
    th_run_idle(10000);
}
END_TEST

/* ---- backpressure -------------------------------------------------------- */

#define BP_LEN 1024

struct bp {
    tether_conn *srv;
    tether_ref ref;
    int app_drains;
    /* the sender thread */
    tether_loop *sloop; /* the sender's own loop */
    atomic_int phase;   /* 1: refused and waiting (round 1), 3: (round 2), 2/4: resent */
    atomic_int sent;    /* accepted messages */
    atomic_bool drained_early;
    atomic_int drain_status;
    pthread_t drain_thread;
    atomic_bool drain_fired;
    atomic_bool drain2_fired;
    pthread_t drain2_thread;
    pthread_t main_thread;
    struct counts k;
    int result; /* 0 ok, else a line number */
};

static void bp_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct bp *b = ud;
    b->srv = c;
    tether_conn_set_userdata(c, b);
    ck_assert_int_eq(tether_ref_get(c, &b->ref), TETHER_OK);
}

static void bp_app_drain(tether_conn *c, void *ud)
{
    (void)c;
    ((struct bp *)ud)->app_drains++;
}

static void bp_drain_own_loop(tether_ref ref, int status, void *ud)
{
    (void)ref;
    struct bp *b = ud;
    b->drain_thread = pthread_self();
    atomic_store(&b->drain_status, status);
    atomic_store(&b->drain_fired, true);
}

static void bp_drain_owner(tether_ref ref, int status, void *ud)
{
    (void)ref;
    (void)status;
    struct bp *b = ud;
    b->drain2_thread = pthread_self();
    atomic_store(&b->drain2_fired, true);
}

/* Sends numbered 1 KiB messages until refused; returns the next number. */
static int bp_fill(struct bp *b, int seq)
{
    uint8_t msg[BP_LEN];
    for (int i = 0; i < 100000; i++) {
        memset(msg, (int)(seq & 0xff), sizeof msg);
        memcpy(msg, &seq, sizeof seq);
        int rv = tether_ref_send(b->ref, msg, sizeof msg, count_cb, &b->k);
        if (rv == TETHER_EAGAIN) {
            return seq;
        }
        if (rv != TETHER_OK) {
            return -1;
        }
        atomic_fetch_add(&b->sent, 1);
        seq++;
    }
    return -1; /* never refused */
}

static void *bp_sender(void *arg)
{
    struct bp *b = arg;
    int seq = bp_fill(b, 0);
    if (seq < 0) {
        b->result = __LINE__;
        atomic_store(&b->phase, 9);
        return NULL;
    }
    /* Round 1: told on this thread's own loop. */
    if (tether_ref_on_drain(b->ref, b->sloop, bp_drain_own_loop, b) != TETHER_OK) {
        b->result = __LINE__;
        atomic_store(&b->phase, 9);
        return NULL;
    }
    atomic_store(&b->phase, 1);
    /* The reference held by the request keeps the loop running until the
     * notification has run; then nothing is left and run returns. */
    tether_loop_run(b->sloop);
    if (!atomic_load(&b->drain_fired) || atomic_load(&b->drain_status) != TETHER_OK ||
        !pthread_equal(b->drain_thread, pthread_self())) {
        b->result = __LINE__;
        atomic_store(&b->phase, 9);
        return NULL;
    }
    seq = bp_fill(b, seq);
    if (seq < 0) {
        b->result = __LINE__;
        atomic_store(&b->phase, 9);
        return NULL;
    }
    /* Round 2: told on the owning loop's thread. */
    if (tether_ref_on_drain(b->ref, NULL, bp_drain_owner, b) != TETHER_OK) {
        b->result = __LINE__;
    }
    atomic_store(&b->phase, 3);
    return NULL;
}

struct phase_wait {
    struct bp *b;
    int want;
};

static bool pred_phase(void *arg)
{
    struct phase_wait *w = arg;
    return atomic_load(&w->b->phase) >= w->want;
}

struct reader {
    int fd;
    struct bp *b;
    size_t got; /* bytes read */
    int next;   /* next expected message number */
    size_t in;  /* bytes of the current frame read */
    uint8_t frame[4 + BP_LEN];
    bool bad;
    int prefill; /* messages numbered -1 that come first */
    const atomic_bool *until;
};

/* Reads what the raw client has, checking the frames, until *until. */
static bool pred_read(void *arg)
{
    struct reader *rd = arg;
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(rd->fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        rd->got += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            rd->frame[rd->in++] = buf[i];
            if (rd->in == sizeof rd->frame) {
                int seq;
                memcpy(&seq, rd->frame + 4, sizeof seq);
                if (rd->prefill > 0 && seq == -1) {
                    rd->prefill--;
                    rd->in = 0;
                    continue;
                }
                if (rd->prefill > 0 || seq != rd->next || rd->frame[3] != (BP_LEN & 0xff) ||
                    rd->frame[4 + BP_LEN - 1] != (uint8_t)(seq & 0xff)) {
                    rd->bad = true;
                }
                rd->next++;
                rd->in = 0;
            }
        }
    }
    return atomic_load(rd->until);
}

START_TEST(ref_backpressure_drain)
{
    struct bp b;
    memset(&b, 0, sizeof b);
    b.main_thread = pthread_self();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.send_hwm = 8 * 1024;
    so.send_lwm = 2 * 1024;
    so.sndbuf = 4096;
    so.on_drain = bp_app_drain;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    lo.on_accept = bp_on_accept;
    lo.userdata = &b;
    tether_listener *l = th_listen_tcp(&lo);
    /* A raw client with a small window that reads only when told. */
    int fd = th_raw_connect_rcvbuf(tether_listener_port(l), 4096);
    uint64_t t0 = th_now_ms();
    while (b.srv == NULL) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 100), 0);
        ck_assert_msg(th_now_ms() - t0 < 10000, "the raw client was never accepted");
    }
    /* Fill the kernel's buffers and the connection's queue from the loop
     * itself first (numbered -1), so that nothing the sender thread sends
     * can be written before the peer reads. */
    uint8_t pre[BP_LEN];
    int prefill = 0;
    int steady = 0;
    t0 = th_now_ms();
    while (steady < 5) {
        size_t before = tether_conn_queued(b.srv);
        if (before < so.send_hwm) {
            int minus1 = -1;
            memset(pre, 0xff, sizeof pre);
            memcpy(pre, &minus1, sizeof minus1);
            ck_assert_int_eq(tether_conn_send(b.srv, pre, sizeof pre), TETHER_OK);
            prefill++;
            steady = 0;
        }
        tether_loop_run_once(th_loop, 10);
        if (before >= so.send_hwm && tether_conn_queued(b.srv) >= before) {
            steady++;
        }
        ck_assert_msg(th_now_ms() - t0 < 20000, "the socket never filled");
    }
    ck_assert_int_eq(tether_loop_new(&b.sloop, NULL), TETHER_OK);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, bp_sender, &b), 0);

    /* The peer does not read: the sender is refused and waits. */
    struct phase_wait w1 = {&b, 1};
    ck_assert(th_run_until_pred(pred_phase, &w1, 20000));
    ck_assert_int_eq(b.result, 0);
    ck_assert_int_gt(atomic_load(&b.sent), 0);
    /* Nothing can drain while the peer reads nothing. */
    t0 = th_now_ms();
    while (th_now_ms() - t0 < 200) {
        tether_loop_run_once(th_loop, 20);
    }
    ck_assert(!atomic_load(&b.drain_fired));

    /* Reading lets it drain; the sender refills and waits on this loop. */
    ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    struct reader rd = {.fd = fd, .b = &b, .prefill = prefill, .until = &b.drain2_fired};
    ck_assert(th_run_until_pred(pred_read, &rd, 30000));
    pthread_join(th, NULL);
    ck_assert_int_eq(b.result, 0);
    ck_assert(pthread_equal(b.drain2_thread, b.main_thread));

    /* Every accepted message arrives, in order, and is reported written. */
    int sent = atomic_load(&b.sent);
    while (rd.next < sent) {
        pred_read(&rd);
        tether_loop_run_once(th_loop, 10);
        ck_assert_msg(th_now_ms() - t0 < 60000, "only %d of %d messages arrived", rd.next, sent);
    }
    ck_assert(!rd.bad);
    ck_assert_int_eq(rd.prefill, 0);
    ck_assert_int_eq(rd.next, sent);
    struct gone_arg g = {b.ref, &b.k, sent};
    ck_assert(th_run_until_pred(pred_reported, &g, 10000));
    ck_assert_int_eq(atomic_load(&b.k.ok), sent);
    ck_assert_int_eq(atomic_load(&b.k.failed), 0);
    ck_assert_int_eq(b.app_drains, 0);

    close(fd);
    tether_listener_close(l);
    th_run_idle(10000);
    ck_assert_int_eq(tether_loop_free(b.sloop), TETHER_OK);
}
END_TEST

/* ---- eight threads, connections closing underneath ------------------------ */

#define ST_CONNS 4
#define ST_THREADS 8
#define ST_CLOSE_AFTER 3000      /* messages a connection delivers before it is closed */
#define ST_MAX_PER_THREAD 400000 /* a bound only: every thread ends at ECLOSED */

enum st_mode {
    BY_SERVER,
    BY_PEER,
    BY_LOOP_STOP
};

struct stress {
    enum st_mode mode;
    /* the server: its own loop on its own thread */
    tether_loop *sloop;
    tether_listener *l;
    pthread_t sth;
    atomic_int naccepted;
    tether_ref refs[ST_CONNS];
    atomic_int free_rv;
    /* the senders */
    atomic_int senders_done;
    atomic_long accepted;
    atomic_int refused_eagain;
    atomic_int drains;
    atomic_int capped; /* threads that stopped at the cap, not at ECLOSED */
    atomic_int sender_errors;
    struct counts k;
    /* the receivers (th_loop, this thread) */
    tether_conn *cli[ST_CONNS];
    int cli_j[ST_CONNS]; /* which reference feeds each client; -1 until known */
    int cli_got[ST_CONNS];
    int cli_closed;
    long delivered;
    uint32_t expect[ST_CONNS][ST_THREADS];
    int order_bad;
    bool closing[ST_CONNS];
    bool stop_posted;
};

struct st_msg {
    uint32_t j;   /* the reference */
    uint32_t t;   /* the sending thread */
    uint32_t seq; /* per (reference, thread) */
};

static void st_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct stress *st = ud;
    int n = atomic_load(&st->naccepted);
    ck_assert_int_lt(n, ST_CONNS);
    ck_assert_int_eq(tether_ref_get(c, &st->refs[n]), TETHER_OK);
    atomic_store(&st->naccepted, n + 1); /* publishes refs[n] */
}

static void st_stop_cb(tether_loop *loop, void *ud)
{
    (void)ud;
    tether_loop_stop(loop);
}

static void *st_server(void *arg)
{
    struct stress *st = arg;
    tether_loop_run(st->sloop);
    /* Stopped: close everything and free the loop, while the senders go on. */
    tether_loop_close_all(st->sloop);
    int rv = TETHER_EBUSY;
    for (int i = 0; i < 100 && rv == TETHER_EBUSY; i++) {
        tether_loop_run(st->sloop);
        rv = tether_loop_free(st->sloop);
    }
    atomic_store(&st->free_rv, rv);
    return NULL;
}

struct sender {
    struct stress *st;
    uint32_t t;
    sem_t drained;
    atomic_int drain_status;
};

static void st_drained(tether_ref ref, int status, void *ud)
{
    (void)ref;
    struct sender *s = ud;
    atomic_store(&s->drain_status, status);
    sem_post(&s->drained);
}

static void *st_sender(void *arg)
{
    struct sender *s = arg;
    struct stress *st = s->st;
    uint32_t seq[ST_CONNS] = {0};
    bool dead[ST_CONNS] = {false};
    int alive = ST_CONNS;
    uint8_t buf[1024];
    memset(buf, 0x5a, sizeof buf);
    for (int i = 0; i < ST_MAX_PER_THREAD && alive > 0; i++) {
        uint32_t j = (uint32_t)i % ST_CONNS;
        if (dead[j]) {
            continue;
        }
        struct st_msg m = {j, s->t, seq[j]};
        memcpy(buf, &m, sizeof m);
        size_t len = sizeof m + (size_t)((i * 7) % 64) * 8;
        int rv;
        for (;;) {
            rv = tether_ref_send(st->refs[j], buf, len, count_cb, &st->k);
            if (rv != TETHER_EAGAIN) {
                break;
            }
            atomic_fetch_add(&st->refused_eagain, 1);
            if (tether_ref_on_drain(st->refs[j], NULL, st_drained, s) != TETHER_OK) {
                rv = TETHER_ECLOSED; /* gone meanwhile */
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 60; /* a hang guard only */
            while (sem_timedwait(&s->drained, &ts) != 0) {
                if (errno != EINTR) {
                    atomic_fetch_add(&st->sender_errors, 1);
                    return NULL;
                }
            }
            atomic_fetch_add(&st->drains, 1);
            if (atomic_load(&s->drain_status) != TETHER_OK) {
                rv = TETHER_ECLOSED;
                break;
            }
        }
        if (rv == TETHER_OK) {
            atomic_fetch_add(&st->accepted, 1);
            seq[j]++;
        } else if (rv == TETHER_ECLOSED) {
            dead[j] = true;
            alive--;
        } else {
            atomic_fetch_add(&st->sender_errors, 1);
        }
    }
    if (alive > 0) {
        atomic_fetch_add(&st->capped, 1);
    }
    atomic_fetch_add(&st->senders_done, 1);
    return NULL;
}

static void st_cli_msg(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct stress *st = ud;
    int ci = -1;
    for (int i = 0; i < ST_CONNS; i++) {
        if (st->cli[i] == c) {
            ci = i;
        }
    }
    ck_assert_int_ge(ci, 0);
    struct st_msg m;
    ck_assert_uint_ge(len, sizeof m);
    memcpy(&m, data, sizeof m);
    ck_assert_uint_lt(m.j, ST_CONNS);
    ck_assert_uint_lt(m.t, ST_THREADS);
    if (st->cli_j[ci] < 0) {
        st->cli_j[ci] = (int)m.j;
    }
    /* One reference feeds one connection; per sending thread its messages
     * arrive complete from the first and in order. */
    if ((int)m.j != st->cli_j[ci] || m.seq != st->expect[m.j][m.t]) {
        st->order_bad++;
    }
    st->expect[m.j][m.t] = m.seq + 1;
    st->delivered++;
    st->cli_got[ci]++;
    if (st->cli_got[ci] != ST_CLOSE_AFTER) {
        return;
    }
    switch (st->mode) {
    case BY_SERVER:
        /* The server side closes, told from this (a foreign) thread. */
        ck_assert_int_eq(tether_ref_close(st->refs[m.j]), TETHER_OK);
        break;
    case BY_PEER:
        if (ci % 2 == 0) {
            tether_conn_close(c);
        } else {
            tether_conn_abort(c);
        }
        break;
    case BY_LOOP_STOP:
        if (!st->stop_posted) {
            st->stop_posted = true;
            ck_assert_int_eq(tether_loop_post(st->sloop, st_stop_cb, NULL), TETHER_OK);
        }
        break;
    }
}

static void st_cli_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    ((struct stress *)ud)->cli_closed++;
}

static void st_work_never(tether_conn *c, int status, void *ud)
{
    (void)c;
    (void)status;
    (void)ud;
    ck_abort_msg("work ran for a reference refused with ECLOSED");
}

static bool pred_st_accepted(void *arg)
{
    return atomic_load(&((struct stress *)arg)->naccepted) == ST_CONNS;
}

static bool pred_st_done(void *arg)
{
    struct stress *st = arg;
    return st->cli_closed == ST_CONNS && atomic_load(&st->senders_done) == ST_THREADS;
}

static void run_stress(enum st_mode mode)
{
    struct stress *st = calloc(1, sizeof *st);
    ck_assert_ptr_nonnull(st);
    st->mode = mode;
    atomic_store(&st->free_rv, 1);
    ck_assert_int_eq(tether_loop_new(&st->sloop, NULL), TETHER_OK);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.send_hwm = 64 * 1024;
    so.send_lwm = 16 * 1024;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    lo.on_accept = st_on_accept;
    lo.userdata = st;
    ck_assert_int_eq(tether_listen(&st->l, st->sloop, "tcp://127.0.0.1:0", &lo, NULL), TETHER_OK);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_listener_port(st->l));
    ck_assert_int_eq(pthread_create(&st->sth, NULL, st_server, st), 0);

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = st_cli_msg;
    co.on_close = st_cli_close;
    co.userdata = st;
    for (int i = 0; i < ST_CONNS; i++) {
        st->cli_j[i] = -1;
        th_dial(&st->cli[i], url, &co);
    }
    ck_assert(th_run_until_pred(pred_st_accepted, st, 20000));

    pthread_t th[ST_THREADS];
    struct sender snd[ST_THREADS];
    for (int t = 0; t < ST_THREADS; t++) {
        snd[t].st = st;
        snd[t].t = (uint32_t)t;
        ck_assert_int_eq(sem_init(&snd[t].drained, 0, 0), 0);
        atomic_init(&snd[t].drain_status, 0);
        ck_assert_int_eq(pthread_create(&th[t], NULL, st_sender, &snd[t]), 0);
    }
    bool done = th_run_until_pred(pred_st_done, st, 90000);
    if (!st->stop_posted) {
        ck_assert_int_eq(tether_loop_post(st->sloop, st_stop_cb, NULL), TETHER_OK);
    }
    pthread_join(st->sth, NULL);
    for (int t = 0; t < ST_THREADS; t++) {
        pthread_join(th[t], NULL);
        sem_destroy(&snd[t].drained);
    }
    ck_assert_msg(done, "closed %d of %d clients, %d of %d senders finished", st->cli_closed,
                  ST_CONNS, atomic_load(&st->senders_done), ST_THREADS);
    ck_assert_int_eq(atomic_load(&st->free_rv), TETHER_OK);

    /* The loop is freed: the references only refuse now. */
    for (int j = 0; j < ST_CONNS; j++) {
        ck_assert_int_eq(tether_ref_send(st->refs[j], "x", 1, NULL, NULL), TETHER_ECLOSED);
        ck_assert_int_eq(tether_ref_post(st->refs[j], st_work_never, NULL), TETHER_ECLOSED);
        ck_assert_int_eq(tether_ref_close(st->refs[j]), TETHER_ECLOSED);
        ck_assert_uint_eq(tether_ref_pending(st->refs[j]), 0);
    }

    long accepted = atomic_load(&st->accepted);
    long ok = atomic_load(&st->k.ok);
    long failed = atomic_load(&st->k.failed);
    ck_assert_int_eq(atomic_load(&st->sender_errors), 0);
    ck_assert_int_eq(atomic_load(&st->capped), 0); /* each thread saw every reference close */
    /* Every accepted message was reported exactly once. */
    ck_assert_int_eq(accepted, ok + failed);
    ck_assert_int_eq(st->order_bad, 0);
    if (mode == BY_PEER) {
        /* Bytes the kernel took after the peer stopped reading are lost
         * with the peer (only an application acknowledgement covers that). */
        ck_assert_int_le(st->delivered, ok);
    } else {
        /* Graceful closes: everything written was read. */
        ck_assert_int_eq(st->delivered, ok);
    }
    ck_assert_int_ge(st->delivered, (long)ST_CONNS * ST_CLOSE_AFTER);
    fprintf(stderr,
            "conn_ref stress mode %d: accepted %ld, delivered %ld, written %ld, failed %ld "
            "(ECLOSED %d), EAGAIN %d, drains %d\n",
            (int)mode, accepted, st->delivered, ok, failed, atomic_load(&st->k.eclosed),
            atomic_load(&st->refused_eagain), atomic_load(&st->drains));
    th_run_idle(10000);
    free(st);
}

START_TEST(ref_threads_server_closes)
{
    run_stress(BY_SERVER);
}
END_TEST

START_TEST(ref_threads_peer_closes)
{
    run_stress(BY_PEER);
}
END_TEST

START_TEST(ref_threads_loop_stops)
{
    run_stress(BY_LOOP_STOP);
}
END_TEST

Suite *conn_ref_suite(void);
Suite *conn_ref_suite(void)
{
    Suite *s = suite_create("conn_ref");
    TCase *tc = tcase_create("contract");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ref_contract);
    tcase_add_test(tc, ref_post_after_close);
    tcase_add_test(tc, ref_one_wakeup_per_batch);
    tcase_add_test(tc, mpsc_fifo_per_producer);
    tcase_add_test(tc, ref_backpressure_drain);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, ref_threads_server_closes);
    tcase_add_test(tc, ref_threads_peer_closes);
    tcase_add_test(tc, ref_threads_loop_stops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(conn_ref_suite());
}
