/* SPDX-License-Identifier: MIT */
/* Internal side of connections: the shared configuration, the connection
 * object and the hooks between the connection code (conn.c and the files
 * listed in conn_core.h), connect.c (dialling) and listener.c. */
#ifndef TETHER_CONN_INT_H
#define TETHER_CONN_INT_H

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "frame.h"
#include "loop.h"
#include "transport.h"
#include "url.h"

/* Configuration shared by every connection created from one set of options:
 * all connections accepted by a listener point at one instance, which keeps
 * the per-connection memory small. Reference-counted; immutable once built. */
struct tether__conn_cfg {
    unsigned refs;
    tether_conn_opts o;          /* a private copy; o.line_delim is not kept */
    const tether_framer *framer; /* the framer in use */
    tether__line_framer line;    /* storage for a line framer */
    bool fast_len32;             /* the plain len32 framer: use the inlined path */
    /* Accepted connections: who to tell once they are established. */
    tether_accept_cb on_accept;
    void *accept_ud;
    tether_listener *listener; /* NULL once the listener is closed */
    void *tls;                 /* TLS configuration (transport_tls.c), or NULL */
    uint8_t tls_tail;          /* with tls: the bytes its blocks have past the struct */
    bool live;                 /* a liveness feature (heartbeats, timeouts, max age) is on */
    bool live_lazy;            /* only frame/write timeouts: c->ex->live exists while needed */
    size_t accepted;           /* accepted connections alive (listener.c counts, conn.c frees) */
    /* PROXY protocol (conn_proxy.c): the versions an accepting listener
     * requires (TETHER__PP_V1|V2, 0: off) and its header deadline (ms,
     * negative: none); a dialler's source override (family 0: none). */
    unsigned pp_accept;
    int pp_timeout_ms;
    struct sockaddr_storage pp_source;
    /* WebSocket (ws.h): set for ws:// and wss:// URLs, NULL otherwise. */
    struct tether__ws_cfg *ws;
    /* Loop groups (group.c): counters shared with other threads, or NULL. */
    struct tether__lstats *lstats;
    /* Graceful shutdown of the listener (listener_drain.c), or NULL. */
    struct tether__shutdown *shutdown;
    /* Dialled connections: the URL they dial (their c->url), owned here. */
    char *dial_url;
};

/* Counters of one loop's part of a group listener, readable from any
 * thread (relaxed atomics: statistics and a load estimate, not a
 * synchronisation point). `active` counts live accepted connections and,
 * for an acceptor, sockets on their way to the loop. */
struct tether__lstats {
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t rejected;
    atomic_size_t active;
};

/* Builds a configuration from user options (NULL for defaults) for
 * dialled connections. */
int tether__conn_cfg_new(struct tether__conn_cfg **out, const tether_conn_opts *opts,
                         tether_error *err);
/* The same for either role: server (accepted connections) resolves
 * TETHER_ROLE_DEFAULT to the server values below, a client to 0 (off). */
int tether__conn_cfg_new_role(struct tether__conn_cfg **out, const tether_conn_opts *opts,
                              bool server, tether_error *err);

/* What TETHER_ROLE_DEFAULT means on accepted connections (documented in
 * tether/conn.h, "Slow and stuck peers"). A started frame must arrive at
 * 1 KiB/s measured over 30 s windows (Apache's mod_reqtimeout: 20-40 s at
 * 500 B/s); queued output must drain at 1 KiB/s over 60 s windows (nginx's
 * send_timeout: 60 s); keepalive and TCP_USER_TIMEOUT notice a peer that
 * vanished, idle or with data in flight, within about 2 minutes. */
#define TETHER__SRV_FRAME_TIMEOUT_MS 30000
#define TETHER__SRV_FRAME_MIN_RATE 1024
#define TETHER__SRV_WRITE_TIMEOUT_MS 60000
#define TETHER__SRV_WRITE_MIN_RATE 1024
#define TETHER__SRV_KEEPALIVE_IDLE_MS 60000
#define TETHER__SRV_KEEPALIVE_INTERVAL_MS 10000
#define TETHER__SRV_KEEPALIVE_COUNT 6
#define TETHER__SRV_USER_TIMEOUT_MS 120000
/* Drops a reference (NULL: none); the last frees the configuration. */
void tether__conn_cfg_free(struct tether__conn_cfg *cfg);
static inline void tether__conn_cfg_unref(struct tether__conn_cfg *cfg)
{
    if (cfg != NULL && --cfg->refs == 0) {
        tether__conn_cfg_free(cfg);
    }
}
/* Selects TLS for a configuration built from user options: takes a
 * reference to the TLS configuration cfg->o.tls names into cfg->tls (see
 * tether__tls_config_select). Fills err on failure. */
int tether__conn_cfg_set_tls(struct tether__conn_cfg *cfg, bool server, tether_error *err);

enum tether__conn_state {
    TETHER__CS_CONNECTING,  /* dialling: resolving and connecting */
    TETHER__CS_HANDSHAKING, /* transport handshake (TLS) */
    TETHER__CS_READY,       /* established */
    TETHER__CS_CLOSING,     /* flushing the queue before shutdown */
    TETHER__CS_LINGER,      /* reported closed; draining input until the peer's FIN */
    TETHER__CS_DEAD,        /* finished; on_close pending or done */
};

/* A queued piece of output: either a copy (bytes in data[]) or a reference
 * to a caller's zero-copy buffer. */
struct tether__wseg {
    struct tether__wseg *next;
    const uint8_t *ptr; /* next unwritten byte */
    size_t len;         /* unwritten bytes */
    size_t cap;         /* capacity of data[]; 0 for a reference */
    tether_free_cb free_cb;
    void *free_data;
    void *free_ud;
    uint8_t data[];
};

/* The peer's address as accept() gave it, kept so that error texts can
 * name a peer whose socket is already dead (getpeername fails then). */
union tether__peer_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* The same, compact (24 bytes instead of 28 and a hole). IPv4 or IPv6
 * only; family 0: none. */
struct tether__peer_min {
    uint16_t family;
    uint16_t port;     /* network order */
    uint32_t scope_id; /* IPv6 */
    uint8_t addr[16];  /* 4 bytes for IPv4 */
};

/* What every accepted connection keeps of it: an IPv4 address in 8 bytes;
 * for IPv6 only the family, the address being in c->ex->peer6. */
struct tether__peer4 {
    uint16_t family; /* AF_INET, AF_INET6 (see c->ex->peer6) or 0: none */
    uint16_t port;   /* network order */
    uint8_t addr[4];
};

struct tether__mem;       /* membudget.c */
struct tether__dialer;    /* connect.c */
struct tether__seg_cache; /* wq_seg.h */
struct tether__pp_conn;   /* conn_proxy.c */
struct tether__ws_cfg;    /* ws_handshake.c */
struct ws_transport;      /* transport_ws.c */
struct tether__dl;        /* completion.c, call.c */
struct tether__ack;       /* ack.c */

/* Liveness state, allocated only for connections whose configuration turns
 * on heartbeats or a timeout (cfg->live), so that other connections carry
 * nothing but the pointer. With only the frame and write timeouts on
 * (cfg->live_lazy: the server defaults) it exists only while a partial
 * frame or queued output has to be timed, and is freed when its timer
 * finds nothing left to watch: an idle connection has neither the struct
 * nor a timer. Times are loop milliseconds. The hot paths only
 * store timestamps here; one coarse timer compares them with the limits. */
struct tether__live {
    struct tether__tnode timer; /* the next check that can fail or ping */
    tether_conn *c;
    uint64_t last_rx;      /* the last read that returned bytes */
    uint64_t wstall;       /* the last write progress, or when the queue filled from empty */
    uint64_t last_wprog;   /* the last write progress */
    uint64_t frame_start;  /* when the incomplete frame in rpart began, then the
                              start of its current min-rate window */
    uint64_t frame_mark;   /* frames received when frame_start was taken */
    uint64_t frame_bytes;  /* bytes_in at frame_start */
    uint64_t wwin_start;   /* the queue went from empty to non-empty */
    uint64_t wbase_at;     /* the current write window began; 0 before the first */
    uint64_t wbase_val;    /* bytes the peer had received then (liveness.c) */
    uint64_t last_ping;    /* when the last ping went out */
    uint64_t age_deadline; /* max_age with its jitter; 0 for none */
    uint32_t unanswered;   /* pings sent since anything was received */
    uint32_t hb_ms;        /* negotiated heartbeat interval; 0: we send no pings */
    /* Statistics of the heartbeats (only a connection that sends them
     * has any: its live state is never freed). */
    uint64_t pings_sent;
    uint64_t pongs_in; /* answers to our pings */
    int64_t rtt_us;    /* -1 until measured */
};

/* What few connections use, or use only for a while, out of the main
 * struct: an idle accepted connection has none, and every byte of one
 * counts tens of thousands of times (issue #12). Allocated on first use
 * (tether__conn_extra()), freed with the connection or as soon as nothing
 * in it is in use (tether__conn_extra_trim()). Readers go through c->ex,
 * which may be NULL: nothing of it is in use then. */
struct tether__conn_extra {
    tether_conn *c;
    /* Connect deadline (dialled: DNS, TCP and any handshake; accepted: the
     * PROXY header, TLS or WebSocket handshake), then the close deadline
     * (lingering has the loop's timer, conn_linger.c). Through
     * tether__conn_timer_start/stop. */
    struct tether__tnode timer;
    struct tether__dialer *dialer; /* while dialling (connect.c) */
    struct tether__pp_conn *pp;    /* PROXY protocol header in flight or received; or NULL */
    /* Internal observer (reconnect.c): called after output was handed to
     * the transport, never from inside a user callback's dispatch of a
     * different connection. Must not call user code. */
    void (*wnotify)(tether_conn *c);
    /* Internal observer (reconnect_drain.c): a drain started on this
     * connection, asked by the peer or by us (max_age_ms). Runs inside the
     * connection's dispatch; may dial, must not close this connection. */
    void (*gnotify)(tether_conn *c);
    struct tether__dl *dl;         /* delivery (delivery.h): allocated on first use, or NULL */
    struct tether__drain *drain;   /* while draining (drain.c): the deadline and the texts */
    struct tether__ack *ack;       /* acknowledgements (ack.h): negotiated or asked for */
    struct tether__peer_min peer6; /* an accepted IPv6 peer (conn_info.c); family 0: none */
    struct ws_transport *ws;       /* the WebSocket layer in c->tr (TETHER__CH_WS), or NULL */
    tether_conn *mem_next;         /* on the memory budget's list while memflags != 0 */
    tether_conn *mem_prev;
    /* Heartbeats and timeouts (liveness.c): NULL unless cfg->live (and,
     * if lazy, needed); c->hooks has TETHER__CH_LIVE while set. */
    struct tether__live *live;
    /* The slot of tether_ref_get() (conn_ref.c); 0: none. While its slot
     * waits for write progress, c->hooks has TETHER__CH_REF. */
    uint32_t ref_idx;
    /* msgs_in above its low 32 bits (tether__conn_msgs_in()). */
    uint32_t msgs_in_hi;
};

/* The input buffer of a connection (conn_read.c: "rpart"), with its
 * bookkeeping in front of the bytes rather than in the connection: an
 * idle connection has no buffer, and so carries only the pointer. */
struct tether__rbuf {
    size_t len;   /* bytes held in data[] */
    size_t cap;   /* capacity of data[] (what the memory budget counts) */
    size_t scan;  /* framer resume hint for the frame at data[0] */
    size_t known; /* full size of the frame at data[0]; 0 if unknown */
    uint8_t data[];
};

struct tether_conn {
    /* First member (see struct tether__handle). Its loop is the
     * connection's loop: h.loop, not a second pointer. Registered from
     * allocation, active until freed; hidden from the walk until the
     * application has the connection and again once on_close has run. */
    struct tether__handle h;
    struct tether__conn_cfg *cfg;
    void *userdata;
    struct tether_transport *tr; /* &tcp, or a TLS or WebSocket transport */
    struct tether__io io;
    struct tether__pending pend;
    struct tether__flush flush;

    uint8_t state;
    uint8_t dispatching; /* nesting depth of library-to-user dispatch */
    uint16_t flags;
    uint8_t todo;     /* deferred work for pend */
    uint8_t hooks;    /* TETHER__CH_*: what of c->ex the hot paths must look at */
    uint8_t ws_mode;  /* (WebSocket, in the padding here) tether_ws_set_text() as queued:
                         0 default, 1 binary, 2 text */
    bool err_owned;   /* err below is our buffer */
    int8_t reason;    /* close reason once finishing (a TETHER_E* code) */
    uint8_t memflags; /* TETHER__MF_*: what the memory budget holds back (membudget.c) */
    /* (delivery and drain bytes, here in the padding; their state is in c->ex) */
    uint8_t rx_tag;   /* the next data frame is a request or a reply (call.c) */
    uint8_t drain_st; /* TETHER__DR_*: the drain frames sent and received (drain.c) */
    /* Control frames received (only told from 0, and summed with msgs_in
     * for liveness.c's frame mark: 32 bits, wrapping, are enough). */
    uint32_t ctrl_in;

    /* Output queue. Empty once lingering: a lingering connection that was
     * reported closed is on its loop's linger list through the same bytes
     * (conn_linger.c). */
    union {
        struct {
            struct tether__wseg *wq_head;
            struct tether__wseg *wq_tail;
        };
        struct tether__queue linger_node; /* next NULL: not on the list */
    };
    size_t queued; /* (the loop's cache of small segments: c->h.loop->segs) */

    /* Input not yet consumed: the start of an incomplete frame, or frames
     * held back while reading is paused; NULL when there is none. */
    struct tether__rbuf *rb;

    /* Detail of the last failure, or NULL: a constant (no allocation) or,
     * with err_owned, a buffer of TETHER_ERROR_MSG_MAX allocated for
     * formatted details (and reused by the next). */
    const char *err;
    struct tether__conn_extra *ex; /* cold state, or NULL (see the struct) */

    /* Statistics (tether_conn_get_stats). bytes_out is also the stream
     * offset the reconnecting client compares its messages with: every byte
     * ever queued is bytes_out + queued. */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t msgs_out;
    union {
        uint64_t ready_at;     /* loop ms when established; 0 before */
        uint64_t linger_until; /* on the linger list: loop ms it ends at */
    };
    /* Messages received: the low 32 bits, with a carry into
     * c->ex->msgs_in_hi (one add and a branch per message, as the 64-bit
     * count took an add): read through tether__conn_msgs_in(). */
    uint32_t msgs_in;
    /* (the heartbeat interval and counters are in c->ex->live:
     * tether__conn_hb_ms(), tether__conn_hb_stats()) */

    /* ---- resource limits (membudget.c, conn_read.c, listener.c) ---- */
    /* The low 32 bits of the part of queued the budget has counted:
     * between two syncs queued only grows, by less than 4 GiB (one
     * segment, max_msg at most 1 GiB), so queued - counted is exact in
     * 32 bits (tether__conn_qlag()). */
    uint32_t qacct;
    struct tether__peer4 peer; /* accepted: the address accept() gave (tether__conn_set_peer) */

    /* The transport, in place, last: the plain one (c->tr points here
     * unless TLS is on; a WebSocket layer wraps it), or a TLS one, which
     * runs on into the block's tail (tether__conn_alloc: a TLS
     * connection's block is cfg->tls_tail bytes longer, 16 on a server,
     * one heap block rather than two: issue #12). */
    struct tether_transport tcp;
};

/* The loop's memory budget and accounting (membudget.c): it exists while
 * the loop has a connection. */
static inline struct tether__mem *tether__conn_mem(const tether_conn *c)
{
    return c->h.loop->mem;
}

/* The budget is past its limit (tether__conn_mem(c)->over). */
static inline bool tether__conn_mem_over(const tether_conn *c)
{
    return c->h.loop->mem_over;
}

/* Bytes of input the connection holds (its rb). */
static inline size_t tether__conn_rlen(const tether_conn *c)
{
    return c->rb != NULL ? c->rb->len : 0;
}

/* The connection's cold state, allocated (zeroed) on first use; NULL
 * when out of memory. */
struct tether__conn_extra *tether__conn_extra(tether_conn *c);

/* Arms the connection's deadline (c->ex->timer, see the struct); false
 * when out of memory. */
bool tether__conn_timer_start(tether_conn *c, uint64_t ms);

static inline void tether__conn_timer_stop(tether_conn *c)
{
    if (c->ex != NULL) {
        tether__tnode_stop(c->h.loop, &c->ex->timer);
    }
}

/* Frees c->ex when nothing in it is in use any more. */
void tether__conn_extra_trim(tether_conn *c);

/* The connection's delivery state (delivery.h), or NULL. */
static inline struct tether__dl *tether__conn_dl(const tether_conn *c)
{
    return c->ex != NULL ? c->ex->dl : NULL;
}

/* The connection's drain state (drain.c), or NULL. */
static inline struct tether__drain *tether__conn_drain(const tether_conn *c)
{
    return c->ex != NULL ? c->ex->drain : NULL;
}

/* The connection's acknowledgement state (ack.h), or NULL. */
static inline struct tether__ack *tether__conn_ack(const tether_conn *c)
{
    return c->ex != NULL ? c->ex->ack : NULL;
}

/* conn->drain_st */
#define TETHER__DR_SENT_REQ 0x01u  /* we asked the peer to drain */
#define TETHER__DR_GOT_REQ 0x02u   /* the peer asked us to drain */
#define TETHER__DR_SENT_DONE 0x04u /* our last data message is queued: sends are refused */
#define TETHER__DR_GOT_DONE 0x08u  /* the peer sends no more data messages */

/* conn->flags */
#define TETHER__CF_PAUSED 0x0001u
#define TETHER__CF_WANT_DRAIN 0x0002u   /* send returned EAGAIN: fire on_drain at the lwm */
#define TETHER__CF_WBLOCKED 0x0004u     /* the socket is full: wait for writability */
#define TETHER__CF_CLOSE_REQ 0x0008u    /* close requested before the connection was up */
#define TETHER__CF_EOF 0x0010u          /* the peer's FIN was seen */
#define TETHER__CF_DIALED 0x0020u       /* created by tether_conn_dial */
#define TETHER__CF_CONNECT_DONE 0x0040u /* on_connect has been called */
#define TETHER__CF_ACCEPTED 0x0080u     /* created by a listener */
#define TETHER__CF_ACCEPT_DONE 0x0100u  /* on_accept has been called */
#define TETHER__CF_CLOSE_DONE 0x0200u   /* on_close has been called */
#define TETHER__CF_DRAIN_DUE 0x0400u
#define TETHER__CF_REPORT_LISTENER 0x0800u /* accepted, failed before on_accept: tell on_error */
#define TETHER__CF_HELLO_SENT 0x1000u      /* our HELLO control frame is queued or sent */
#define TETHER__CF_PEER_HELLO 0x2000u      /* the peer's HELLO arrived: it speaks control frames */
#define TETHER__CF_KEEP_REASON 0x4000u     /* a liveness close: on_close keeps reason and detail */
/* Lazy liveness: the queue started, watched only if a flush leaves output
 * behind (tether__live_qstart_due). */
#define TETHER__CF_QSTART_DUE 0x8000u

/* The URL a dialled connection was given, or NULL. */
static inline const char *tether__conn_url(const tether_conn *c)
{
    return (c->flags & TETHER__CF_DIALED) != 0 ? c->cfg->dial_url : NULL;
}

/* conn->hooks: set while c->ex holds them, so that the per-write and
 * per-read checks test one byte of the connection, as they tested one
 * pointer before these moved out of it */
#define TETHER__CH_WNOTIFY 0x01u /* c->ex->wnotify */
#define TETHER__CH_ACK 0x02u     /* c->ex->ack */
#define TETHER__CH_WS 0x04u      /* c->ex->ws */
#define TETHER__CH_REF 0x08u     /* c->ex->ref_idx's slot waits for write progress */
#define TETHER__CH_LIVE 0x10u    /* c->ex->live */

/* The connection's liveness state (liveness.c), or NULL: one byte tested,
 * as the read and write paths ask on every call. */
static inline struct tether__live *tether__conn_live(const tether_conn *c)
{
    return (c->hooks & TETHER__CH_LIVE) != 0 ? c->ex->live : NULL;
}

/* The negotiated heartbeat interval; 0: the connection sends no pings
 * (one that does has c->ex->live, never freed). */
static inline uint32_t tether__conn_hb_ms(const tether_conn *c)
{
    const struct tether__live *l = tether__conn_live(c);
    return l != NULL ? l->hb_ms : 0;
}

/* The heartbeat statistics of a connection (0, 0 and -1 without). */
static inline void tether__conn_hb_stats(const tether_conn *c, uint64_t *pings, uint64_t *pongs,
                                         int64_t *rtt_us)
{
    const struct tether__live *l = tether__conn_live(c);
    *pings = l != NULL ? l->pings_sent : 0;
    *pongs = l != NULL ? l->pongs_in : 0;
    *rtt_us = l != NULL ? l->rtt_us : -1;
}

/* Messages received (the 32-bit count with its carry). */
static inline uint64_t tether__conn_msgs_in(const tether_conn *c)
{
    return c->ex != NULL ? (uint64_t)c->ex->msgs_in_hi << 32 | c->msgs_in : c->msgs_in;
}

/* c->msgs_in wrapped to 0: carries into c->ex (conn.c). */
void tether__conn_msgs_in_carry(tether_conn *c);

/* Counts a message received. */
static inline void tether__conn_count_in(tether_conn *c)
{
    if (TETHER__UNLIKELY(++c->msgs_in == 0)) {
        tether__conn_msgs_in_carry(c);
    }
}

/* The slot of the connection's thread-safe reference (conn_ref.c); 0:
 * none. */
static inline uint32_t tether__conn_ref_idx(const tether_conn *c)
{
    return c->ex != NULL ? c->ex->ref_idx : 0;
}

/* The connection's WebSocket layer (transport_ws.c), or NULL: one byte
 * tested, since the read path asks for every message. */
static inline struct ws_transport *tether__conn_ws(const tether_conn *c)
{
    return (c->hooks & TETHER__CH_WS) != 0 ? c->ex->ws : NULL;
}

/* Sets (or, with NULL, clears) c->ex->wnotify; c->ex must exist to set
 * one. */
static inline void tether__conn_set_wnotify(tether_conn *c, void (*fn)(tether_conn *c))
{
    if (c->ex == NULL) {
        return; /* (fn is NULL: nothing was set) */
    }
    c->ex->wnotify = fn;
    c->hooks =
        (uint8_t)(fn != NULL ? c->hooks | TETHER__CH_WNOTIFY : c->hooks & ~TETHER__CH_WNOTIFY);
}

/* conn->todo: what the pending callback has to do */
#define TETHER__CT_CONNECTED 0x01u
#define TETHER__CT_PARSE 0x02u
#define TETHER__CT_DIALED 0x04u /* connected inside tether_conn_dial(): attach from the loop */
#define TETHER__CT_CLOSE 0x08u
#define TETHER__CT_FREE 0x10u
#define TETHER__CT_FLUSH 0x20u /* write what was queued before the connection was ready */
/* The work added now is handled by the code running it: tether__conn_todo()
 * does not queue the pending node for it. */
#define TETHER__CT_HELD 0x40u

/* Allocates a connection in the given state, registered with the loop. */
tether_conn *tether__conn_alloc(tether_loop *loop, struct tether__conn_cfg *cfg, uint8_t state);

/* A socket is connected (dialled or accepted): wrap it in the transport the
 * configuration asks for and start the handshake. host is the name the
 * client dialled (for TLS SNI and verification), NULL on servers. Takes
 * ownership of fd. handoff, if not NULL, is a watcher whose epoll
 * registration of fd the connection takes over (the dialer's). */
int tether__conn_attach(tether_conn *c, int fd, bool is_unix, const char *host, bool server,
                        struct tether__io *handoff);

/* tether__conn_attach() for a direct dial's plain socket (no WebSocket or
 * PROXY header) whose connect finished before anything was registered for
 * it: the connection takes over c->io.fd, established at once. */
void tether__conn_attach_dialed(tether_conn *c, bool is_unix);

/* Records the address accept() gave (IPv4 and IPv6; others are ignored),
 * and reads it back; false when none was recorded (conn_info.c). An IPv4
 * address, the common case, is stored inline. */
void tether__conn_set_peer6(tether_conn *c, const union tether__peer_addr *pa);
static inline void tether__conn_set_peer(tether_conn *c, const union tether__peer_addr *pa)
{
    if (pa->sa.sa_family == AF_INET) {
        c->peer.family = AF_INET;
        c->peer.port = pa->in.sin_port;
        memcpy(c->peer.addr, &pa->in.sin_addr, sizeof pa->in.sin_addr);
    } else if (pa->sa.sa_family == AF_INET6) {
        tether__conn_set_peer6(c, pa);
    }
}
bool tether__conn_get_peer(const tether_conn *c, union tether__peer_addr *out);

/* Ends the connection with a reason; detail (may be NULL) is printf-style. */
void tether__conn_fail(tether_conn *c, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends the connection with a reason and a constant detail (a string
 * literal: kept by pointer, nothing formatted or allocated). */
void tether__conn_fail_const(tether_conn *c, int reason, const char *detail);

/* Ends the connection with a reason, keeping the detail already recorded. */
void tether__conn_end(tether_conn *c, int reason);

/* Records a detail string without ending the connection. */
void tether__conn_set_err(tether_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Applies socket options from the configuration to a fresh socket. */
void tether__sock_apply_opts(int fd, const struct tether__conn_cfg *cfg, bool is_unix);

/* Whether all tether__sock_apply_opts() would set on a TCP socket is
 * TCP_NODELAY (the default options): a dial then sets it itself. Keep it
 * in step with tether__sock_apply_opts(). */
static inline bool tether__sock_opts_just_nodelay(const tether_conn_opts *o)
{
    return o->nodelay && o->sndbuf <= 0 && o->rcvbuf <= 0 && !o->keepalive &&
           o->user_timeout_ms <= 0;
}

/* Whether fd already has what tether__sock_apply_opts() would set: Linux
 * copies a listening socket's TCP options into the sockets it accepts, so
 * a listener sets them once on itself and checks its first connection. */
bool tether__sock_opts_inherited(int fd, const struct tether__conn_cfg *cfg, bool is_unix);

/* The configuration and the parsed URL for tether_conn_dial(loop, url,
 * opts) (dial_cfg.c) when tether__dial_mem_find() (dial.h) has none:
 * built as new (cfg->dial_url holds url, *out_u points at storage) and
 * remembered by the loop where it can be shared. Fills err on failure. */
int tether__dial_cfg(tether_loop *loop, const char *url, const tether_conn_opts *opts,
                     struct tether__conn_cfg **out_cfg, const struct tether__url **out_u,
                     struct tether__url *storage, tether_error *err);

/* Dialling (connect.c; tether__dial_start() is in dial.h). */
void tether__dial_cancel(tether_conn *c);
/* The dial's socket turned out connected inside tether__dial_start()
 * (TETHER__CT_DIALED): the connection takes it over now, from the loop. */
void tether__dial_connected(tether_conn *c);

/* Graceful listener shutdown (listener_drain.c): start it for the
 * connections of cfg (the listener is closed by the caller), and tell it
 * that an accepted connection was freed. */
int tether__shutdown_start(tether_loop *loop, struct tether__conn_cfg *cfg, int deadline_ms,
                           tether_shutdown_cb on_done, void *ud);
void tether__shutdown_conn_gone(struct tether__conn_cfg *cfg);
/* An accepted connection sent its HELLO while its listener shuts down:
 * ask it to drain now (one that had sent nothing was left for this). */
void tether__shutdown_conn_hello(tether_conn *c);

/* Reports through the listener's on_error an accepted connection that
 * failed before it was established (listener.c). */
void tether__listener_report_conn(tether_listener *l, int err, const char *detail);

/* Loop groups (listener.c, used by group.c). */
/* An accepting listener with this set hands every accepted socket to fn
 * (which takes ownership of fd) instead of making a connection itself. */
typedef void (*tether__listener_handoff_fn)(void *ud, int fd, const union tether__peer_addr *pa);
/* A listener without a socket: it only adopts sockets handed to it. */
int tether__listen_sockless(tether_listener **out, tether_loop *loop, const char *url,
                            const tether_listen_opts *opts, tether_error *err);
/* Shares counters (see struct tether__lstats), hands accepted sockets
 * over, and tells closed(ud) when the listener closes; any may be NULL. */
void tether__listener_set_group(tether_listener *l, struct tether__lstats *st,
                                tether__listener_handoff_fn handoff, void *ud,
                                void (*closed)(void *ud));
/* Makes a connection of an accepted socket (owned from here on) on the
 * listener's loop, within max_conns. counted: st->active already counts it. */
void tether__listener_adopt(tether_listener *l, int fd, const union tether__peer_addr *pa,
                            bool counted);
/* The connect deadline passed while dialling (c->dialer is set): records
 * what was tried and ends the connection. */
void tether__dial_timeout(tether_conn *c);

#endif /* TETHER_CONN_INT_H */
