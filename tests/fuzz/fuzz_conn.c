/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the read path of a real connection: a tether_conn on
 * a loop, accepted by a tether listener or dialled by tether_conn_dial(),
 * on a Unix socket whose other end the fuzzer writes. It covers frame
 * parsing across arbitrary read boundaries, control frames (HELLO, PING,
 * PONG, GOAWAY with and without the drain flag, RESUME and ACK of
 * at-least-once streams, whose duplicate filter the reference decoder
 * models), buffer growth for large
 * frames and long lines, pause and resume (from outside and from inside
 * on_message), sends and echoes while input arrives, and the end of
 * stream. Only the public API is used, so the harness follows the library
 * wherever its code moves.
 *
 * Input layout (see README.md):
 *   byte 0  bit 0: 0 = tether accepted the connection, 1 = tether dialled;
 *           bits 1-2: framing (len32, varint, line, custom len32 framer);
 *           bit 3: heartbeats on (len32 only: HELLO and pings go out);
 *           bits 4-5: line delimiter; bit 6: echo every message back.
 *   byte 1  max_msg (one of a few sizes, low bits), send_hwm (bit 7)
 *   then operations, one byte each (op = b & 7, arg = b >> 3):
 *     0 write the next arg+1 bytes      1 write the next (next byte)+1 bytes
 *     2 write (arg+1) KiB of the byte that follows
 *     3 pause   4 resume   5 pause (arg < 16) or close (arg >= 16) from
 *       inside on_message after arg % 16 more messages
 *     6 tether_conn_send() a message of arg * 37 bytes
 *     7 half-close our side (the peer sees the end of the stream)
 * Every write is followed by running the loop until tether has read it (or
 * stopped reading). At the end the connection must close within bounded
 * loop iterations, and what tether delivered and sent is checked against a
 * reference decoder: the messages delivered are a prefix of the frames in
 * the byte stream written (all of them after a clean end of stream), and
 * the messages tether sent arrive intact and in order. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ack.h"
#include "frame.h"
#include "net_helpers.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (last error: %s)\n", __FILE__, __LINE__,  \
                    #cond, st.last_error);                                                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Distinct listener configurations: framing (4) x heartbeats (2) x
 * delimiter (4) x max_msg (6) x send_hwm (2). */
#define N_CFG (4 * 2 * 4 * 6 * 2)
#define MAX_STREAM (2u << 20) /* bytes the fuzzer may write per input */
#define PUMP_ROUNDS 200       /* loop iterations to let tether read one write */
#define CLOSE_ROUNDS 200      /* loop iterations for the connection to close */

static const size_t max_msgs[] = {1, 7, 300, 70000, 200000, 16u << 20};
static const char *const delims[] = {"\n", "\r\n", "aba", "<<END>>\n"};

/* A growable byte buffer. */
struct buf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            abort();
        }
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
}

/* A list of messages: their bytes back to back, and their lengths. */
struct msgs {
    struct buf bytes;
    struct buf lens; /* size_t each */
};

static void msgs_add(struct msgs *m, const uint8_t *p, size_t n)
{
    buf_add(&m->bytes, p, n);
    buf_add(&m->lens, &n, sizeof n);
}

static size_t msgs_count(const struct msgs *m)
{
    return m->lens.len / sizeof(size_t);
}

/* The state of the one connection under test. */
static struct {
    tether_loop *loop;
    tether_listener *listeners[N_CFG];
    int peer_listen_fd; /* for dialled connections */
    char peer_url[64];
    tether_conn_opts opts; /* the configuration of this input */
    tether_conn *c;
    int fd; /* our end */
    bool accepted;
    bool connected;
    bool closed;
    bool wr_shut;
    bool paused; /* paused by us, from outside or inside on_message */
    int close_reason;
    char last_error[TETHER_ERROR_MSG_MAX];
    int cb_action; /* 0 none, 1 pause, 2 close: after cb_countdown more messages */
    unsigned cb_countdown;
    bool echo;
    struct buf in;        /* the byte stream we wrote */
    struct buf out;       /* the byte stream tether wrote */
    struct msgs got;      /* messages tether delivered */
    struct msgs expected; /* messages tether accepted for sending */
} st;

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    FUZZ_CHECK(c == st.c && !st.closed);
    FUZZ_CHECK(len <= st.opts.max_msg);
    msgs_add(&st.got, data, len);
    if (st.echo && tether_conn_send(c, data, len) == TETHER_OK) {
        msgs_add(&st.expected, data, len);
    }
    if (st.cb_action != 0) {
        if (st.cb_countdown > 0) {
            st.cb_countdown--;
        } else if (st.cb_action == 1) {
            tether_conn_pause(c);
            st.paused = true;
            st.cb_action = 0;
        } else {
            tether_conn_close(c);
            st.cb_action = 0;
        }
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    FUZZ_CHECK(c == st.c && !st.closed);
    st.closed = true;
    st.close_reason = reason;
    snprintf(st.last_error, sizeof st.last_error, "%s", tether_conn_last_error(c));
    FUZZ_CHECK(reason == TETHER_OK || st.last_error[0] != '\0');
}

static void on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    FUZZ_CHECK(c == st.c);
    FUZZ_CHECK(status == TETHER_OK);
    st.connected = true;
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    FUZZ_CHECK(st.c == NULL);
    st.c = c;
    st.accepted = true;
}

static void setup_opts(tether_conn_opts *o, uint8_t b0, uint8_t b1)
{
    static const tether_framing_kind kinds[] = {TETHER_FRAMING_LEN32, TETHER_FRAMING_VARINT,
                                                TETHER_FRAMING_LINE, TETHER_FRAMING_CUSTOM};
    tether_conn_opts_init(o);
    o->on_message = on_message;
    o->on_close = on_close;
    o->on_connect = on_connect;
    o->framing = kinds[(b0 >> 1) & 3];
    o->framer = o->framing == TETHER_FRAMING_CUSTOM ? tether_framer_len32() : NULL;
    o->line_delim = delims[(b0 >> 4) & 3];
    if ((b0 & 8) && o->framing == TETHER_FRAMING_LEN32) {
        /* Long enough never to be due while an input runs. */
        o->heartbeat_ms = 3600 * 1000;
    }
    o->max_msg = max_msgs[(b1 & 0x7f) % TETHER__ARRAY_SIZE(max_msgs)];
    o->send_hwm = (b1 & 0x80) ? 256 : 1024 * 1024;
}

/* The listener for a configuration (accepted connections), made on first use. */
static tether_listener *listener_for(unsigned idx, const tether_conn_opts *co)
{
    if (st.listeners[idx] == NULL) {
        tether_listen_opts lo;
        tether_error err;
        char url[64];
        tether_listen_opts_init(&lo);
        lo.on_accept = on_accept;
        lo.conn_opts = co;
        snprintf(url, sizeof url, "unix://@tether-fuzz-conn-%d-%u", (int)getpid(), idx);
        if (tether_listen(&st.listeners[idx], st.loop, url, &lo, &err) != TETHER_OK) {
            fprintf(stderr, "fuzz_conn: listen on %s: %s\n", err.message, url);
            abort();
        }
    }
    return st.listeners[idx];
}

static void global_init(void)
{
    struct sockaddr_un sun;
    socklen_t sl;
    int n;

    if (tether_loop_new(&st.loop, NULL) != TETHER_OK) {
        abort();
    }
    /* Our own listening socket, for connections that tether dials. */
    st.peer_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "tether-fuzz-peer-%d", (int)getpid());
    sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (st.peer_listen_fd < 0 || bind(st.peer_listen_fd, (struct sockaddr *)&sun, sl) != 0 ||
        listen(st.peer_listen_fd, 16) != 0) {
        perror("fuzz_conn: peer listener");
        abort();
    }
    snprintf(st.peer_url, sizeof st.peer_url, "unix://@%s", sun.sun_path + 1);
}

static void run_once(int timeout_ms)
{
    int rv = tether_loop_run_once(st.loop, timeout_ms);
    FUZZ_CHECK(rv >= 0);
}

/* Reads whatever tether wrote to us. */
static void drain_output(void)
{
    uint8_t b[65536];
    for (;;) {
        ssize_t n = recv(st.fd, b, sizeof b, MSG_DONTWAIT);
        if (n <= 0) {
            return;
        }
        buf_add(&st.out, b, (size_t)n);
    }
}

/* Bytes we wrote that tether has not read yet. */
static int unread(void)
{
    int q = 0;
    if (ioctl(st.fd, SIOCOUTQ, &q) != 0) {
        return 0;
    }
    return q;
}

/* Runs the loop until tether has read what we wrote, stopped reading
 * (paused), or closed. */
static void pump(void)
{
    int last = -1;
    int still = 0;
    for (int i = 0; i < PUMP_ROUNDS && !st.closed; i++) {
        drain_output();
        int q = unread();
        if (q == 0 && i > 0) {
            break;
        }
        if (q == last && ++still >= 3) {
            break; /* tether does not read: paused, or its queue is full */
        }
        if (q != last) {
            still = 0;
        }
        last = q;
        run_once(0);
    }
    drain_output();
}

/* Writes bytes to tether, as much as the socket takes while tether reads. */
static void peer_write(const uint8_t *p, size_t n)
{
    if (st.wr_shut || st.closed) {
        return;
    }
    for (int tries = 0; n > 0 && tries < 64; tries++) {
        ssize_t w = send(st.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            buf_add(&st.in, p, (size_t)w);
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* tether closed its end */
        }
        pump();
        if (st.closed) {
            break;
        }
    }
}

/* Decodes a byte stream with the reference framer into its data messages.
 * Returns the end: TETHER_EAGAIN (ran out, *partial set if bytes are left),
 * or the decoder's error. */
/* The receiver's side of acknowledgements (lib/ack.c), for an accepted
 * len32 connection: a HELLO announcing bit 1 admits RESUME(token, seq),
 * after which data frames are numbered from seq and those numbered at or
 * below the highest delivered under the token are dropped as duplicates
 * (the filter starts empty for each input: tether__ack_forget()). */
struct ref_acks {
    bool on;      /* model it at all (accepted len32 connection) */
    bool hello;   /* the peer's first HELLO was seen */
    bool rx_on;   /* ... and announced acknowledgements */
    bool resumed; /* a RESUME arrived: data frames are numbered */
    uint64_t token, next, delivered;
};

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* A control frame of the input: false where tether fails the connection
 * on a RESUME (nothing is delivered after it). */
static bool ref_acks_ctrl(struct ref_acks *a, const uint8_t *hdr, const uint8_t *p, size_t n)
{
    if (hdr[1] == 1 && !a->hello) {
        a->hello = true;
        a->rx_on = n >= 6 && p[0] != 0 && (p[1] & 0x02) != 0;
    } else if (hdr[1] == 8) {
        uint64_t seq = n == 16 ? be64(p + 8) : 0;
        if (!a->rx_on || seq == 0 || (a->resumed && be64(p) != a->token)) {
            return false;
        }
        if (!a->resumed) {
            a->token = be64(p);
            a->delivered = seq - 1;
            a->resumed = true;
        }
        a->next = seq;
    }
    return true;
}

static int reference_decode(const tether_framer *fr, const uint8_t *p, size_t n, size_t max_msg,
                            struct msgs *out, bool *partial, struct ref_acks *acks)
{
    size_t off = 0;
    size_t scan = 0;
    *partial = false;
    for (;;) {
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        int rv = fr->decode(fr, off == n ? NULL : p + off, n - off, max_msg, &scan, &f, &detail);
        if (rv == TETHER_EAGAIN) {
            *partial = off < n;
            return rv;
        }
        if (rv != TETHER_OK) {
            return rv;
        }
        size_t total = f.hdr_len + f.payload_len + f.trailer_len;
        if (total > n - off) {
            *partial = true;
            return TETHER_EAGAIN;
        }
        if (f.control != 0 && acks != NULL && acks->on &&
            !ref_acks_ctrl(acks, p + off, p + off + f.hdr_len, f.payload_len)) {
            return TETHER_EPROTO;
        }
        if (f.control == 0) {
            bool dup = false;
            if (acks != NULL && acks->resumed) {
                uint64_t seq = acks->next++;
                dup = seq <= acks->delivered;
                acks->delivered = dup ? acks->delivered : seq;
            }
            if (!dup) {
                msgs_add(out, p + off + f.hdr_len, f.payload_len);
            }
        }
        off += total;
        scan = 0;
    }
}

/* True if the messages of a are the first messages of b. */
static bool msgs_prefix(const struct msgs *a, const struct msgs *b)
{
    size_t na = msgs_count(a);
    if (na > msgs_count(b)) {
        return false;
    }
    if (na == 0) {
        return true;
    }
    if (memcmp(a->lens.p, b->lens.p, a->lens.len) != 0) {
        return false;
    }
    return a->bytes.len <= b->bytes.len &&
           (a->bytes.len == 0 || memcmp(a->bytes.p, b->bytes.p, a->bytes.len) == 0);
}

static void msgs_free(struct msgs *m)
{
    free(m->bytes.p);
    free(m->lens.p);
    memset(m, 0, sizeof *m);
}

static void check_outcome(const tether_framer *ref)
{
    struct msgs want = {{0}, {0}};
    struct msgs sent = {{0}, {0}};
    bool partial;
    int end;

    /* What tether delivered: a prefix of the frames we wrote, all of them
     * when the stream ended cleanly. A GOAWAY from the fuzzer ends the
     * stream where it stands: "closing now" drops our queue, a drain's
     * "done" flushes it first. */
    bool goaway =
        st.close_reason == TETHER_EOF && strncmp(st.last_error, "closed by peer", 14) == 0;
    bool drained = goaway && strstr(st.last_error, "after a drain") != NULL;
    struct ref_acks acks = {.on = st.accepted && ref == tether__framer_len32_ctrl()};
    end = reference_decode(ref, st.in.p, st.in.len, st.opts.max_msg, &want, &partial, &acks);
    FUZZ_CHECK(msgs_prefix(&st.got, &want));
    if (st.close_reason == TETHER_EOF && !goaway) {
        FUZZ_CHECK(st.wr_shut);
        FUZZ_CHECK(msgs_count(&st.got) == msgs_count(&want));
        FUZZ_CHECK(end == TETHER_EAGAIN && !partial);
    }
    if (st.close_reason == TETHER_ETRUNCATED) {
        FUZZ_CHECK(st.wr_shut);
    }
    if (st.opts.framing != TETHER_FRAMING_LEN32 &&
        (st.close_reason == TETHER_EMSGSIZE || st.close_reason == TETHER_EPROTO)) {
        /* Without control frames the reference decoder is the whole truth:
         * it fails the same way right after the last delivered message. */
        FUZZ_CHECK(end == st.close_reason);
        FUZZ_CHECK(msgs_count(&st.got) == msgs_count(&want));
    }

    /* What tether sent: well-formed frames carrying the messages it
     * accepted, in order (a prefix, as a close may drop the rest). */
    end = reference_decode(ref, st.out.p, st.out.len, TETHER__MAX_MSG_LIMIT, &sent, &partial, NULL);
    FUZZ_CHECK(end == TETHER_EAGAIN);
    FUZZ_CHECK(msgs_prefix(&sent, &st.expected));
    if ((st.close_reason == TETHER_EOF && (!goaway || drained)) || st.close_reason == TETHER_OK) {
        /* A graceful end flushes everything queued. */
        FUZZ_CHECK(msgs_count(&sent) == msgs_count(&st.expected) && !partial);
    }
    msgs_free(&want);
    msgs_free(&sent);
}

/* Connects a fresh connection for this input. */
static void open_conn(bool dial, unsigned idx)
{
    if (!dial) {
        listener_for(idx, &st.opts);
        struct sockaddr_un sun;
        socklen_t sl;
        int n;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "tether-fuzz-conn-%d-%u",
                     (int)getpid(), idx);
        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
        st.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (st.fd < 0 || fuzz_connect_eintr(st.fd, (struct sockaddr *)&sun, sl) != 0) {
            perror("fuzz_conn: connect");
            abort();
        }
        for (int i = 0; i < 1000 && !st.accepted; i++) {
            run_once(10);
        }
        FUZZ_CHECK(st.accepted);
        return;
    }
    tether_error err;
    if (tether_conn_dial(&st.c, st.loop, st.peer_url, &st.opts, &err) != TETHER_OK) {
        fprintf(stderr, "fuzz_conn: dial %s: %s\n", st.peer_url, err.message);
        abort();
    }
    st.fd = -1;
    for (int i = 0; i < 1000 && (st.fd < 0 || !st.connected); i++) {
        if (st.fd < 0) {
            st.fd = accept4(st.peer_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        }
        run_once(st.fd < 0 ? 1 : 0);
    }
    FUZZ_CHECK(st.fd >= 0 && st.connected);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tether__line_framer line_ref;
    const tether_framer *ref;
    size_t i;
    size_t filled = 0;

    if (size < 2) {
        return 0;
    }
    if (st.loop == NULL) {
        global_init();
    }
    st.c = NULL;
    st.accepted = st.connected = st.closed = st.wr_shut = st.paused = false;
    st.close_reason = 0;
    st.last_error[0] = '\0';
    st.cb_action = 0;
    st.echo = (data[0] & 0x40) != 0;
    st.in.len = st.out.len = 0;
    msgs_free(&st.got);
    msgs_free(&st.expected);
    setup_opts(&st.opts, data[0], data[1]);
    tether__ack_forget(st.loop); /* a fresh duplicate filter (ACK/RESUME) */

    switch (st.opts.framing) {
    case TETHER_FRAMING_LEN32:
        ref = tether__framer_len32_ctrl(); /* tether's own control frames too */
        break;
    case TETHER_FRAMING_VARINT:
        ref = tether_framer_varint();
        break;
    case TETHER_FRAMING_LINE:
        if (tether__line_framer_init(&line_ref, (const uint8_t *)st.opts.line_delim,
                                     strlen(st.opts.line_delim)) != TETHER_OK) {
            abort();
        }
        ref = &line_ref.base;
        break;
    default:
        ref = tether_framer_len32();
        break;
    }

    open_conn(data[0] & 1, (((unsigned)data[0] >> 1) & 31) * 12 +
                               ((unsigned)(data[1] & 0x7f) % TETHER__ARRAY_SIZE(max_msgs)) * 2 +
                               (data[1] >> 7));
    pump(); /* a HELLO from a dialling tether */

    for (i = 2; i < size && !st.closed;) {
        uint8_t op = data[i] & 7;
        unsigned arg = data[i] >> 3;
        i++;
        switch (op) {
        case 0:
        case 1: {
            size_t n = arg + 1u;
            if (op == 1) {
                n = i < size ? (size_t)data[i++] + 1 : 0;
            }
            if (n > size - i) {
                n = size - i;
            }
            peer_write(data + i, n);
            i += n;
            break;
        }
        case 2: {
            static uint8_t fill[32 * 1024];
            size_t n = (arg + 1u) * 1024u;
            if (i < size) {
                memset(fill, data[i++], n);
            }
            if (filled + n <= MAX_STREAM) {
                filled += n;
                peer_write(fill, n);
            }
            break;
        }
        case 3:
            tether_conn_pause(st.c);
            st.paused = true;
            pump();
            break;
        case 4:
            tether_conn_resume(st.c);
            st.paused = false;
            pump();
            break;
        case 5:
            st.cb_action = arg < 16 ? 1 : 2;
            st.cb_countdown = arg % 16;
            break;
        case 6: {
            static uint8_t msg[31 * 37];
            size_t n = arg * 37u;
            for (size_t k = 0; k < n; k++) {
                /* Never the byte that starts any delimiter used here. */
                msg[k] = (uint8_t)('A' + (k + i) % 26);
            }
            if (tether_conn_send(st.c, msg, n) == TETHER_OK) {
                msgs_add(&st.expected, msg, n);
            }
            pump();
            break;
        }
        default:
            if (!st.wr_shut) {
                shutdown(st.fd, SHUT_WR);
                st.wr_shut = true;
            }
            pump();
            break;
        }
    }

    /* The end: let tether read everything, then end the stream. */
    if (!st.closed) {
        tether_conn_resume(st.c);
        st.paused = false;
        pump();
    }
    if (!st.wr_shut) {
        shutdown(st.fd, SHUT_WR);
        st.wr_shut = true;
    }
    for (i = 0; i < CLOSE_ROUNDS && !st.closed; i++) {
        drain_output();
        run_once(0);
    }
    if (!st.closed) {
        /* Only a connection paused again from on_message may ignore the
         * end of the stream; a local abort must still end it at once. */
        FUZZ_CHECK(st.paused);
        tether_conn_abort(st.c);
        for (i = 0; i < 100 && !st.closed; i++) {
            run_once(0);
        }
    }
    FUZZ_CHECK(st.closed);
    drain_output();
    check_outcome(ref);
    close(st.fd);
    st.fd = -1;
    st.c = NULL;
    return 0;
}
