/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the WebSocket read path of a real connection: a
 * tether ws:// listener on 127.0.0.1 accepts a TCP connection whose other
 * end (this harness) sends a fixed upgrade request, with or without the
 * x-tether-control extension, and then the input as the client's frames.
 * It covers frame headers of every length form, masking, fragmentation
 * and its limits, UTF-8 validation of text, control frames (ping, pong,
 * close, and tether control frames between tether ends), the protocol
 * violations that close with 1002, 1007 or 1009, reads cut at arbitrary
 * boundaries, echoes while input arrives, and the end of stream.
 *
 * Input layout (see README.md):
 *   byte 0  bit 0: offer the extension; bits 1-2: max_msg; bit 3: echo
 *           every message back; bit 4: heartbeats on
 *   byte 1  the size (1..256) of the chunks the rest is written in
 *   then the client's byte stream after the upgrade.
 * At the end the harness ends its stream and the connection must close
 * within bounded loop iterations. The messages delivered must be a prefix
 * of what a reference decoder finds in the frames written (with their
 * types), every text message valid UTF-8 and within max_msg; what tether
 * wrote must be unmasked frames that carry the echoed messages in order,
 * with nothing after its close frame. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_helpers.h"
#include "ws.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (last error: %s)\n", __FILE__, __LINE__,  \
                    #cond, st.last_error);                                                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define N_CFG 32          /* extension x max_msg x echo x heartbeats */
#define PUMP_ROUNDS 200   /* loop iterations to let tether read one write */
#define CLOSE_ROUNDS 400  /* loop iterations for the connection to close */
#define MAX_STREAM 300000 /* input bytes used */

static const size_t max_msgs[] = {7, 125, 300, 70000};

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

/* Messages back to back, with their lengths and types. */
struct msgs {
    struct buf bytes;
    struct buf lens; /* size_t each, the top bit set for text */
};

#define TEXT_BIT ((size_t)1 << (sizeof(size_t) * 8 - 1))

static void msgs_add(struct msgs *m, const uint8_t *p, size_t n, bool text)
{
    buf_add(&m->bytes, p, n);
    size_t l = n | (text ? TEXT_BIT : 0);
    buf_add(&m->lens, &l, sizeof l);
}

static void msgs_free(struct msgs *m)
{
    free(m->bytes.p);
    free(m->lens.p);
    memset(m, 0, sizeof *m);
}

/* a is a prefix of b (same bytes, lengths and types, in order). */
static bool msgs_prefix(const struct msgs *a, const struct msgs *b)
{
    return a->lens.len <= b->lens.len && a->bytes.len <= b->bytes.len &&
           (a->lens.len == 0 || memcmp(a->lens.p, b->lens.p, a->lens.len) == 0) &&
           (a->bytes.len == 0 || memcmp(a->bytes.p, b->bytes.p, a->bytes.len) == 0);
}

static struct {
    tether_loop *loop;
    tether_listener *listeners[N_CFG];
    int ports[N_CFG];
    tether_conn_opts opts;
    tether_conn *c;
    int fd;
    bool closed;
    int close_reason;
    char last_error[TETHER_ERROR_MSG_MAX];
    bool echo;
    struct buf in;  /* the frames we wrote */
    struct buf out; /* what tether wrote */
    struct msgs got;
    struct msgs expected; /* echoes tether accepted */
} st;

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    FUZZ_CHECK(c == st.c && !st.closed);
    FUZZ_CHECK(len <= st.opts.max_msg);
    bool text = tether_ws_msg_is_text(c);
    FUZZ_CHECK(!text || tether__utf8_feed(0, data, len) == 0);
    msgs_add(&st.got, data, len, text);
    if (st.echo && tether_ws_set_text(c, text) == TETHER_OK &&
        tether_conn_send(c, data, len) == TETHER_OK) {
        msgs_add(&st.expected, data, len, text);
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

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    FUZZ_CHECK(st.c == NULL);
    st.c = c;
}

static void run_once(void)
{
    FUZZ_CHECK(tether_loop_run_once(st.loop, 0) >= 0);
}

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

static void pump(void)
{
    for (int i = 0; i < PUMP_ROUNDS && !st.closed; i++) {
        run_once();
        drain_output();
    }
}

static void pump_some(void)
{
    for (int i = 0; i < 8 && !st.closed; i++) {
        run_once();
        drain_output();
    }
}

static void peer_write(const uint8_t *p, size_t n)
{
    for (int tries = 0; n > 0 && tries < 64 && !st.closed; tries++) {
        ssize_t w = send(st.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            buf_add(&st.in, p, (size_t)w);
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* tether closed its end */
        }
        pump_some();
    }
}

/* A frame header (RFC 6455 5.2), decoded independently of the library.
 * Returns the header length, 0 when incomplete, -1 when malformed. */
struct hdr {
    bool fin, masked;
    unsigned rsv, op;
    uint64_t len;
    uint8_t key[4];
};

static int hdr_decode(const uint8_t *p, size_t n, struct hdr *h)
{
    if (n < 2) {
        return 0;
    }
    h->fin = p[0] >> 7;
    h->rsv = (p[0] >> 4) & 7u;
    h->op = p[0] & 15u;
    h->masked = p[1] >> 7;
    size_t off = 2;
    h->len = p[1] & 127u;
    if (h->len == 126) {
        if (n < 4) {
            return 0;
        }
        h->len = ((uint64_t)p[2] << 8) | p[3];
        off = 4;
    } else if (h->len == 127) {
        if (n < 10) {
            return 0;
        }
        h->len = 0;
        for (int i = 0; i < 8; i++) {
            h->len = (h->len << 8) | p[2 + i];
        }
        if (h->len >> 63) {
            return -1;
        }
        off = 10;
    }
    if (h->masked) {
        if (n < off + 4) {
            return 0;
        }
        memcpy(h->key, p + off, 4);
        off += 4;
    }
    return (int)off;
}

/* The data messages in the client's frames, up to the first frame tether
 * must refuse or the end of what arrived whole. Control frames carry no
 * message; a close frame ends the stream. */
static void reference_decode(const uint8_t *p, size_t n, bool tctl, size_t max, struct msgs *out)
{
    if (n == 0) {
        return;
    }
    struct buf frag = {0};
    bool in_msg = false;
    unsigned msg_op = 0;
    size_t off = 0;
    for (;;) {
        struct hdr h;
        int hl = hdr_decode(p + off, n - off, &h);
        if (hl <= 0 || !h.masked || n - off - (size_t)hl < h.len) {
            break;
        }
        uint8_t *pl = malloc(h.len + 1);
        FUZZ_CHECK(pl != NULL);
        for (uint64_t i = 0; i < h.len; i++) {
            pl[i] = p[off + (size_t)hl + i] ^ h.key[i & 3];
        }
        off += (size_t)hl + h.len;
        bool stop = false;
        if (h.rsv == 2 && tctl && h.op == 2 && h.fin && !in_msg) {
            /* a tether control frame: no message */
        } else if (h.rsv != 0 || (h.op > 2 && h.op < 8) || h.op > 10) {
            stop = true;
        } else if (h.op >= 8) {
            stop = h.op == 8 || !h.fin || h.len > 125;
        } else if ((h.op == 0) != in_msg || (in_msg ? frag.len : 0) + h.len > max) {
            stop = true;
        } else {
            if (!in_msg) {
                msg_op = h.op;
                frag.len = 0;
            }
            buf_add(&frag, pl, h.len);
            in_msg = !h.fin;
            if (h.fin) {
                bool text = msg_op == 1;
                if (text && tether__utf8_feed(0, frag.p, frag.len) != 0) {
                    stop = true;
                } else {
                    msgs_add(out, frag.p, frag.len, text);
                }
            }
        }
        free(pl);
        if (stop) {
            break;
        }
    }
    free(frag.p);
}

/* tether's frames: unmasked, the data messages in out, nothing after the
 * close frame. */
static void output_decode(const uint8_t *p, size_t n, struct msgs *out)
{
    if (n == 0) {
        return;
    }
    struct buf frag = {0};
    bool in_msg = false;
    unsigned msg_op = 0;
    bool closed = false;
    size_t off = 0;
    for (;;) {
        struct hdr h;
        int hl = hdr_decode(p + off, n - off, &h);
        if (hl <= 0 || n - off - (size_t)hl < h.len) {
            break;
        }
        FUZZ_CHECK(!closed);   /* nothing follows our close frame */
        FUZZ_CHECK(!h.masked); /* a server never masks */
        FUZZ_CHECK(h.rsv == 0 || h.rsv == 2);
        const uint8_t *pl = p + off + (size_t)hl;
        off += (size_t)hl + h.len;
        if (h.op >= 8 || h.rsv == 2) {
            closed = closed || h.op == 8;
            continue;
        }
        if (!in_msg) {
            msg_op = h.op;
            frag.len = 0;
        }
        buf_add(&frag, pl, h.len);
        in_msg = !h.fin;
        if (h.fin) {
            msgs_add(out, frag.p, frag.len, msg_op == 1);
        }
    }
    free(frag.p);
}

static int listener_port(unsigned idx)
{
    if (st.listeners[idx] == NULL) {
        tether_listen_opts lo;
        tether_error err;
        tether_listen_opts_init(&lo);
        lo.on_accept = on_accept;
        lo.conn_opts = &st.opts;
        if (tether_listen(&st.listeners[idx], st.loop, "ws://127.0.0.1:0/", &lo, &err) !=
            TETHER_OK) {
            fprintf(stderr, "fuzz_ws: listen: %s\n", err.message);
            abort();
        }
        st.ports[idx] = tether_listener_port(st.listeners[idx]);
    }
    return st.ports[idx];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    if (st.loop == NULL && tether_loop_new(&st.loop, NULL) != TETHER_OK) {
        abort();
    }
    uint8_t b0 = data[0];
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size = size - 2 > MAX_STREAM ? MAX_STREAM : size - 2;
    bool tctl = b0 & 1;
    unsigned idx = b0 & (N_CFG - 1);
    tether_conn_opts_init(&st.opts);
    st.opts.on_message = on_message;
    st.opts.on_close = on_close;
    st.opts.max_msg = max_msgs[(b0 >> 1) & 3];
    st.opts.heartbeat_ms = (b0 & 16) ? 3600 * 1000 : 0; /* (never due during an input) */
    st.echo = b0 & 8;
    int port = listener_port(idx);

    st.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FUZZ_CHECK(st.fd >= 0);
    FUZZ_CHECK(fuzz_connect_eintr(st.fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n%s\r\n",
                      tctl ? "Sec-WebSocket-Extensions: " TETHER__WS_EXT_CTRL "\r\n" : "");
    FUZZ_CHECK(send(st.fd, req, (size_t)rl, MSG_NOSIGNAL) == rl);
    /* The 101 response, then the stream. */
    uint8_t *end = NULL;
    for (int i = 0; i < 4 * PUMP_ROUNDS && end == NULL && !st.closed; i++) {
        run_once();
        drain_output();
        end = st.out.len > 0 ? memmem(st.out.p, st.out.len, "\r\n\r\n", 4) : NULL;
    }
    FUZZ_CHECK(end != NULL && st.c != NULL);
    FUZZ_CHECK(memcmp(st.out.p, "HTTP/1.1 101 ", 13) == 0);
    size_t head = (size_t)(end - st.out.p) + 4;
    memmove(st.out.p, st.out.p + head, st.out.len - head);
    st.out.len -= head;

    for (size_t off = 0; off < size && !st.closed; off += chunk) {
        peer_write(data + off, chunk < size - off ? chunk : size - off);
    }
    pump();
    shutdown(st.fd, SHUT_WR);
    for (int i = 0; i < CLOSE_ROUNDS && !st.closed; i++) {
        run_once();
        drain_output();
    }
    if (!st.closed) {
        /* A peer that ended its stream cleanly after whole frames is
         * answered with a close; one that stopped inside a frame gets the
         * end of stream reported: either way the connection ends. */
        FUZZ_CHECK(st.closed);
    }
    drain_output();

    struct msgs ref = {0};
    reference_decode(st.in.p, st.in.len, tctl, st.opts.max_msg, &ref);
    FUZZ_CHECK(msgs_prefix(&st.got, &ref));
    struct msgs wrote = {0};
    output_decode(st.out.p, st.out.len, &wrote);
    FUZZ_CHECK(msgs_prefix(&wrote, &st.expected));

    msgs_free(&ref);
    msgs_free(&wrote);
    msgs_free(&st.got);
    msgs_free(&st.expected);
    free(st.in.p);
    free(st.out.p);
    memset(&st.in, 0, sizeof st.in);
    memset(&st.out, 0, sizeof st.out);
    close(st.fd);
    st.c = NULL;
    st.closed = false;
    st.last_error[0] = '\0';
    /* Let the listener finish with the closed connection. */
    for (int i = 0; i < 4; i++) {
        run_once();
    }
    return 0;
}
