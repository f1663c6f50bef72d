/* SPDX-License-Identifier: MIT */
/* chat_server: a chat room over mutual TLS, where a slow client never
 * stalls the others, and which a browser can join over WebSocket.
 *
 *   chat_server --listen tls://127.0.0.1:7000 --cert certs/server.pem
 *               --key certs/server.key --ca certs/ca.pem
 *               [--ws ws://127.0.0.1:7001/chat | --ws wss://127.0.0.1:7001/chat]
 *               [--queue BYTES] [--max-line BYTES] [--verbose] [--threads N]
 *               [--idle-timeout MS] [--frame-timeout MS] [--frame-min-rate B]
 *               [--write-timeout MS] [--write-min-rate B]
 *
 * Clients (see chat_client.c) connect with a certificate from --ca: the
 * certificate's common name (CN) is their nickname, so nobody can speak
 * under someone else's name. Every line a client sends goes to everyone
 * else as `<nick> text`; joins and departures are announced as
 * `* alice joined` and `* alice left`. A newcomer first gets
 * `* welcome alice; here: bob, carol`.
 *
 * With --ws, a second listener on the same loops takes WebSocket clients
 * (browsers: examples/chat.html). They have no certificate, so they name
 * themselves in the request path, `/chat?nick=dave`, and appear as
 * `~dave`: the tilde marks a name nobody vouched for, so that it can never
 * pass for a certificate's. Each WebSocket text message is one line, and
 * every line reaches them as one text message. wss:// uses --cert and
 * --key without asking for a client certificate.
 *
 * What it shows:
 * - a TLS listener that requires client certificates, and reading the
 *   peer's name with tether_conn_tls_info() in `on_accept`;
 * - two listeners (tls:// and ws://) feeding one room on the same loops, each
 *   with its own connection options (line framing for TLS, WebSocket
 *   messages for browsers), and tether_ws_path() in `on_accept`;
 * - line framing (TETHER_FRAMING_LINE): the library cuts the stream into
 *   lines and enforces a maximum line length;
 * - backpressure in a fan-out server. tether_conn_send() never blocks: it
 *   queues, and fails with TETHER_EAGAIN once a connection's queue holds
 *   more than its high-water mark (here --queue, default 1 MiB). The policy
 *   is: **a client whose queue is full is disconnected**, and the others
 *   are told `* bob left (dropped: not reading fast enough)`. So one client
 *   that stops reading costs at most --queue bytes of memory (plus the
 *   kernel's socket buffers) and never delays anyone else. The alternative,
 *   skipping lines for that client, would leave it with a conversation that
 *   has silent holes in it. The same rule applies to a client that reads,
 *   but more slowly than the room talks for as long as its queue lasts
 *   (a flood of several MB per second): raise --queue for bursty rooms.
 *   --mem-limit bounds all queues together: past it, sends to the clients
 *   holding the most are refused too, and the same rule drops them;
 *   --max-conns bounds the number of clients;
 * - the logging hook: --verbose sends the library's own diagnostics to
 *   stderr (tether_set_log());
 * - a clean shutdown on SIGINT or SIGTERM, as in echo_server.c.
 * - every core (--threads N, default 1): the room runs on a loop group of
 *   N loops, one thread each, and both listeners spread their clients over
 *   the loops (tether_group_listen()). Each loop owns its connections;
 *   every member also has a thread-safe reference (tether_ref_get()) in
 *   the room's member list, which one mutex protects. A line is broadcast
 *   from the loop that received it: to members of that loop with
 *   tether_conn_send(), to members of other loops with tether_ref_send(),
 *   which copies the line into the owning loop's queue. So every member
 *   gets the lines of one sender in the order that sender wrote them. A
 *   member that is gone fails with TETHER_ECLOSED and is skipped from then
 *   on (its own loop unlinks it in on_close). Backpressure per reference:
 *   a reference refuses with TETHER_EAGAIN once the bytes it holds for a
 *   member (not yet handed to that member's queue, which is itself full
 *   at --queue) reach --queue; the same policy then drops the member, on
 *   its own loop (tether_loop_post(): work sent through the reference
 *   would wait behind the sends it holds back). A slow member thus holds
 *   at most about twice --queue. The stdout lines name the loop of each joining
 *   client when N > 1: `alice joined from 127.0.0.1:40000 on loop 1`.
 *
 * Lines from clients are cleaned before they are passed on: a trailing
 * "\r" (from telnet-style clients) is removed, empty lines are ignored, and
 * control characters become '?', so that nobody can send terminal escape
 * sequences to the others: C0 (0x00 to 0x1f except tab, and 0x7f) and C1
 * (U+0080 to U+009F, which a terminal may take as ESC [ and the like, both
 * as the UTF-8 bytes C2 80 to C2 9F and as raw bytes 0x80 to 0x9f). Valid
 * UTF-8 text otherwise passes unchanged; every byte that is not part of a
 * valid UTF-8 character becomes '?' as well.
 *
 * stdout gets one line per event, flushed: `listening on URL`,
 * `alice joined from 127.0.0.1:40000`, `alice left`,
 * `bob dropped: not reading fast enough (1048576 bytes queued)`. Clients
 * that fail the TLS handshake (no certificate, an untrusted one) are
 * reported on stderr. Exit status 0 after a clean stop, 1 otherwise. */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

#define NICK_MAX 64

struct options {
    const char *listen_url;
    const char *ws_url;           /* --ws: a WebSocket listener too, or NULL */
    tether_group_balance balance; /* --balance: how clients spread over the loops */
    struct cli_tls tls;           /* --cert, --key and --ca: all three are needed */
    size_t queue;                 /* per-client send queue limit (send_hwm) */
    size_t max_line;              /* longest line accepted from a client */
    bool verbose;
    struct cli_timeouts timeouts; /* against slow and stuck clients */
    struct cli_limits limits;     /* --max-conns, --mem-limit (common/cli.h) */
    struct cli_threads threads;   /* --threads: loops in the group */
};

struct room;

/* One loop of the group and what only its thread uses. */
struct shard {
    struct room *room;
    int index;
    char *line; /* scratch buffer for "<nick> text": max_line + NICK_MAX + 4 */
};

/* One connected client, found through the connection's user data. */
struct member {
    struct room *room;
    struct shard *shard;        /* the loop that owns conn */
    tether_conn *conn;          /* only ever used on that loop's thread */
    tether_ref ref;             /* for the other loops */
    struct member *prev, *next; /* everyone in the room, under room->mu */
    char nick[NICK_MAX];
    atomic_bool dropped; /* being dropped for not reading; on_close will announce it */
    atomic_bool gone;    /* a send said TETHER_ECLOSED: it is leaving */
    size_t too_long;     /* the length of a line over --max-line: closing (own loop only) */
};

struct room {
    const struct options *opt;
    tether_loop_group *group;
    struct shard *shards; /* one per loop */
    size_t nshards;
    tether_group_listener *listener;
    tether_group_listener *ws_listener; /* --ws, or NULL */
    /* The member list, read by every loop's broadcasts and changed by the
     * loop that owns the member. Never held while waiting for anything:
     * the sends under it only queue. */
    pthread_mutex_t mu;
    struct member *members;
    atomic_bool stopping;           /* shutting down: no more notices */
    tether_signal *stop_signals[2]; /* SIGINT, SIGTERM, on loop 0 */
};

static const char usage[] =
    "usage: chat_server --listen tls://HOST:PORT --cert PEM --key PEM --ca PEM [options]\n"
    "A chat room: every line a client sends goes to everyone else, prefixed with\n"
    "the sender's nickname, which is the common name (CN) of its certificate.\n\n"
    "  --listen URL      tls://HOST:PORT (port 0 picks one)\n" CLI_USAGE_TLS_SERVER
    "                    (every client must present one)\n"
    "  --ws URL          also take WebSocket clients (browsers) on ws://HOST:PORT/PATH\n"
    "                    or wss://HOST:PORT/PATH (--cert and --key, no client\n"
    "                    certificate); they choose a nickname with ?nick=NAME\n"
    "  --queue BYTES     a client whose unsent output exceeds this is disconnected\n"
    "                    (default 1048576)\n"
    "  --max-line BYTES  longest line accepted from a client (default 4096)\n"
    "  --verbose         print the library's diagnostics (info and up) on "
    "stderr\n" CLI_USAGE_THREADS
    "  --balance MODE    how --threads spreads clients: reuseport (the kernel, by a\n"
    "                    hash of their addresses; the default) or acceptor (loop 0\n"
    "                    accepts and hands each to the loop with the fewest)\n" CLI_USAGE_TIMEOUTS
        CLI_USAGE_LIMITS CLI_USAGE_COMMON;

/* ---- the room ------------------------------------------------------------ */

static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stdout, flushed: scripts wait for these. */
static void event(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* A drop decided on another loop, to carry out on the member's own. */
struct drop_req {
    struct room *room;
    struct member *m; /* may be freed by then: only compared, under room->mu */
    tether_ref ref;   /* tells a new member at the same address apart */
    bool report;      /* print the "not reading fast enough" line */
};

/* On the member's own loop. Not through tether_ref_post(): that work
 * would queue behind the very sends the full connection holds back, and
 * never run while the member does not read. A member still in the list
 * has not had its on_close, which runs on this same thread: its
 * connection is alive. */
static void drop_on_own_loop(tether_loop *loop, void *ud)
{
    (void)loop;
    struct drop_req *d = ud;
    struct room *room = d->room;
    pthread_mutex_lock(&room->mu);
    for (struct member *m = room->members; m != NULL; m = m->next) {
        if (m == d->m && m->ref.id == d->ref.id) {
            if (d->report) {
                event("%s dropped: not reading fast enough (%zu bytes queued)", m->nick,
                      tether_conn_queued(m->conn) + tether_ref_pending(m->ref));
            }
            tether_conn_abort(m->conn); /* on_close follows on a later iteration */
            break;
        }
    }
    pthread_mutex_unlock(&room->mu);
    free(d);
}

/* Sends one line to one member, from the loop `from` (room->mu held). A
 * full queue means that member reads more slowly than the room talks:
 * disconnect it rather than let it hold memory without bound or hold up
 * anyone else. The abort only marks it; on_close runs on a later
 * iteration, so the caller's loop over the members stays valid. */
static void deliver(const struct shard *from, struct member *m, const char *line, size_t len)
{
    if (atomic_load(&m->dropped) || atomic_load(&m->gone)) {
        return;
    }
    if (m->shard != from) {
        /* Another loop's member: its reference queues a copy there. */
        int rv = tether_ref_send(m->ref, line, len, NULL, NULL);
        if (rv == TETHER_OK) {
            return;
        }
        if (rv == TETHER_ECLOSED) {
            atomic_store(&m->gone, true); /* leaving; its on_close unlinks it */
            return;
        }
        if (atomic_exchange(&m->dropped, true)) {
            return;
        }
        if (rv != TETHER_EAGAIN) {
            event("%s dropped: cannot send: %s", m->nick, tether_strerror(rv));
        }
        struct drop_req *d = malloc(sizeof *d);
        tether_loop *owner = tether_loop_group_loop(m->room->group, (size_t)m->shard->index);
        if (d != NULL) {
            *d = (struct drop_req){m->room, m, m->ref, rv == TETHER_EAGAIN};
        }
        if (d == NULL || tether_loop_post(owner, drop_on_own_loop, d) != TETHER_OK) {
            free(d); /* out of memory: it just gets nothing more */
        }
        return;
    }
    int rv = tether_conn_send(m->conn, line, len);
    if (rv == TETHER_OK || rv == TETHER_ECLOSED) {
        return; /* ECLOSED: it is leaving already; on_close will say so */
    }
    atomic_store(&m->dropped, true);
    if (rv == TETHER_EAGAIN) {
        event("%s dropped: not reading fast enough (%zu bytes queued)", m->nick,
              tether_conn_queued(m->conn) + tether_ref_pending(m->ref));
    } else {
        event("%s dropped: cannot send: %s", m->nick, tether_strerror(rv));
    }
    tether_conn_abort(m->conn);
}

/* Sends a line to every member except `except` (which may be NULL), from
 * the loop `from`. */
static void broadcast(struct room *room, const struct shard *from, const struct member *except,
                      const char *line, size_t len)
{
    pthread_mutex_lock(&room->mu);
    for (struct member *m = room->members; m != NULL; m = m->next) {
        if (m != except) {
            deliver(from, m, line, len);
        }
    }
    pthread_mutex_unlock(&room->mu);
}

static void notice(struct room *room, const struct shard *from, const struct member *except,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void notice(struct room *room, const struct shard *from, const struct member *except,
                   const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) {
        broadcast(room, from, except, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    }
}

/* The length of the valid UTF-8 character at p (at most n bytes), or 0 if
 * p does not start one: overlong forms, surrogates and values above
 * U+10FFFF are invalid (RFC 3629). */
static size_t utf8_char_len(const uint8_t *p, size_t n)
{
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        lo = p[0] == 0xe0 ? 0xa0 : 0x80;
        hi = p[0] == 0xed ? 0x9f : 0xbf;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        lo = p[0] == 0xf0 ? 0x90 : 0x80;
        hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return len;
}

/* Copies len bytes of a client's text to out (room for len bytes), with
 * every control character (C0 but tab, DEL, C1) and every byte that is not
 * part of valid UTF-8 replaced by '?'. Returns the length written, at most
 * len: a C1 character (2 bytes in UTF-8) becomes one '?'. */
static size_t clean_text(char *out, const uint8_t *in, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint8_t ch = in[i];
        if (ch < 0x80) {
            out[n++] = (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : (char)ch;
            i++;
            continue;
        }
        size_t clen = utf8_char_len(in + i, len - i);
        if (clen == 0 || (ch == 0xc2 && in[i + 1] <= 0x9f)) { /* invalid, or C1 */
            out[n++] = '?';
            i += clen > 0 ? clen : 1;
            continue;
        }
        memcpy(out + n, in + i, clen);
        n += clen;
        i += clen;
    }
    return n;
}

/* Copies a certificate name into a nickname: cleaned like every line
 * (clean_text()), with no spaces or angle brackets, so that "<nick> text"
 * stays unambiguous, and cut at a character boundary. */
static void make_nick(char *out, size_t outlen, const char *cn)
{
    char clean[256];
    size_t len = strlen(cn);
    size_t n = clean_text(clean, (const uint8_t *)cn, len < sizeof clean ? len : sizeof clean);
    if (n >= outlen) {
        n = outlen - 1;
        while (n > 0 && ((uint8_t)clean[n] & 0xc0) == 0x80) {
            n--; /* do not split a UTF-8 character */
        }
    }
    for (size_t i = 0; i < n; i++) {
        char ch = clean[i];
        out[i] = (ch == ' ' || ch == '\t' || ch == '<' || ch == '>') ? '_' : ch;
    }
    out[n] = '\0';
    if (n == 0) {
        snprintf(out, outlen, "anonymous");
    }
}

/* A WebSocket client's nickname: the nick=NAME parameter of its request
 * path (percent-escapes are not decoded: they stay as typed), or "guest". */
static void ws_nick(char *out, size_t outlen, const char *path)
{
    const char *q = strchr(path, '?');
    const char *p = q;
    while (p != NULL) {
        p++;
        if (strncmp(p, "nick=", 5) == 0) {
            size_t n = strcspn(p + 5, "&");
            snprintf(out, outlen, "%.*s", (int)n, p + 5);
            if (out[0] != '\0') {
                return;
            }
            break;
        }
        p = strchr(p, '&');
    }
    snprintf(out, outlen, "guest");
}

/* room->mu held. */
static bool nick_taken(const struct room *room, const char *nick)
{
    for (const struct member *m = room->members; m != NULL; m = m->next) {
        if (strcmp(m->nick, nick) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- connections ----------------------------------------------------------- */

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct room *room = ud;
    if (atomic_load(&room->stopping)) {
        tether_conn_close(c);
        return;
    }
    /* We run on the connection's loop, which owns it from now on. */
    struct shard *shard = &room->shards[tether_loop_group_index(room->group, tether_conn_loop(c))];
    /* The handshake is complete and, for TLS clients, since client
     * certificates are required, verified: the CN is a name the CA vouches
     * for. WebSocket clients name themselves (ws_nick()). */
    char name[256];
    const char *path = tether_ws_path(c);
    if (path != NULL) {
        ws_nick(name, sizeof name, path);
    } else {
        tether_tls_info info;
        int rv = tether_conn_tls_info(c, &info);
        if (rv != TETHER_OK) {
            fprintf(stderr, "chat_server: cannot read the client's certificate: %s\n",
                    tether_strerror(rv));
            tether_conn_abort(c);
            return;
        }
        snprintf(name, sizeof name, "%s", info.peer_common_name);
    }
    struct member *m = calloc(1, sizeof *m);
    int rv = m == NULL ? TETHER_ENOMEM : tether_ref_get(c, &m->ref);
    if (rv != TETHER_OK) {
        fprintf(stderr, "chat_server: cannot accept a connection: %s\n", tether_strerror(rv));
        free(m);
        tether_conn_abort(c);
        return;
    }
    m->room = room;
    m->shard = shard;
    m->conn = c;
    atomic_init(&m->dropped, false);
    atomic_init(&m->gone, false);
    char base[NICK_MAX - 8];
    make_nick(base + (path != NULL), sizeof base - (path != NULL), name);
    if (path != NULL) {
        base[0] = '~'; /* self-chosen, unlike a certificate's name */
    }

    /* Choosing the nickname and joining are one step under the lock, so
     * that two loops cannot hand out the same name. */
    pthread_mutex_lock(&room->mu);
    /* The same certificate may be used twice: alice, alice#2, ... */
    snprintf(m->nick, sizeof m->nick, "%s", base);
    for (int i = 2; nick_taken(room, m->nick); i++) {
        snprintf(m->nick, sizeof m->nick, "%s#%d", base, i);
    }
    /* The welcome names who is here, then everyone else hears of us. */
    char here[512] = "";
    size_t used = 0;
    for (const struct member *o = room->members; o != NULL && used < sizeof here; o = o->next) {
        int w = snprintf(here + used, sizeof here - used, "%s%s", used > 0 ? ", " : "", o->nick);
        used = w < 0 ? sizeof here : used + (size_t)w;
    }
    char welcome[640];
    int n = snprintf(welcome, sizeof welcome, "* welcome %s; here: %s", m->nick,
                     here[0] != '\0' ? here : "nobody else yet");
    char joined[NICK_MAX + 16];
    int jn = snprintf(joined, sizeof joined, "* %s joined", m->nick);
    for (struct member *o = room->members; o != NULL; o = o->next) {
        deliver(shard, o, joined, (size_t)jn); /* before linking m: not to m itself */
    }
    m->next = room->members;
    if (room->members != NULL) {
        room->members->prev = m;
    }
    room->members = m;
    tether_conn_set_userdata(c, m);
    deliver(shard, m, welcome, (size_t)n < sizeof welcome ? (size_t)n : sizeof welcome - 1);
    pthread_mutex_unlock(&room->mu);

    char peer[80];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        snprintf(peer, sizeof peer, "an unknown address");
    }
    if (tether_loop_group_count(room->group) > 1) {
        event("%s joined from %s on loop %d", m->nick, peer, shard->index);
    } else {
        event("%s joined from %s", m->nick, peer);
    }
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct member *m = ud;
    struct room *room = m->room;
    if (atomic_load(&m->dropped) || atomic_load(&room->stopping)) {
        return;
    }
    if (len > room->opt->max_line) {
        /* tether's limit (max_msg) is the longest line we send, "<nick> "
         * included; --max-line, the longest a client may send, is ours. */
        m->too_long = len;
        tether_conn_abort(c); /* on_close says why */
        return;
    }
    if (len > 0 && data[len - 1] == '\r') {
        len--;
    }
    if (len == 0) {
        return;
    }
    /* data is borrowed until we return; the line is built in a copy (the
     * loop's own: other loops build theirs at the same time). */
    char *line = m->shard->line;
    int hdr = snprintf(line, NICK_MAX + 4, "<%s> ", m->nick);
    size_t n = clean_text(line + hdr, data, len);
    broadcast(room, m->shard, m, line, (size_t)hdr + n);
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct member *m = ud;
    if (m == NULL) {
        return; /* never joined (aborted in on_accept) */
    }
    struct room *room = m->room;
    pthread_mutex_lock(&room->mu);
    if (m->prev != NULL) {
        m->prev->next = m->next;
    } else {
        room->members = m->next;
    }
    if (m->next != NULL) {
        m->next->prev = m->prev;
    }
    pthread_mutex_unlock(&room->mu);
    /* EOF: the client said goodbye. OK and ECANCELED: our own close or
     * abort (the shutdown, or a drop that deliver() has reported). */
    bool dropped = atomic_load(&m->dropped);
    if (m->too_long != 0) {
        event("%s left: a line of %zu bytes is longer than --max-line (%zu)", m->nick,
              m->too_long, room->opt->max_line);
    } else if (reason == TETHER_EOF || reason == TETHER_OK || reason == TETHER_ECANCELED) {
        if (!dropped) {
            event("%s left", m->nick);
        }
    } else {
        const char *detail = tether_conn_last_error(c);
        event("%s left: %s", m->nick, detail[0] != '\0' ? detail : tether_strerror(reason));
    }
    if (!atomic_load(&room->stopping)) {
        if (m->too_long != 0) {
            notice(room, m->shard, NULL, "* %s left (line too long)", m->nick);
        } else if (dropped) {
            notice(room, m->shard, NULL, "* %s left (dropped: not reading fast enough)", m->nick);
        } else {
            notice(room, m->shard, NULL, "* %s left", m->nick);
        }
    }
    free(m);
}

/* The last warning the library logged (--verbose), so that a failure it
 * has already reported is not printed a second time by on_listener_error. */
static _Thread_local char last_warning[512]; /* per loop: its listener's errors */

/* Clients that never got in: no certificate, an untrusted one, not TLS. */
static void on_listener_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l, (void)err, (void)ud;
    if (strcmp(detail, last_warning) != 0) {
        fprintf(stderr, "chat_server: %s\n", detail);
    }
    last_warning[0] = '\0';
}

/* --verbose: the library's diagnostics from INFO up. (DEBUG would add a
 * third line for every refused client: "accepted connection ended ...".) */
static void log_to_stderr(tether_log_level level, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "chat_server: tether %s: %s\n", tether_log_level_name(level), msg);
    if (level == TETHER_LOG_WARN) {
        snprintf(last_warning, sizeof last_warning, "%s", msg);
    }
}

/* ---- shutdown -------------------------------------------------------------- */

/* SIGINT or SIGTERM, delivered by loop 0 as an ordinary callback (as in
 * echo_server.c): say goodbye to everyone (the other loops' members through
 * their references, queued there before the stop), then stop the group:
 * each loop closes its listeners and connections gracefully, and the
 * threads end once the last connection has closed. A second signal exits
 * at once. */
static void on_stop_signal(tether_signal *sig, int signum, void *ud)
{
    (void)sig, (void)signum;
    struct room *room = ud;
    if (atomic_load(&room->stopping)) {
        fprintf(stderr, "chat_server: exiting without a clean shutdown\n");
        _exit(1);
    }
    notice(room, &room->shards[0], NULL, "* the server is shutting down");
    atomic_store(&room->stopping, true);
    tether_loop_group_stop(room->group);
}

/* ---- options --------------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_LISTEN = 256,
        OPT_QUEUE,
        OPT_MAX_LINE,
        OPT_VERBOSE,
        OPT_WS,
        OPT_BALANCE
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"queue", required_argument, NULL, OPT_QUEUE},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"ws", required_argument, NULL, OPT_WS},
        {"balance", required_argument, NULL, OPT_BALANCE},
        CLI_LONGOPTS_TIMEOUTS,
        /* --verify-client is accepted but changes nothing: always on here. */
        CLI_LONGOPTS_TLS_SERVER,
        CLI_LONGOPTS_LIMITS,
        CLI_LONGOPTS_THREADS,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        switch (ch) {
        case OPT_LISTEN:
            opt->listen_url = optarg;
            break;
        case OPT_QUEUE:
            if (!cli_parse_size(optarg, &opt->queue)) {
                r = cli_bad_value("queue", optarg, "a number of bytes");
            }
            break;
        case OPT_MAX_LINE:
            if (!cli_parse_size(optarg, &opt->max_line) || opt->max_line == 0 ||
                opt->max_line > 1024 * 1024) {
                r = cli_bad_value("max-line", optarg, "a number of bytes from 1 to 1048576");
            }
            break;
        case OPT_VERBOSE:
            opt->verbose = true;
            break;
        case OPT_BALANCE:
            if (strcmp(optarg, "reuseport") == 0) {
                opt->balance = TETHER_BALANCE_REUSEPORT;
            } else if (strcmp(optarg, "acceptor") == 0) {
                opt->balance = TETHER_BALANCE_ACCEPTOR;
            } else {
                r = cli_bad_value("balance", optarg, "reuseport or acceptor");
            }
            break;
        case OPT_WS:
            opt->ws_url = optarg;
            break;
        default:
            r = cli_timeouts_option(ch, optarg, &opt->timeouts);
            if (r == CLI_NOT_MINE) {
                r = cli_limits_option(ch, optarg, &opt->limits);
            }
            if (r == CLI_NOT_MINE) {
                r = cli_threads_option(ch, optarg, &opt->threads);
            }
            if (r == CLI_NOT_MINE) {
                r = cli_option("chat_server", usage, ch, argv, &opt->tls);
            }
            break;
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->listen_url == NULL) {
        fprintf(stderr, "error: --listen URL is required (see --help)\n");
        return 1;
    }
    if (strncmp(opt->listen_url, "tls://", 6) != 0) {
        fprintf(stderr, "error: --listen must be a tls:// URL: nicknames come from client "
                        "certificates\n");
        return 1;
    }
    if (opt->ws_url != NULL && strncmp(opt->ws_url, "ws://", 5) != 0 &&
        strncmp(opt->ws_url, "wss://", 6) != 0) {
        fprintf(stderr, "error: --ws must be a ws:// or wss:// URL, not %s\n", opt->ws_url);
        return 1;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------ */

/* --ws: the WebSocket listener, with the TLS listener's options but
 * WebSocket messages instead of lines, sent as text, and TLS (wss://)
 * without client certificates. */
static bool listen_ws(struct room *room, const tether_conn_opts *tls_co,
                      const tether_listen_opts *tls_lo)
{
    tether_tls_config *tls = NULL;
    if (strncmp(room->opt->ws_url, "wss://", 6) == 0 &&
        !cli_tls_server(&room->opt->tls, room->opt->ws_url, false, &tls)) {
        return false;
    }
    tether_ws_opts wo;
    tether_ws_opts_init(&wo);
    wo.text = true;
    wo.health_path = "/health";
    tether_conn_opts co = *tls_co;
    co.framing = TETHER_FRAMING_LEN32; /* WebSocket carries whole messages */
    co.tls = tls;
    co.ws = &wo;
    tether_listen_opts lo = *tls_lo;
    lo.conn_opts = &co;
    tether_error err;
    int rv = tether_group_listen(&room->ws_listener, room->group, room->opt->ws_url, &lo,
                                 room->opt->balance, &err);
    tether_tls_config_unref(tls);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return false;
    }
    return true;
}

/* Sets up the room on the group's loops (not running yet). */
static bool setup(struct room *room)
{
    const struct options *opt = room->opt;
    size_t n = tether_loop_group_count(room->group);
    room->shards = calloc(n, sizeof *room->shards);
    if (room->shards == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return false;
    }
    room->nshards = n;
    for (size_t i = 0; i < n; i++) {
        room->shards[i].room = room;
        room->shards[i].index = (int)i;
        room->shards[i].line = malloc(opt->max_line + NICK_MAX + 4);
        if (room->shards[i].line == NULL) {
            fprintf(stderr, "error: out of memory\n");
            return false;
        }
    }
    /* Signals on loop 0. This blocks them in this thread, before the
     * group's threads start and inherit the mask. */
    tether_loop *loop0 = tether_loop_group_loop(room->group, 0);
    if (!cli_watch_stop_signals(loop0, room->stop_signals, on_stop_signal, room)) {
        return false;
    }

    /* Mutual TLS: our certificate, and every client must present one
     * issued by --ca (client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED; see
     * common/cli.c). A problem with a file is reported here, by name. */
    tether_tls_config *tls;
    if (!cli_tls_server(&opt->tls, opt->listen_url, true, &tls)) {
        return false;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.framing = TETHER_FRAMING_LINE;
    /* Both ways: a client's line (checked against --max-line in on_message)
     * and what we send, the same line behind "<nick> ". */
    co.max_msg = opt->max_line + NICK_MAX + 4;
    co.send_hwm = opt->queue;
    cli_timeouts_apply(&opt->timeouts, &co);
    co.on_message = on_message;
    co.on_close = on_close;
    co.tls = tls;

    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.on_error = on_listener_error;
    lo.userdata = room;
    lo.conn_opts = &co;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        ok = cli_limits_apply(&opt->limits, tether_loop_group_loop(room->group, i), &lo);
    }
    tether_error err;
    int rv = ok ? tether_group_listen(&room->listener, room->group, opt->listen_url, &lo,
                                      opt->balance, &err)
                : TETHER_EINVAL;
    tether_tls_config_unref(tls); /* the listeners hold their own references */
    if (!ok) {
        return false;
    }
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return false;
    }
    event("listening on %s", tether_group_listener_url(room->listener));
    if (opt->ws_url != NULL) {
        if (!listen_ws(room, &co, &lo)) {
            return false;
        }
        event("listening on %s", tether_group_listener_url(room->ws_listener));
    }
    return true;
}

int main(int argc, char **argv)
{
    struct options opt = {.queue = 1024 * 1024, .max_line = 4096, .timeouts = CLI_TIMEOUTS_INIT};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }
    if (opt.verbose) {
        tether_set_log(log_to_stderr, TETHER_LOG_INFO, NULL);
    }

    static struct room room; /* static: an early exit leaves it reachable */
    room.opt = &opt;
    pthread_mutex_init(&room.mu, NULL);
    atomic_init(&room.stopping, false);
    tether_error err;
    rv = tether_loop_group_new(&room.group, opt.threads.set ? opt.threads.n : 1, NULL, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loops: %s\n", err.message);
        return 1;
    }
    bool ok = setup(&room);
    if (ok) {
        rv = tether_loop_group_start(room.group, &err);
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: %s\n", err.message);
            ok = false;
        }
    }
    /* Runs until on_stop_signal() stops the group (or, after a failed
     * start, at once). */
    tether_loop_group_join(room.group);
    if (tether_loop_group_free(room.group) != TETHER_OK) {
        fprintf(stderr, "error: the event loops did not shut down cleanly\n");
        ok = false;
    }
    for (size_t i = 0; i < room.nshards; i++) {
        free(room.shards[i].line);
    }
    free(room.shards);
    pthread_mutex_destroy(&room.mu);
    return ok ? 0 : 1;
}
